// Package smtp is the acceptor of sluice: an SMTP server that receives
// mail from clients, applies the relay policy and protocol limits, runs the
// pre-queue [filter.Chain] (at connect, MAIL, RCPT and the end of DATA,
// within one deadline budget per transaction) and hands each message to an
// [Enqueuer] (the queue). It answers "250 2.0.0 queued as <id>" only after
// Enqueue has made the message durable. A message a filter quarantines is
// queued held, in the same durable write ([HoldEnqueuer]).
//
// The protocol itself is spoken by github.com/emersion/go-smtp; this
// package supplies the policy around it, and a lifecycle like net/http's
// ([Server.Serve], [Server.ListenAndServe], [Server.Shutdown],
// [Server.Close], [ErrServerClosed]).
//
// Standards:
//   - RFC 5321: the protocol, address syntax (section 4.1.2), the trace
//     header added to every message (section 4.4) and timeouts (section
//     4.5.3.2, see below).
//   - RFC 1870: SIZE, advertised with the limit; larger messages get
//     552 5.3.4.
//   - RFC 6152: 8BITMIME. RFC 2920: PIPELINING; with the patched go-smtp
//     the binary and the tests build with (third_party/go-smtp), the
//     replies to a pipelined group leave in one write (section 3.2).
//   - RFC 2034 and RFC 3463: enhanced status codes on every reply.
//   - RFC 6531: SMTPUTF8; internationalised addresses are accepted only in
//     transactions that ask for it.
//   - RFC 3461: DSN; the RET, ENVID, NOTIFY and ORCPT parameters are
//     recorded in the [sluice.Envelope].
//   - RFC 3207: STARTTLS. RFC 4954: AUTH (PLAIN, RFC 4616; LOGIN).
//   - RFC 6409 and RFC 8314: submission and implicit-TLS submission.
//   - RFC 5782: DNS blocklists queried at connect time (WithDNSBL).
//   - HAProxy's PROXY protocol, versions 1 and 2.
//
// Listeners ([Server.ServeKind], [Kind]): KindSMTP (port 25: STARTTLS
// offered with a certificate, AUTH after it), KindSubmission (587, RFC
// 6409: STARTTLS then AUTH before MAIL, else 530 5.7.0) and
// KindSubmissions (465, RFC 8314: implicit TLS, AUTH before MAIL). One
// server serves any number of them. Connections from [WithProxyNetworks]
// must start with a PROXY protocol header (v1 or v2, parsed strictly here),
// whose client address then drives every policy.
//
// Relay policy: a client in a trusted network ([WithTrustedNetworks]) or
// authenticated with AUTH PLAIN or LOGIN (over TLS only, checked by an
// [Authenticator] such as [PasswordFile]) may send to any domain; any other
// client only to the local domains ([WithLocalDomains]), else 554 5.7.1.
//
// Admission, before the greeting: the connection cap (421 4.7.0, closed at
// once), per-client concurrent connections and connection rate (421
// 4.7.0, clients outside the trusted networks; a client is an IPv4 address
// or an IPv6 /64), and the health gate ([WithGate], [Gauge]: 421 4.3.2 for
// new sessions, 451 4.3.1 for new transactions, hysteresis between a high
// and a low watermark). Each refusal is logged and counted. Per-client
// message rate: 451 4.7.1 at MAIL. Failed AUTH: a budget per client, then
// 454 4.7.0. In-flow pacing: while mail arrives faster than the queue
// delivers it, MAIL waits up to [WithInFlowDelay] for a [Pacer] queue to
// catch up, as Postfix's in_flow_delay; nothing is refused.
//
// Limits of a session: SIZE (552 5.3.4, also while streaming), recipients
// (452 4.5.3), message line length (550 5.6.0), Received fields (554 5.4.6,
// RFC 5321 section 6.3), refused commands ([WithMaxErrors], then 421 4.7.0
// and close), commands outside a transaction ([WithMaxCommandsWithoutMail],
// then 421 4.7.0 and close).
//
// Strict DATA (SMTP smuggling, CVE-2023-51764 and relatives): only
// "\r\n.\r\n" ends the data; a bare CR or LF anywhere in it gets 550 5.5.2
// and the connection is closed. FuzzDataReader checks that no data yields
// more than one message per DATA.
//
// Deadlines: greeting (first command), each command, each read of DATA,
// TLS handshake and PROXY header, the whole session; in stress mode
// ([WithStressConnections]) greeting and command timeouts are cut.
//
// Deviations and limits of this version:
//   - The greeting is go-smtp's: "220 <hostname> ESMTP Service Ready".
//   - The command timeout defaults to 2 minutes rather than the 5 the RFC
//     suggests, and the DATA timeout applies to each read (2 minutes
//     without data ends the transfer), so stalled clients cannot hold
//     connections for long; the session timeout bounds the whole.
//   - Go's textproto returns a command line cut by a timeout as if it were
//     whole, so go-smtp runs it; the connection is then closed with 421
//     4.4.2 and the reply to the partial command goes nowhere.
//   - go-smtp's DATA reader reads ".\r" followed by a byte other than LF,
//     at the start of a line, as that byte alone: that bare CR is not seen
//     and the message is queued without it. A terminator right after such
//     a line is not seen either, so the transfer ends with the DATA
//     timeout (421 4.4.2, nothing queued). Never more than one message.
//   - Bare CR and LF are refused by default; WithNormalizeLineEndings
//     completes them to CRLF inside the message instead.
//   - The recipient limit is go-smtp's, so the 452 4.5.3 reply text is
//     "Maximum limit of N recipients reached" and the limit is advertised
//     as LIMITS RCPTMAX (RFC 9422).
//   - go-smtp offers CHUNKING (RFC 3030 BDAT); it is served too, and the
//     chunks are checked like DATA.
//   - go-smtp closes a connection after its fourth malformed or unknown
//     command, whatever [WithMaxErrors] says.
//   - Over the connection cap, an implicit-TLS listener closes a
//     connection without a reply (a reply would need the handshake).
//   - On Shutdown, a connection between transactions is sent go-smtp's
//     "421 4.4.2" and closed.
//   - The "Postmaster" recipient without a domain is not accepted.
package smtp
