// Package smtptest provides a recording SMTP server for tests, in the
// spirit of net/http/httptest: [NewSink] starts a real SMTP server (built on
// github.com/emersion/go-smtp) on a loopback port, records every message it
// accepts, and lets a test decide the replies to MAIL, RCPT and DATA.
//
// It is meant for tests of code that sends mail (a next hop for a delivery
// agent, a relay for an application), by sluice itself and by its users.
// [Queue] is the other side: an in-memory queue for tests of sluice's
// acceptor (package smtp), which keeps what the acceptor queues.
//
// Standards: the server side of RFC 5321 as implemented by go-smtp, with
// STARTTLS (RFC 3207) when [WithTLS] is given and SMTPUTF8 (RFC 6531) when
// [WithSMTPUTF8] is given. Replies chosen by hooks keep their RFC 3463
// enhanced status codes on the wire.
package smtptest
