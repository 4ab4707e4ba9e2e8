// Package suppress is a filter that refuses mail to addresses on a
// sending account's bounce list or unsubscribe list (seed 003: "If the
// recipient address is on your account's bounce list, then a 'bounce'
// error will be thrown").
//
// The account of a message is the authenticated user of the SMTP session
// (AUTH, RFC 4954) if there is one, else the domain of the envelope
// sender; see filter.Account. A message from the null sender (a notification)
// belongs to no account and is never refused.
//
// The lists live behind the one-method [Store] interface. [File] is the
// default store: a text file with one entry per line,
//
//	# account          list         address
//	example.org        bounce       bob@example.com
//	newsletter-user    unsubscribe  carol@example.net
//
// where the list is "bounce" or "unsubscribe" and "*" as the account
// applies an entry to every account. Accounts and addresses compare
// case-insensitively. The file is read again when it changes (checked at
// most every [WithCheckInterval]) or on [File.Reload]; a file with an
// error is reported with its path and line and the previous lists stay in
// force. A shared store (Redis, a database) implements [Store] the same
// way.
//
// The filter works at two stages. At filter.StageRcpt it refuses the
// recipient in the SMTP dialogue (550 5.7.1). At filter.StagePostQueue it
// returns a verdict per recipient: the suppressed recipients are bounced
// with an RFC 3464 delivery status notification to the sender and the
// others are delivered. At filter.StageData it judges every recipient and
// refuses the message only when all of them are suppressed.
package suppress
