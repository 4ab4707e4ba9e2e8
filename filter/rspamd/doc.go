// Package rspamd is a [filter.Filter] that asks rspamd what to do with a
// message, through its HTTP protocol (https://rspamd.com/doc/developers/protocol.html).
//
// The filter POSTs the message to /checkv2 of a normal (or proxy) worker
// with the envelope in request headers (From, Rcpt, IP, Helo, User,
// Queue-Id) and reads the JSON answer: action, score, required_score,
// symbols, messages.smtp_message and milter.add_headers. Actions map to
// verdicts:
//
//	reject           Reject, 550 5.7.1 (rspamd's smtp_message if any)
//	soft reject      Tempfail, 451 4.7.1
//	greylist         Tempfail, 451 4.7.1 greylisted
//	rewrite subject  Accept, tagged X-Spam: Yes
//	add header       Accept, tagged X-Spam: Yes
//	no action        Accept
//
// Every accepted message gets X-Spam-Action and X-Spam-Score, plus the
// header fields rspamd asks for in milter.add_headers (for example
// X-Spamd-Result from its milter_headers module). The action applies even
// when rspamd reports is_skipped: it skips its rules for GTUBE and still
// answers "reject".
//
// The filter talks to rspamd replicas through a health-aware pool
// ([health.Pool] with [health.RspamdPing] probes, "GET /ping" answered by
// "pong"); every exchange is bound by the context's deadline and reports
// its outcome to the pool, so a dead or hung replica is ejected (seed 000).
// Endpoints are "host:port" or "unix:/path".
//
// Deviations: "rewrite subject" cannot rewrite the Subject field (a filter
// only adds fields), so the message is tagged as for "add header";
// milter.remove_headers is ignored for the same reason.
package rspamd
