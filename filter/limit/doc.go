// Package limit is a filter that holds each sending account to a message
// rate and a daily quota: "If your account is over its sending limits, a
// 'Over Account Limit' error will be thrown" (seed 003).
//
// The account of a message is filter.Account: the authenticated user if
// the session authenticated, else the sender's domain. Mail from the null
// sender (notifications) is never limited. The rate is a token bucket
// (golang.org/x/time/rate) of messages per second with a burst; the
// quota counts messages per calendar day in UTC. Both count messages, not
// recipients.
//
// Before the queue (place the filter at filter.StageMail, where a message
// is counted once), an account over its limits gets 451 4.7.1 and its
// client retries later. After the queue (filter.StagePostQueue), a
// message over the daily quota is refused with 550 5.7.1 "over account
// limit", so its sender gets a delivery status notification, while one
// over the rate is deferred (tempfail) and retried by the queue. A
// post-queue message is counted once however many delivery attempts it
// takes: the filter remembers the queue ids it counted.
//
// Memory is bounded: at most [WithMaxAccounts] accounts are tracked, the
// least recently seen forgotten first (a forgotten account starts afresh,
// a generous error), and as many queue ids.
package limit
