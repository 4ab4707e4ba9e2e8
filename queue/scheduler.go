package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"

	"github.com/sluicemta/sluice"
)

// Serve runs the scheduler until [Queue.Shutdown] or [Queue.Close] is
// called; then it returns [ErrClosed]. It pulls due messages from the
// on-disk due index and hands them to d, at most WithWorkers attempts at a
// time. First attempts (the fresh lane) may use every worker; retries of
// deferred mail (the retry lane) at most the share set by WithRetryBudget,
// so a backlog of deferred mail never delays fresh mail. If d implements
// [Bouncer] it is asked to notify senders of recipients that fail for
// good; if it implements [DelayNotifier], of recipients still deferred
// after the WithDelayWarning age.
//
// Retries that were already due when Serve started (after a restart or an
// outage) are let out evenly over the WithRestartSpread window, oldest
// first, instead of all starting at once.
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
	q.started = q.cfg.now()
	q.calls.Add(1) // the store stays open until the loop below returns
	q.mu.Unlock()
	defer q.calls.Done()
	if q.cfg.restartSpread > 0 {
		q.overdue = q.countOverdue(q.started)
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := q.dispatch(d)
		timer.Reset(wait)
		select {
		case <-q.stop:
			return ErrClosed
		case <-q.wake:
		case <-timer.C:
		}
	}
}

// idle is the longest the scheduler sleeps without looking at the index.
const idle = time.Minute

// dispatch starts attempts for due messages while workers are free and
// returns how long to wait before looking again. Retries first get their
// reserve (so a sustained stream of fresh mail cannot starve them), then
// fresh mail every free worker, then retries what is left of their budget.
func (q *Queue) dispatch(d Deliverer) time.Duration {
	now := q.cfg.now()
	wait := idle
	free, retryFree, reserve := q.free()
	if reserve > 0 {
		started, next := q.runLane(d, laneRetry, now, reserve)
		free, retryFree = free-started, retryFree-started
		wait = min(wait, next)
	}
	if free > 0 {
		started, next := q.runLane(d, laneFresh, now, free)
		free -= started
		wait = min(wait, next)
	}
	if retryFree = min(retryFree, free); retryFree > 0 {
		_, next := q.runLane(d, laneRetry, now, retryFree)
		wait = min(wait, next)
	}
	return max(wait, time.Millisecond)
}

// free returns how many attempts may start now: in all, from the retry
// lane, and from the retry lane ahead of fresh mail (its reserve: a tenth
// of the workers, at least one, within the retry budget).
func (q *Queue) free() (all, retry, reserve int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	busy := q.count.inflight[laneFresh] + q.count.inflight[laneRetry]
	all = max(q.cfg.workers-busy, 0)
	retry = max(min(all, q.retryCap()-q.count.inflight[laneRetry]), 0)
	reserve = max(min(retry, max(1, q.cfg.workers/10)-q.count.inflight[laneRetry]), 0)
	return all, retry, reserve
}

func (q *Queue) retryCap() int {
	return max(1, int(float64(q.cfg.workers)*q.cfg.retryBudget))
}

// runLane starts up to limit attempts from lane l and returns how many it
// started and how long until the lane has more due. Hints come first (they
// are the oldest due entries the floor does not cover); then the lane is
// scanned from its floor, unless the floor is in the future: nothing there
// is due. The scheduler runs on every enqueue and every finished attempt,
// thousands of times a second in a busy relay, so most runs read no index
// at all.
func (q *Queue) runLane(d Deliverer, l lane, now time.Time, limit int) (int, time.Duration) {
	started := 0
	for l == laneFresh && started < limit {
		c, ok := q.nextHint()
		if !ok {
			break
		}
		if q.start(d, l, c) {
			started++
		}
	}
	if started == limit {
		return started, 0 // more may be due: look again once a worker is free
	}
	floor := q.readFloor(l)
	if t := now.UnixNano(); t < floor.at {
		return started, time.Duration(floor.at - t)
	}
	extra := 0
	if l == laneFresh {
		extra = q.hintCap() // the hints are empty: read ahead
	}
	n, wait := q.scanLane(d, l, now, limit-started, extra, floor)
	return started + n, wait
}

// candidate is a due index entry the scheduler may start.
type candidate struct {
	key     []byte
	id      string
	t       int64
	overdue bool            // a retry due before Serve started, for the restart ramp
	se      *storedEnvelope // the envelope Enqueue stored, or nil: start reads it
	// st is the state Enqueue stored, current as long as no operation
	// ran since gen (Queue.opsGen) was read; nil: start reads it.
	st  *msgState
	gen uint64
	// first is the sealed first body chunk of a small message, handed
	// off by Enqueue (see handOffMax), or nil.
	first []byte
}

// scanLane starts up to limit attempts from lane l, in due order, and
// returns how many it started and how long until the lane has more due.
// It reads only index keys, with one iterator, from the lane's scan floor
// to the first key not yet due, so its cost depends on the attempts in
// flight and the limit, not on the depth of the queue. Up to extra due
// entries beyond those it starts become hints. It raises the floor to
// where it stopped.
func (q *Queue) scanLane(d Deliverer, l lane, now time.Time, limit, extra int, floor scanFloor) (int, time.Duration) {
	nowNS := now.UnixNano()
	wait := idle
	var found []candidate
	ramp, rampWait := q.restartAllowance(l, now)
	stop := int64(math.MaxInt64) // every idle key of the lane not in found is at or after stop
	want := limit + extra
	budget := want + q.cfg.workers + 256 // keys looked at before giving up for now
	err := q.spool.store.Scan(dueKey(l, floor.at, ""), laneEnd(l), func(k, _ []byte) (bool, error) {
		budget--
		_, t, id, ok := parseDueKey(k)
		overdue := l == laneRetry && t < q.started.UnixNano()
		switch {
		case !ok:
			// Damaged keys are dealt with by the census at the next start.
		case t > nowNS:
			// The first key not yet due: nothing more to start before t.
			// Reading it here spares a second iterator to find it.
			stop, wait = t, time.Duration(t-nowNS)
			return false, nil
		case q.isInflight(id):
		case overdue && ramp == 0:
			// Due before Serve started and the restart ramp allows no
			// more yet; the rest of the lane is later still.
			stop, wait = t, rampWait
			return false, nil
		default:
			found = append(found, candidate{key: bytes.Clone(k), id: id, t: t, overdue: overdue})
			if overdue {
				ramp--
			}
		}
		if len(found) == want || budget == 0 {
			stop, wait = t, 0 // more may be due: look again at once
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		q.log.Error("due index scan failed", "lane", l.String(), "err", err)
		return 0, time.Second
	}
	started, n := 0, 0
	for ; n < len(found) && started < limit; n++ {
		c := found[n]
		if !q.start(d, l, c) {
			stop = min(stop, c.t)
			continue
		}
		started++
		if c.overdue {
			q.overdueStarted.Add(1)
		}
	}
	extras := found[n:]
	if len(extras) > 0 {
		wait = 0 // due now: start them once a worker is free
	}
	q.scanned(l, floor, stop, extras)
	return started, wait
}

func laneEnd(l lane) []byte { _, hi := laneRange(l); return hi }

// restartAllowance returns how many more retries that were overdue when
// Serve started may start now, and how long until one more may. Over the
// WithRestartSpread window the allowance grows evenly from none to all of
// them, oldest first, so a restart after an outage does not send the
// whole backlog at once; after the window there is no limit.
func (q *Queue) restartAllowance(l lane, now time.Time) (int, time.Duration) {
	spread := q.cfg.restartSpread
	elapsed := now.Sub(q.started)
	if l != laneRetry || q.overdue == 0 || elapsed >= spread {
		return math.MaxInt, 0
	}
	allowed := int(float64(q.overdue) * float64(elapsed) / float64(spread))
	step := max(spread/time.Duration(q.overdue), 10*time.Millisecond)
	return max(allowed-int(q.overdueStarted.Load()), 0), step
}

// countOverdue counts the retries due before t, for the restart ramp.
func (q *Queue) countOverdue(t time.Time) int {
	lower, _ := laneRange(laneRetry)
	n := 0
	q.spool.store.Scan(lower, dueKey(laneRetry, t.UnixNano(), ""), func([]byte, []byte) (bool, error) {
		n++
		return true, nil
	})
	return n
}

func (q *Queue) isInflight(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.inflight[id] != nil
}

// start loads the message indexed by due index entry c and starts its
// attempt. It reports false if the message is gone, moved, damaged or
// already in flight. The state record is read, so that an entry found
// earlier, or a hint, is checked against the store; but a hint from
// Enqueue needs only its due key to be still there if no operation ran
// since the message was written (opsGen): every attempt moves or deletes
// the due key it started from (even one started through a scan while the
// hint waited), and due key and state are written together, so the state
// is the one Enqueue wrote.
//
// The envelope is read before q.mu is taken: it never changes once
// stored, and q.mu is the lock every attempt's end, every operation and
// every List takes, so the store reads the scheduler made under it (two
// per attempt started) were most of the time it was held while the queue
// drained. Only a read that failed is repeated under q.mu, so that the
// damage or absence it found is judged against a store that no operation
// changes meanwhile. The state record (or the hint's due key) is read
// under q.mu, since finish and the operations change it under q.mu.
func (q *Queue) start(d Deliverer, l lane, c candidate) bool {
	k, id := c.key, c.id
	se := c.se
	if se == nil {
		se, _ = q.spool.readEnvelope(id) // nil on any error: read again below
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.inflight[id] != nil {
		return false
	}
	var err error
	if se == nil {
		se, err = q.spool.readEnvelope(id)
	}
	st := c.st
	if st != nil && c.gen == q.opsGen.Load() {
		if kerr := storeHas(q.spool.store, k); kerr != nil {
			st = nil // moved, removed or unreadable: the state read says which
		}
	} else {
		st = nil
	}
	if err == nil && st == nil {
		st, err = q.spool.readState(id, len(se.Env.Recipients))
	}
	switch {
	case se != nil && errors.Is(err, ErrCorrupt):
		q.resetState(id, k, l, se, err)
		return false
	case errors.Is(err, ErrCorrupt):
		var domains []string
		if v, verr := q.spool.store.Get(k); verr == nil {
			domains, _ = decodeIndex(k, v)
		}
		q.count.lanes[l]--
		q.count.addDomains(domains, -1)
		q.quarantineRecords(id, k, domains, err)
		return false
	case errors.Is(err, ErrNotFound):
		if kerr := storeHas(q.spool.store, k); errors.Is(kerr, ErrNotFound) {
			return false // removed since the entry was found
		}
		// An index entry left behind by a crash between batches cannot
		// happen (batches are atomic), but a store is allowed to be
		// imperfect: drop the stale entry.
		q.log.Warn("due index entry without message deleted", "queue_id", id)
		var domains []string
		if v, verr := q.spool.store.Get(k); verr == nil {
			domains, _ = decodeIndex(k, v)
		}
		b := q.spool.store.NewBatch()
		b.Delete(k)
		if b.Commit() == nil { // the census counted the entry: uncount it
			q.count.lanes[l]--
			q.count.addDomains(domains, -1)
		}
		return false
	case err != nil:
		q.log.Error("message not readable; will retry", "queue_id", id, "err", err)
		q.lowerFloor(l, c.t) // a hint is not kept: let a scan find it again
		return false
	case !bytes.Equal(stateDueKey(id, st), k):
		return false // moved by an operation since the scan
	}
	ctx, cancel := context.WithTimeout(q.baseCtx, q.cfg.attemptTime)
	e := &entry{id: id, se: se, st: st, due: k, domains: recipientDomains(se.Env), lane: l, cancel: cancel, first: c.first}
	q.inflight[id] = e
	q.count.lanes[l]--
	q.count.inflight[l]++
	if l == laneFresh {
		q.freshStartedLocked()
	}
	q.attempts.Add(1)
	q.run(func() {
		defer func() { cancel(); q.attempts.Done(); q.poke() }()
		q.attempt(ctx, d, e)
	})
	return true
}

// quarantineRecords copies message id's records to quarantine/ and deletes
// them from the store, with a log line and a metric. The caller adjusts
// the counts.
func (q *Queue) quarantineRecords(id string, due []byte, domains []string, cause error) {
	q.metrics.corrupt.Inc()
	path := q.spool.quarantine(id)
	if err := q.spool.remove(id, -1, due, domains); err != nil {
		q.log.Error("quarantined message not removed", "queue_id", id, "err", err)
	}
	q.log.Error("corrupt record quarantined", "queue_id", id, "err", cause, "path", path+".*")
}

// resetState replaces a damaged state record with the initial state (every
// recipient pending, due now): the envelope and body are intact, and SMTP
// is at-least-once, so redelivering to recipients that already had the
// message is the safe side of not knowing. The damaged record is copied to
// quarantine/ first.
func (q *Queue) resetState(id string, due []byte, l lane, se *storedEnvelope, cause error) {
	q.metrics.corrupt.Inc()
	path := q.spool.path("quarantine", id+".state")
	if v, err := q.spool.store.Get(stateKey(id)); err == nil {
		os.WriteFile(path, v, 0o640)
	}
	st := initialState(len(se.Env.Recipients), q.cfg.now().UnixNano())
	if err := q.spool.putState(id, due, st, recipientDomains(se.Env)); err != nil {
		q.log.Error("damaged state not replaced", "queue_id", id, "err", err)
		return
	}
	q.count.lanes[l]--
	q.count.lanes[st.lane()]++
	q.poke() // it is due now, in the fresh lane
	q.log.Error("corrupt state record quarantined; every recipient will be tried again",
		"queue_id", id, "err", cause, "path", path)
}

// attempt runs one delivery attempt of e and records its outcome.
func (q *Queue) attempt(ctx context.Context, d Deliverer, e *entry) {
	defer func() {
		if p := recover(); p != nil {
			// A panicking deliverer must not take the process or the
			// message with it: quarantine and report.
			q.finishCorrupt(e, fmt.Errorf("delivery panicked: %v", p))
		}
	}()
	st := e.st.clone()
	var due []int // recipient indexes tried in this attempt
	for i := range st.Rcpts {
		if !st.final(i) {
			due = append(due, i)
		}
	}
	env := e.se.Env.Clone()
	env.Recipients = env.Recipients[:0]
	for _, i := range due {
		env.Recipients = append(env.Recipients, e.se.Env.Recipients[i])
	}
	var corrupt atomic.Pointer[error]
	msg := &Message{Envelope: env, Attempt: st.Attempts + 1, Size: e.se.Size, Released: st.Released}
	msg.open = func() (io.ReadCloser, error) {
		return newBodyReader(q.spool.store, e.id, e.se, e.first, func(err error) { corrupt.Store(&err) }), nil
	}
	q.metrics.attempts.WithLabelValues(e.lane.String()).Inc()
	var results []Result
	if st.Bounce {
		results = operatorBounce(len(due))
	} else {
		results = d.Deliver(ctx, msg)
	}
	isCorrupt := func() bool {
		if errp := corrupt.Load(); errp != nil {
			q.finishCorrupt(e, *errp)
			return true
		}
		return false
	}
	if !isCorrupt() {
		q.record(d, e, st, msg, due, results, isCorrupt)
	}
}

// operatorBounce returns the results of an attempt that Queue.Bounce
// turned into a bounce.
func operatorBounce(n int) []Result {
	r := sluice.NewReply(550, sluice.EnhancedCode{5, 0, 0}, "Delivery cancelled by the postmaster")
	res := make([]Result, n)
	for i := range res {
		res[i] = Result{Outcome: sluice.OutcomeBounced, Reply: r}
	}
	return res
}

// record applies the results of an attempt to st, notifies senders of
// final failures and delays, and ends the attempt. The Bouncer reads the
// body too; if that finds it damaged, isCorrupt quarantines the message
// and record stops.
func (q *Queue) record(d Deliverer, e *entry, st *msgState, msg *Message, due []int, results []Result, isCorrupt func() bool) {
	now := q.cfg.now()
	age := now.Sub(e.se.Env.Received)
	expired := age >= q.cfg.maxAge
	var failed, delayed []Failure
	var failedIdx, delayedIdx []int
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
		q.metrics.results.WithLabelValues(res.Outcome.String()).Inc()
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
			if q.cfg.delayWarning > 0 && age >= q.cfg.delayWarning && !rs.Warned {
				delayed = append(delayed, Failure{Recipient: msg.Envelope.Recipients[k], Reply: res.Reply, Delayed: true})
				delayedIdx = append(delayedIdx, i)
			}
		}
	}
	// The notifications get a context of their own: the attempt's may be
	// over already (a next hop that held the attempt to its timeout), and
	// a bounce or warning queued with it would fail at every attempt, so
	// an expired message would never be bounced. Close still ends them.
	// Made only when there is someone to tell, not for every attempt.
	nctx := q.baseCtx
	if len(failed) > 0 || len(delayed) > 0 {
		if q.deleting(e) {
			// An operator deleted the message during its attempt: its
			// sender is not told of it (for deleted spam, backscatter).
			failed, delayed = nil, nil
		} else {
			var cancel context.CancelFunc
			nctx, cancel = context.WithTimeout(q.baseCtx, q.cfg.attemptTime)
			defer cancel()
		}
	}
	notified := true
	if len(failed) > 0 {
		notified = q.notify(nctx, d, e, msg, failed)
		if isCorrupt() {
			return
		}
		if notified {
			for _, i := range failedIdx {
				st.Rcpts[i].Status = stateBounced
			}
		}
	}
	if len(delayed) > 0 && q.warn(nctx, d, e, msg, delayed) {
		for _, i := range delayedIdx {
			st.Rcpts[i].Warned = true
		}
	}
	if isCorrupt() {
		return
	}
	st.Attempts++
	st.Last = now.UnixNano()
	st.Bounce = st.Bounce && !notified // an operator's bounce stands until the sender is told
	st.Next = now.Add(q.backoff(st.Attempts)).UnixNano()
	q.finish(e, st)
}

// deleting reports whether an operator deleted e during its attempt.
func (q *Queue) deleting(e *entry) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return e.ops.remove
}

// finish ends e's attempt: it applies the operations asked for meanwhile,
// then stores st and moves e's index entry, or removes e if every
// recipient is done.
func (q *Queue) finish(e *entry, st *msgState) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.cfg.now().UnixNano()
	done := e.ops.remove
	if !done {
		done = true
		for i := range st.Rcpts {
			done = done && st.final(i)
		}
	}
	for _, change := range e.ops.changes { // in the order asked for
		done = change(st, now) || done
	}
	var err error
	if done {
		if err = q.spool.remove(e.id, e.se.bodyChunks(), e.due, e.domains); err == nil {
			q.count.addDomains(e.domains, -1)
		}
	} else if err = q.spool.putState(e.id, e.due, st, e.domains); err == nil {
		q.count.lanes[st.lane()]++
	}
	if err != nil {
		// The attempt is tried again from the older state: a duplicate,
		// never a loss. The message is still stored in its old lane
		// (each write is one batch), counted there and by domain; its
		// index entry may be below the scan floor.
		q.log.Error("state not saved", "queue_id", e.id, "err", err)
		q.count.lanes[e.lane]++
		q.lowerFloor(e.lane, 0)
	}
	q.count.inflight[e.lane]--
	delete(q.inflight, e.id)
	q.finished = time.Now()
}

// finishCorrupt ends e's attempt by quarantining the message.
func (q *Queue) finishCorrupt(e *entry, cause error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.inflight[e.id] != e {
		return // finished already
	}
	q.quarantineRecords(e.id, e.due, e.domains, cause)
	q.count.addDomains(e.domains, -1)
	q.count.inflight[e.lane]--
	delete(q.inflight, e.id)
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

// warn asks the DelayNotifier, if any, to tell the sender that delivery is
// delayed, and reports whether the recipients may be marked warned.
func (q *Queue) warn(ctx context.Context, d Deliverer, e *entry, msg *Message, delayed []Failure) bool {
	n, ok := d.(DelayNotifier)
	if !ok {
		return true // nobody to tell; do not ask again
	}
	if err := n.NotifyDelay(ctx, msg, delayed); err != nil {
		q.log.Error("delay warning not queued; will retry", "queue_id", e.id, "err", err)
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

// backoff returns the delay before attempt n+1 after n attempts: retryMin
// multiplied by the backoff factor per attempt, capped at retryMax,
// jittered by ±20%.
func (q *Queue) backoff(n int) time.Duration {
	d := float64(q.cfg.retryMin)
	for i := 1; i < n && d < float64(q.cfg.retryMax); i++ {
		d *= q.cfg.retryFactor
	}
	d = min(d, float64(q.cfg.retryMax))
	return time.Duration(d * (0.8 + 0.4*rand.Float64()))
}
