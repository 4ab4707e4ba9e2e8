// Package delivery is sluice's outbound agent: it takes queued messages
// from the queue (as a [queue.Deliverer]), finds each recipient's next hop
// through a routes table looked up on every attempt, delivers over SMTP or
// LMTP with a deadline on every stage, shapes the traffic of each
// destination, classifies each recipient's outcome through
// [sluice.Classify] and a bounce [Category], writes a delivery log record
// per recipient and attempt, and builds delivery status notifications for
// final failures and delays (as a [queue.Bouncer] and a
// [queue.DelayNotifier]).
//
// # Routing
//
// A [Routes] table maps recipient-domain patterns (and optionally sender
// domains) to the domain's MX hosts or to a [Pool] of relays or LMTP
// servers, with a TLS policy, a source address and an EHLO name
// ([Egress]), and optionally a fallback pool for recipients deferred on an
// earlier attempt. Routes are never stored with a message: [Agent.SetRoutes]
// changes where queued mail goes from its next attempt (seed 004).
//
// # Shaping
//
// Each destination (a recipient domain, an MX site with [ShapeBySite], or a
// pool) has a concurrency cap on open connections, idle ones included, that
// adapts to the peer's answers, optional message and connection rates, a
// cache of idle connections reused without a check (one that the peer
// closed while idle costs a new connection, not a failure), and a parking
// state that spends no worker on a destination that keeps failing. An
// address that cannot be reached is remembered as dead, for every
// destination that uses it, for [WithDeadHostTime]; an address whose
// greeting is overdue is tried after its equals. See [Shaping].
// [ShapingRule] gives some destinations their own limits, and a
// [ReplyRule] reads the peer's replies: a throttling message backs the
// destination off to a profile for a while, a block message suspends it,
// and a 4xx that never lifts bounces at once (seeds 002 and 003). Both
// can be replaced at run time. The body transfer has a rate watchdog
// ([Timeouts].DataRate) on top of the per-write deadline.
//
// # Post-queue filters
//
// [WithPostQueue] runs the filters a filter.Chain places at
// filter.StagePostQueue before every attempt, on the recipients due in it,
// so a slow scanner never delays acceptance. A recipient they reject is
// bounced through the usual path (an RFC 3464 notification to the sender,
// none for the null sender, and a delivery log record with route
// "filter"); one they tempfail is deferred; one they discard is dropped
// and logged; a message they quarantine is held through [Holder]. The
// headers they add are prepended to the message as it is sent.
//
// Standards implemented:
//   - RFC 5321: client side of SMTP; MX selection by preference with
//     random order among equal preferences and the implicit MX (section
//     5.1); address literals; deadlines per stage in the spirit of section
//     4.5.3.2 (shorter defaults, see [Timeouts]).
//   - RFC 2033: LMTP, with one reply per recipient after the final dot.
//   - RFC 2920: PIPELINING; MAIL, every RCPT and DATA go out in one write
//     when the next hop offers it, one command per round trip otherwise.
//     go-smtp's client opens the session (EHLO, STARTTLS, AUTH); the agent
//     speaks the transactions, RSET and QUIT itself.
//   - RFC 7505: a null MX bounces with 556 5.1.10.
//   - RFC 1035 and RFC 2308: DNS over UDP with a retry over TCP for
//     truncated answers; answers are cached for their TTL (at most an
//     hour), NXDOMAIN and NODATA for the SOA's negative TTL; failures are
//     never cached and defer the mail.
//   - RFC 5891: internationalized domain names are looked up by their
//     A-labels (golang.org/x/net/idna).
//   - RFC 3207 and RFC 7435: STARTTLS whenever offered, without
//     certificate verification by default (opportunistic security); a
//     failed handshake is retried once without TLS, unless the route
//     requires TLS ([TLSRequired]).
//   - RFC 4954: AUTH PLAIN to a pool, over TLS only.
//   - RFC 3461: NOTIFY, ORCPT, RET and ENVID are relayed when the next hop
//     offers DSN, and NOTIFY decides whether a notification is sent.
//   - RFC 3464 and RFC 3462/6522: notifications are multipart/report
//     messages with a message/delivery-status part, Action "failed" or
//     "delayed"; RFC 3834 Auto-Submitted is set; they are sent from the
//     null sender, which is never notified, so they cannot loop.
//   - RFC 3463: bounce categories are derived from enhanced status codes
//     and well-known reply texts ([Categorize]).
//   - RFC 6531: SMTPUTF8 is passed on; a message that needs it is bounced
//     with 553 5.6.7 when the next hop lacks it.
//
// Deviations and limits:
//   - BODY=8BITMIME is announced whenever the next hop offers 8BITMIME (the
//     go-smtp client does so), and 8-bit content is sent as is to hops
//     without it (no RFC 6152 downgrade, as most MTAs do). BINARYMIME
//     messages are bounced: sending them needs BDAT (RFC 3030).
//   - Notifications for UTF-8 addresses use message/delivery-status
//     rather than RFC 6533 message/global-*.
//   - TLS is opportunistic or required, without MTA-STS (RFC 8461) or
//     DANE (RFC 7672).
//   - A reused connection gets MAIL at once (RFC 5321 section 3.3), with
//     no RSET or NOOP first; RSET is sent only after a transaction
//     abandoned with MAIL accepted.
//   - There are no reply-pattern rules (a regular expression on a reply
//     choosing a backoff profile) and no per-attempt progress watchdog
//     beyond the per-stage deadlines.
package delivery
