// Package filter is the content check of sluice: a [Chain] of [Filter]s
// that each look at a message and return a [Verdict] (accept, reject,
// tempfail, discard, quarantine, plus header fields to add and, for
// filters that judge recipients apart, per-recipient verdicts).
//
// Filters run at a [Stage]: before the message is queued (connect, MAIL,
// RCPT, end of DATA: the verdict is the reply in the SMTP dialogue), or
// after it is queued ([StagePostQueue]: in the queue worker before each
// delivery attempt, so a slow scanner never delays acceptance, and a
// rejection becomes an RFC 3464 delivery status notification to the
// sender; see delivery.WithPostQueue).
//
// No slow or dead filter can stall mail. Every filter runs under its own
// deadline ([Timeout]) inside the transaction's budget (the caller's
// context); a filter that does not answer in time is abandoned. What a
// failure means is the filter's [Policy]: tempfail (the default, the
// client keeps the message and retries), accept and tag with an
// X-Sluice-Filter header, reject, or quarantine (accept, and hold in the
// queue for an operator). A [Concurrency] cap bounds the calls in
// progress per filter, and a circuit breaker ([WithBreaker]) stops calling
// a filter that keeps failing, probing it again after a cool-down
// (Hystrix-style closed/open/half-open). Filters of one [Group] run at the
// same time; results still combine in the order the filters were added.
//
// Replies follow RFC 5321 section 4.2 and carry RFC 3463 enhanced status
// codes: 550 5.7.1 for a rejection, 451 4.7.1 for a temporary refusal
// (5.7.1/4.7.1: "delivery not authorized, message refused").
//
// Filters see the whole message through an [io.ReaderAt], so several of
// them can read it at once without copying it into memory.
//
// Built-in filters live in sub-packages: filter/parse (MIME structure),
// filter/suppress (bounce and unsubscribe lists), filter/limit (account
// rate and daily quota).
package filter
