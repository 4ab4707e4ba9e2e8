// Package filter is the pre-queue content check of sluice: a [Chain] of
// [Filter]s that each look at a message and return a [Verdict] (accept,
// reject, tempfail, discard, plus header fields to add).
//
// Every filter runs under its own deadline ([Timeout]); a filter that does
// not answer in time is abandoned, so a slow or dead dependency (a hung
// spamd, an unreachable DNSBL) can never stall the acceptor. What a failure
// means is the filter's [Policy]: tempfail (the default, the client keeps
// the message and retries), accept and tag with an X-Sluice-Filter header,
// or reject. The chain stops at the first verdict that is not Accept.
//
// Replies follow RFC 5321 section 4.2 and carry RFC 3463 enhanced status
// codes: 550 5.7.1 for a rejection, 451 4.7.1 for a temporary refusal
// (5.7.1/4.7.1: "delivery not authorized, message refused").
//
// Filters see the whole message through an [io.ReaderAt], so several of
// them can read it without copying it into memory.
package filter
