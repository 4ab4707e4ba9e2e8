// Package maillog keeps the delivery log of a sluice agent in files an
// operator can search: one JSON object per recipient and attempt, with
// the queue id, sender, recipient, route, next hop and its address, our
// source address, TLS version, the reply and its enhanced code, the
// attempt number, the result, the bounce category and the delay (seed
// 002: the troubleshooting page built on a searchable delivery log).
//
// A [Log] is a [github.com/sluicemta/sluice/delivery.Recorder]: give it to
// the agent with [github.com/sluicemta/sluice/delivery.WithRecorder]. The
// file is rotated by size, and [Log.Search] reads every kept file, so the
// rotation settings bound both the disk used and the cost of a search.
// The records are a log, not the queue: losing the tail in a crash loses
// no mail, so writes are not synced, and [WithWriteDelay] may hold them
// back briefly to write many at once.
package maillog
