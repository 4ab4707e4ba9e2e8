package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/sluicemta/sluice"
)

// Serve runs the scheduler: it hands each due message to d, at most
// WithWorkers attempts at a time, until [Queue.Shutdown] or [Queue.Close]
// is called; then it returns [ErrClosed]. If d also implements [Bouncer],
// it is asked to notify senders of recipients that fail for good.
func (q *Queue) Serve(d Deliverer) error {
	q.mu.Lock()
	switch {
	case q.closed:
		q.mu.Unlock()
		return ErrClosed
	case q.serving:
		q.mu.Unlock()
		return errors.New("queue: Serve called twice")
	}
	q.serving = true
	q.mu.Unlock()

	sem := make(chan struct{}, q.cfg.workers)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := q.dispatchDue(d, sem)
		timer.Reset(wait)
		select {
		case <-q.stop:
			return ErrClosed
		case <-q.wake:
		case <-timer.C:
		}
	}
}

// dispatchDue starts attempts for due messages while workers are free and
// returns how long to wait before the next one is due.
func (q *Queue) dispatchDue(d Deliverer, sem chan struct{}) time.Duration {
	const idle = time.Minute // re-check at least this often
	for {
		q.mu.Lock()
		if q.closed || q.due.Len() == 0 {
			q.mu.Unlock()
			return idle
		}
		e := q.due[0]
		if wait := time.Duration(e.state.Next - q.cfg.now().UnixNano()); wait > 0 {
			q.mu.Unlock()
			return min(wait, idle)
		}
		select {
		case sem <- struct{}{}:
		default:
			q.mu.Unlock()
			return idle // a finishing attempt pokes us
		}
		heap.Pop(&q.due)
		e.inFlight = true
		q.attempts.Add(1)
		q.mu.Unlock()
		go func() {
			defer func() { <-sem; q.attempts.Done(); q.poke() }()
			q.attempt(d, e)
		}()
	}
}

// attempt runs one delivery attempt of e and records its outcome.
func (q *Queue) attempt(d Deliverer, e *entry) {
	ctx, cancel := context.WithTimeout(q.baseCtx, q.cfg.attemptTime)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			// A panicking deliverer must not take the process or the
			// message with it: quarantine and report.
			q.log.Error("delivery panicked; message quarantined", "queue_id", e.id, "panic", fmt.Sprint(p))
			q.drop(e, true)
		}
	}()

	st := e.state
	var due []int // recipient indexes tried in this attempt
	for i := range st.Rcpts {
		if !st.final(i) {
			due = append(due, i)
		}
	}
	env := e.layout.env.Clone()
	env.Recipients = env.Recipients[:0]
	for _, i := range due {
		env.Recipients = append(env.Recipients, e.layout.env.Recipients[i])
	}
	var corrupt atomic.Pointer[error]
	msg := &Message{Envelope: env, Attempt: st.Attempts + 1, Size: e.layout.bodyLen}
	msg.open = func() (io.ReadCloser, error) {
		return q.spool.openBody(e.id, e.layout, func(err error) { corrupt.Store(&err) })
	}
	results := d.Deliver(ctx, msg)
	isCorrupt := func() bool {
		errp := corrupt.Load()
		if errp != nil {
			q.quarantine(e.id, "msg", *errp)
			q.drop(e, false)
		}
		return errp != nil
	}
	if !isCorrupt() {
		q.record(ctx, d, e, msg, due, results, isCorrupt)
	}
}

// record applies the results of an attempt to e's state, notifies senders
// of final failures, and removes e or schedules its next attempt. The
// Bouncer reads the body too; if that finds it damaged, isCorrupt
// quarantines the message and record stops.
func (q *Queue) record(ctx context.Context, d Deliverer, e *entry, msg *Message, due []int, results []Result, isCorrupt func() bool) {
	now := q.cfg.now()
	st := e.state
	expired := now.Sub(e.layout.env.Received) >= q.cfg.maxAge
	var failed []Failure
	var failedIdx []int
	for k, i := range due {
		res := Result{Outcome: sluice.OutcomeDeferred}
		if k < len(results) {
			res = results[k]
		}
		rs := &st.Rcpts[i]
		rs.Attempts++
		if res.Reply != nil {
			rs.Reply = res.Reply.Error()
		}
		q.metrics.attempts.WithLabelValues(res.Outcome.String()).Inc()
		switch {
		case res.Outcome == sluice.OutcomeDelivered:
			rs.Status = stateDelivered
		case res.Outcome == sluice.OutcomeBounced || expired:
			rs.Status = stateDeferred // until the sender is notified
			failed = append(failed, Failure{Recipient: msg.Envelope.Recipients[k], Reply: res.Reply,
				Expired: res.Outcome != sluice.OutcomeBounced})
			failedIdx = append(failedIdx, i)
		default:
			rs.Status = stateDeferred
		}
	}
	if len(failed) > 0 {
		notified := q.notify(ctx, d, e, msg, failed)
		if isCorrupt() {
			return
		}
		if notified {
			for _, i := range failedIdx {
				st.Rcpts[i].Status = stateBounced
			}
		}
	}
	st.Attempts++
	done := true
	for i := range st.Rcpts {
		done = done && st.final(i)
	}
	if done {
		q.drop(e, false)
		return
	}
	st.Next = now.Add(q.backoff(st.Attempts)).UnixNano()
	if err := q.spool.writeState(e.id, st); err != nil {
		// The attempt is retried from the older state: duplicates, not loss.
		q.log.Error("state not saved", "queue_id", e.id, "err", err)
	}
	q.mu.Lock()
	e.inFlight = false
	if !q.closed {
		heap.Push(&q.due, e)
	}
	q.mu.Unlock()
}

// notify asks the Bouncer, if any, to tell the sender about failed
// recipients, and reports whether they may now be marked bounced.
func (q *Queue) notify(ctx context.Context, d Deliverer, e *entry, msg *Message, failed []Failure) bool {
	b, ok := d.(Bouncer)
	if !ok {
		for _, f := range failed {
			q.log.Warn("recipient failed; no bouncer configured, sender not notified",
				"queue_id", e.id, "to", f.Recipient.Address, "reply", replyText(f.Reply))
		}
		return true
	}
	if err := b.Bounce(ctx, msg, failed); err != nil {
		q.log.Error("bounce not queued; will retry", "queue_id", e.id, "err", err)
		return false
	}
	return true
}

func replyText(r *sluice.Reply) string {
	if r == nil {
		return ""
	}
	return r.Error()
}

// drop removes e from the queue and its files from the spool (unless they
// were quarantined already).
func (q *Queue) drop(e *entry, quarantine bool) {
	if quarantine {
		q.quarantine(e.id, "msg", errors.New("delivery panicked"))
	}
	if err := q.spool.remove(e.id); err != nil {
		q.log.Error("remove failed", "queue_id", e.id, "err", err)
	}
	q.mu.Lock()
	delete(q.entries, e.id)
	q.mu.Unlock()
}

// backoff returns the delay before attempt n+1 after n attempts:
// retryMin doubled per attempt, capped at retryMax, jittered by ±20%.
func (q *Queue) backoff(n int) time.Duration {
	d := q.cfg.retryMin
	for i := 1; i < n && d < q.cfg.retryMax; i++ {
		d *= 2
	}
	d = min(d, q.cfg.retryMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
