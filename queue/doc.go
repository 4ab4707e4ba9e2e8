// Package queue is sluice's durable spool and retry scheduler.
//
// [Queue.Enqueue] stores a message's envelope and body on disk and returns
// only after both are fsynced: an acknowledged message survives kill -9 and
// power loss (DESIGN.md rule 1). [Queue.Serve] runs the scheduler: it hands
// due messages to a [Deliverer] from a bounded pool of workers, records the
// outcome per recipient, retries deferred recipients with exponential
// backoff and jitter, and gives up on recipients that fail permanently or
// outlive the maximum age, asking a [Bouncer] to notify the sender first.
//
// # Storage
//
// The spool is a directory:
//
//	msg/<id>         envelope and body of one message, written once
//	state/<id>       per-recipient delivery state, rewritten after each attempt
//	tmp/             files being written; removed at start-up
//	quarantine/<id>  records that failed their checksum, kept for the operator
//	LOCK             flock'd so two processes never share a spool
//
// Every record carries a CRC-32C checksum verified on every read (DESIGN.md
// rule 2). A message file is a header (magic, envelope length, envelope
// checksum), the envelope as JSON, the body as received, and a trailer
// (body length, body checksum, magic). The body checksum is verified as
// the body is streamed to delivery, so a damaged body is never delivered as
// complete: the reader fails, the attempt aborts, and the message is moved
// to quarantine/ with a log line and a metric. A damaged state file is
// quarantined too and the message falls back to its initial state (every
// recipient pending): SMTP is at-least-once, so a duplicate is acceptable
// where a loss is not.
//
// Concurrent enqueues share the fsync of the msg/ directory that makes their
// renames durable (group commit); each body file is fsynced on its own.
// Route information is never stored: every attempt asks the [Deliverer],
// which looks the route up afresh (DESIGN.md rule 7).
//
// This is the foundation store; the in-memory index holds every queued
// envelope. The deeper queue work (on-disk due index, bounded working set,
// fresh and retry lanes, operations API) builds on the same contract.
package queue
