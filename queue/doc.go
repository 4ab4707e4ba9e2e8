// Package queue is sluice's durable spool and retry scheduler.
//
// [Queue.Enqueue] stores a message's envelope and body and returns only
// after both are on stable storage: an acknowledged message survives
// kill -9 and power loss (DESIGN.md rule 1). [Queue.Serve] runs the
// scheduler: it pulls due messages from an on-disk index, hands them to a
// [Deliverer] from a bounded pool of workers, records the outcome per
// recipient, retries deferred recipients with exponential backoff and
// jitter, and gives up on recipients that fail permanently or outlive the
// maximum age, asking a [Bouncer] to notify the sender first. The
// operations API ([Queue.List], [Queue.Show], [Queue.Stats], [Queue.Hold],
// [Queue.Release], [Queue.Delete], [Queue.Requeue], [Queue.Flush],
// [Queue.Bounce]) works whether or not the queue is serving.
//
// # Storage
//
// The spool directory holds a pebble database (db/), a LOCK file flock'd so
// two processes never share a spool, and quarantine/ for damaged records.
// The records live behind the small [Store] interface; pebble is the
// default because it measured best (docs/BENCHMARKS.md). Each message is:
//
//	an envelope record   sender, recipients, DSN parameters, body size and checksum
//	a state record       per-recipient status, attempts, last reply; next attempt
//	body chunk records   64 KiB each, streamed in and out, never held whole
//	a due index entry    lane + next attempt time + id, carrying the recipient domains
//	domain index entries one per recipient domain, for listing and oldest-age metrics
//
// Every value carries a CRC-32C over its key, kind and payload, verified on
// every read (DESIGN.md rule 2); pebble adds its own block checksums. A
// damaged envelope or body is copied to quarantine/<id>.* and removed, with
// a log line naming the files and the sluice_queue_corrupt_records_total
// metric; the body checksum is verified as the body streams to delivery,
// so a damaged body is never delivered as complete. A damaged state record
// is quarantined and replaced by the initial state: SMTP is at-least-once,
// so a duplicate is acceptable where a loss is not.
//
// Enqueue writes a message in one atomic batch (a body above 1 MiB in
// several, the first marking the message partial, so a crash in between
// leaves chunks that the next start deletes and nothing acknowledged), then
// waits for a write-ahead-log fsync shared with every concurrent Enqueue
// (group commit). State changes after an attempt are not fsynced on their
// own: a crash can lose the newest state, which costs a duplicate
// delivery, never a message. While the log is synced a little at a time, a
// background goroutine writes zeros a few MiB ahead of pebble's log
// writer, so that the fsync commits data only, not a new file size and
// blocks (about half the latency on ext4).
//
// # Scheduling
//
// Messages wait in one of three lanes of the due index: fresh (never
// tried), retry (deferred at least once) and held. The scheduler reads
// index keys up to the current time and loads only the messages it starts,
// so memory holds the messages in flight (at most WithWorkers), the index
// entries of at most twice as many fresh messages waiting for a worker
// (handed over by Enqueue, checked against the store when started) and a
// count per recipient domain, however deep the queue. First attempts may use
// every worker; retries at most WithRetryBudget's share, so a backlog of
// deferred mail never delays fresh mail (seed 002). An attempt's lease is
// its index entry, which stays in place until the attempt's outcome is
// recorded: after a crash every message that was in flight is due again.
// Retries already due when Serve starts are spread over WithRestartSpread.
// Routes are never stored: every attempt asks the [Deliverer], which looks
// the route up afresh (DESIGN.md rule 7, seed 004), so Requeue and Flush
// re-route mail.
//
// [Queue.Pace] lets an acceptor hold new mail back while it arrives faster
// than it is delivered (more than WithPaceBacklog messages wait for a first
// attempt while attempts keep finishing), so a burst does not become a
// backlog that costs more per message than mail passing through.
package queue
