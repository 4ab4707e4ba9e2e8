package queue

import (
	"context"
	"time"
)

// Pacing holds new mail back, briefly, while it arrives faster than the
// queue delivers it, as Postfix's in_flow_delay does. Without it a burst
// that outruns delivery becomes a backlog, and a backlog costs more per
// message than mail that passes straight through: the store flushes its
// memtable (48 MiB) to an sstable with every body still waiting in it,
// reads those bodies back from the sstable (decompressing them) when
// their turn comes, and compacts their deletions away later. In the relay
// benchmark with 100 KiB messages that was nearly a quarter of sluice's
// CPU, taken from the delivery that would have shrunk the backlog
// (docs/BENCHMARKS.md, fix 18). Pacing keeps the wait short instead, so
// the memtable holds each body from its write to its deletion.
//
// Only a queue whose attempts are finishing is paced. When none has
// finished for 200 ms (config.paceStall), delivery is stalled, not busy
// (Serve not running, a next hop holding every connection): holding mail
// back would not help it catch up, only slow acceptance, and the queue is
// there to absorb such a backlog. Finished, not started: behind a next hop
// that holds every connection from the start, the first round of attempts
// starts and none ends, and mail is never held back at all.

// Pace waits while mail arrives faster than the queue delivers it, at most
// max, and returns how long it waited. It waits only while more messages
// than the pace backlog (WithPaceBacklog) wait for their first attempt and
// attempts keep finishing; it returns as soon as the backlog is within the
// limit, no attempt has finished for 200 ms (delivery is stalled, not
// busy), the queue is closed or not serving, max has passed or ctx is
// done. Pace never refuses anything: a caller goes on when it returns.
//
// An acceptor calls it before it takes a new message; [smtp.Server] does,
// at MAIL, for up to its in-flow delay (smtp.WithInFlowDelay).
func (q *Queue) Pace(ctx context.Context, max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	var begin time.Time
	var timer *time.Timer
	for {
		q.mu.Lock()
		ch, lastFinish := q.paceWaitLocked()
		q.mu.Unlock()
		if ch == nil {
			break
		}
		now := time.Now()
		if begin.IsZero() {
			begin = now
		}
		wait := min(max-now.Sub(begin), q.cfg.paceStall-now.Sub(lastFinish))
		if wait <= 0 {
			break
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ch:
		case <-timer.C:
		case <-q.stop:
		case <-ctx.Done():
			return time.Since(begin)
		}
	}
	if begin.IsZero() {
		return 0
	}
	return time.Since(begin)
}

// paceWaitLocked returns the channel that start closes once the fresh
// backlog is back within the limit, and when an attempt last finished; a
// nil channel if there is nothing to wait for.
func (q *Queue) paceWaitLocked() (chan struct{}, time.Time) {
	if q.closed || !q.serving || q.count.lanes[laneFresh] <= q.paceBacklog() ||
		time.Since(q.finished) >= q.cfg.paceStall {
		return nil, time.Time{}
	}
	if q.paced == nil {
		q.paced = make(chan struct{})
	}
	return q.paced, q.finished
}

// freshStartedLocked releases what Pace holds back once an attempt of the
// fresh lane has started and the backlog is within the limit.
func (q *Queue) freshStartedLocked() {
	if q.paced != nil && q.count.lanes[laneFresh] <= q.paceBacklog() {
		close(q.paced)
		q.paced = nil
	}
}

func (q *Queue) paceBacklog() int {
	if q.cfg.paceBacklog > 0 {
		return q.cfg.paceBacklog
	}
	return q.cfg.workers
}
