// Package smtp is the acceptor of sluice: an SMTP server that receives
// mail from clients, applies the relay policy and protocol limits, runs the
// pre-queue [filter.Chain] and hands each message to an [Enqueuer] (the
// queue). It answers "250 2.0.0 queued as <id>" only after Enqueue has made
// the message durable.
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
//   - RFC 6152: 8BITMIME. RFC 2920: PIPELINING.
//   - RFC 2034 and RFC 3463: enhanced status codes on every reply.
//   - RFC 6531: SMTPUTF8; internationalised addresses are accepted only in
//     transactions that ask for it.
//   - RFC 3461: DSN; the RET, ENVID, NOTIFY and ORCPT parameters are
//     recorded in the [sluice.Envelope].
//
// Relay policy: a client in a trusted network ([WithTrustedNetworks]) may
// send to any domain; any other client only to the local domains
// ([WithLocalDomains]), else 554 5.7.1.
//
// Deviations and limits of this version:
//   - The greeting is go-smtp's: "220 <hostname> ESMTP Service Ready".
//   - The command timeout defaults to 2 minutes rather than the 5 the RFC
//     suggests, and the DATA timeout applies to each read (2 minutes
//     without data ends the transfer), so stalled clients cannot hold
//     connections for long.
//   - The recipient limit is go-smtp's, so the 452 4.5.3 reply text is
//     "Maximum limit of N recipients reached" and the limit is advertised
//     as LIMITS RCPTMAX (RFC 9422).
//   - go-smtp offers CHUNKING (RFC 3030 BDAT); it is served too.
//   - On Shutdown, a connection between transactions is sent go-smtp's
//     "421 4.4.2" and closed.
//   - The "Postmaster" recipient without a domain is not accepted.
package smtp
