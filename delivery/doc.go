// Package delivery is sluice's outbound agent: it takes queued messages
// from the queue (as a [queue.Deliverer]), finds each recipient domain's
// next hops, delivers over SMTP with deadlines on every stage, classifies
// each recipient's outcome through [sluice.Classify], writes a delivery log
// record per recipient and attempt, and builds delivery status
// notifications for final failures (as a [queue.Bouncer]) and for delays
// (as a [queue.DelayNotifier]).
//
// Standards implemented:
//   - RFC 5321: client side of SMTP; MX selection by preference with
//     random order among equal preferences and the implicit MX (section
//     5.1); address literals; deadlines in the spirit of section 4.5.3.2
//     (shorter defaults, see [Timeouts]).
//   - RFC 7505: a null MX bounces with 556 5.1.10.
//   - RFC 3207 and RFC 7435: STARTTLS whenever offered, without
//     certificate verification by default (opportunistic security); a
//     failed handshake is retried once without TLS.
//   - RFC 3461: NOTIFY, ORCPT, RET and ENVID are relayed when the next hop
//     offers DSN, and NOTIFY decides whether a notification is sent.
//   - RFC 3464 and RFC 3462/6522: notifications are multipart/report
//     messages with a message/delivery-status part (Action: failed, or
//     delayed with a 4.x.x Status); RFC 3834 Auto-Submitted is set. Delay
//     notices quote the header only (RFC 3461 section 4.3).
//   - RFC 6531: SMTPUTF8 is passed on; a message that needs it is bounced
//     with 553 5.6.7 when the next hop lacks it.
//   - RFC 1035: DNS over UDP with a retry over TCP for truncated answers;
//     answers are cached for their TTL, in a cache of bounded size.
//   - RFC 2308: "no such domain" and "no data" answers are cached for the
//     SOA's negative TTL, capped by [WithNegativeTTL]; failures are never
//     cached.
//
// Deviations and limits:
//   - BODY=8BITMIME is announced whenever the next hop offers 8BITMIME (the
//     go-smtp client does so), and 8-bit content is sent as is to hops
//     without it (no RFC 6152 downgrade, as most MTAs do). BINARYMIME
//     messages are bounced: sending them needs BDAT (RFC 3030).
//   - Internationalized domain names are not converted to A-labels and
//     are bounced; notifications for UTF-8 addresses use
//     message/delivery-status rather than RFC 6533 message/global-*.
//   - TLS is opportunistic only: no MTA-STS (RFC 8461) or DANE (RFC 7672).
//   - Each destination (recipient domain, or the smarthost) has a cap on
//     concurrent sessions ([WithDestinationConcurrency]); there are no
//     per-destination rate limits or adaptive backoff yet.
package delivery
