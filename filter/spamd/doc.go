// Package spamd is a [filter.Filter] that asks SpamAssassin's spamd
// whether a message is spam.
//
// It speaks the spamd protocol, SPAMC/1.5, as spamc does (SpamAssassin's
// spamd/PROTOCOL and the spamc(1) and spamd(1) manuals): a request line
// "SYMBOLS SPAMC/1.5" (or REPORT, or HEADERS), a Content-length header, an
// optional User header, a blank line and the message; the answer is
// "SPAMD/1.1 0 EX_OK", a "Spam: True ; 1003.3 / 5.0" header, a
// Content-length and the rule names, report or header fields. The client
// reads the whole answer.
//
// A message that scores at least the reject score (by default spamd's own
// required_score) is refused with 550 5.7.1; every other one is accepted
// and tagged with X-Spam-Flag (YES or NO), X-Spam-Score and X-Spam-Status
// in SpamAssassin's format ("Yes, score=1003.3 required=5.0
// tests=GTUBE,..."). [WithRejectScore] with +Inf tags without rejecting.
//
// What seed 004 taught: spamd (4.0.1 included) waits forever for a message
// that does not end with a line break, so the filter appends CRLF to such
// a message (Content-length counts it); and every read and write is bound
// by the context's deadline (the connection's deadline is set from it and
// the connection is closed when the context ends), so a hung spamd costs a
// timeout, never a stalled worker.
//
// What seed 000 taught: the filter talks to spamd replicas through a
// health-aware pool ([health.Pool] with [health.SpamdPing] probes). Each
// exchange reports its outcome to the pool, so a dead or hung replica is
// ejected after a few failures and probed back in; a replica that refuses
// the connection is skipped for the next one within the same Check.
//
// Deviations: messages larger than the maximum size are accepted untagged
// without a scan, as spamc does; X-Spam-* fields already in a message are
// not removed (a filter can only add fields).
package spamd
