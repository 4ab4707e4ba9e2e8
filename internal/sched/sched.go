// Package sched moves the threads of the process to Linux's SCHED_BATCH
// scheduling policy, which the sluice binary does at start.
//
// A thread under SCHED_BATCH that is woken does not preempt the thread
// running on its CPU: it waits for that thread to block or for the
// scheduler's tick. An MTA is woken all the time (a client's command, a
// next hop's reply, the end of an fsync), and on a busy machine each of
// those wake-ups otherwise interrupts whoever was running, such as the
// peer that has just written to it, in the middle of its system call.
// In the relay benchmark SCHED_BATCH removed about 30% of sluice's
// context switches and a tenth of its CPU per message
// (docs/BENCHMARKS.md, fix 24). The cost is latency on a saturated
// machine: a woken thread waits up to a scheduler slice (a few
// milliseconds) instead of running at once. On an idle CPU it runs at once
// either way.
package sched

import "errors"

// ErrUnsupported is returned off Linux, which alone has SCHED_BATCH.
var ErrUnsupported = errors.New("sched: scheduling policies are set on Linux only")

// Policy names the scheduling policies this package distinguishes.
type Policy int

const (
	// Normal is SCHED_OTHER (SCHED_NORMAL), the default.
	Normal Policy = iota
	// Batch is SCHED_BATCH.
	Batch
	// Other is any other policy: real-time, SCHED_IDLE or
	// SCHED_DEADLINE, chosen by whoever started the process.
	Other
)

// String returns "normal", "batch" or "other".
func (p Policy) String() string {
	switch p {
	case Normal:
		return "normal"
	case Batch:
		return "batch"
	}
	return "other"
}
