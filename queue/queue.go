package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicemta/sluice"
)

// ErrClosed is returned by [Queue.Serve] after [Queue.Shutdown] or
// [Queue.Close], and by the other methods on a closed queue.
var ErrClosed = errors.New("queue: closed")

// Queue is a durable mail queue on a spool directory. Its methods are safe
// for concurrent use. Create one with [New].
type Queue struct {
	cfg     config
	spool   *spool
	log     *slog.Logger
	metrics *metrics

	ids  idGen
	wake chan struct{} // a new message, a finished attempt, an operation: scan again

	mu       sync.Mutex        // guards the fields below, and every state change of a message not in flight
	inflight map[string]*entry // messages being attempted, by id
	count    counts
	closed   bool
	serving  bool
	// oldestFloor is an id at or below the oldest queued message's: new
	// ids only grow, so Oldest never looks below it again.
	oldestFloor string
	started     time.Time     // when Serve began, for the restart spread
	stop        chan struct{} // closed by Shutdown/Close to stop Serve
	// paced is closed, and cleared, when the fresh backlog falls back
	// within the pace limit; nil when no Pace waits. finished is when an
	// attempt last finished (pace.go).
	paced    chan struct{}
	finished time.Time

	// opsGen counts the operations that changed, or may have changed, a
	// message not in flight; it is raised under mu after the change is
	// written. A hint whose opsGen is still current names a message no
	// operation touched since before it was written (start).
	opsGen atomic.Uint64

	laneMu sync.Mutex // guards floors and hints; taken after mu, never before
	floors map[lane]scanFloor
	hints  []candidate // fresh lane entries to start without a scan (lanes.go)

	overdue        int          // retries due before Serve started (set before the loop)
	overdueStarted atomic.Int64 // of which started

	attempts sync.WaitGroup // in-flight attempts
	work     chan func()    // attempts for idle runners (runners.go)
	runners  sync.WaitGroup // runner goroutines
	calls    sync.WaitGroup // in-flight Enqueue and operation calls
	cancel   context.CancelFunc
	baseCtx  context.Context // parent of every attempt; cancelled by Close
}

// counts is the queue's census, kept in memory so that depth and
// per-domain metrics cost nothing to read. It is built from the due index
// at start and kept current by every change.
type counts struct {
	lanes    map[lane]int // messages waiting in each lane, not in flight
	inflight map[lane]int // messages in flight, by the lane they left
	domains  map[string]int
}

func (c *counts) addDomains(domains []string, delta int) {
	for _, d := range domains {
		if c.domains[d] += delta; c.domains[d] == 0 {
			delete(c.domains, d)
		}
	}
}

// entry is a message in flight: the only messages held in memory.
type entry struct {
	id      string
	se      *storedEnvelope
	st      *msgState
	due     []byte // its due index key as stored
	domains []string
	lane    lane
	cancel  context.CancelFunc
	ops     pendingOps // asked for while in flight; applied when the attempt ends
	first   []byte     // the sealed first body chunk handed off by Enqueue, or nil
}

// pendingOps are operations on a message in flight, applied after its
// attempt, in the order they were asked for: Requeue then Hold leaves the
// message held, as it would an idle one.
type pendingOps struct {
	changes []stateChange
	remove  bool // Delete: the attempt is cancelled too
}

// stateChange is an operation on a message's state at time now (unix
// nanoseconds); it reports whether the message is to be removed instead.
type stateChange func(st *msgState, now int64) (remove bool)

// New opens the spool in dir, creating it if needed. Options are
// validated once; an invalid one is an error. Opening reads the due index
// (not the messages) to count the queue; messages stay on disk until they
// are due.
func New(dir string, opts ...Option) (*Queue, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q := &Queue{
		cfg:      cfg,
		log:      cfg.logger.With("component", "queue"),
		wake:     make(chan struct{}, 1),
		work:     make(chan func()),
		inflight: make(map[string]*entry),
		count: counts{lanes: make(map[lane]int), inflight: make(map[lane]int),
			domains: make(map[string]int)},
		stop:   make(chan struct{}),
		floors: make(map[lane]scanFloor),
	}
	q.baseCtx, q.cancel = context.WithCancel(context.Background())
	q.metrics = newMetrics(q)
	sp, err := openSpool(dir, cfg.store, q.log, q.metrics.observeSync, q.lowerFloor)
	if err != nil {
		return nil, err
	}
	q.spool = sp
	if err := q.census(); err != nil {
		sp.close()
		return nil, err
	}
	if cfg.registerer != nil {
		if err := q.metrics.register(cfg.registerer); err != nil {
			sp.close()
			return nil, err
		}
	}
	return q, nil
}

// census counts the queue from the due index. An index entry that fails
// its checksum but names a message is rebuilt from the message's envelope;
// one that names nothing is deleted. Either way it is counted as corrupt.
func (q *Queue) census() error {
	start := time.Now()
	total := 0
	var damaged [][]byte
	err := q.spool.store.Scan([]byte{pfxDue}, []byte{pfxDue + 1}, func(k, v []byte) (bool, error) {
		l, _, _, ok := parseDueKey(k)
		domains, err := decodeIndex(k, v)
		if !ok || err != nil {
			damaged = append(damaged, bytes.Clone(k))
			return true, nil
		}
		q.count.lanes[l]++
		q.count.addDomains(domains, 1)
		total++
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, k := range damaged {
		total += q.repairIndex(k)
	}
	if total > 0 {
		q.log.Info("spool opened", "messages", total, "fresh", q.count.lanes[laneFresh],
			"retry", q.count.lanes[laneRetry], "held", q.count.lanes[laneHeld],
			"dir", q.spool.dir, "elapsed", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// repairIndex rewrites the damaged due index entry k from the records of
// the message it names, and returns 1 if that message is queued.
func (q *Queue) repairIndex(k []byte) int {
	q.metrics.corrupt.Inc()
	l, _, id, ok := parseDueKey(k)
	b := q.spool.store.NewBatch()
	b.Delete(k)
	var se *storedEnvelope
	var st *msgState
	var err error
	if ok {
		if se, err = q.spool.readEnvelope(id); err == nil {
			st, err = q.spool.readState(id, len(se.Env.Recipients))
		}
	}
	switch {
	case ok && errors.Is(err, ErrCorrupt):
		b.Discard()
		q.quarantineRecords(id, k, nil, err)
		return 0
	case !ok || err != nil || !bytes.Equal(stateDueKey(id, st), k):
		// Nothing (or something else) is queued under this entry.
		q.log.Error("corrupt due index entry deleted", "key", fmt.Sprintf("%q", k), "err", err)
		if err := b.Commit(); err != nil {
			q.log.Error("delete failed", "key", fmt.Sprintf("%q", k), "err", err)
		}
		return 0
	}
	domains := recipientDomains(se.Env)
	q.spool.setState(b, id, st, domains)
	if err := b.Commit(); err != nil {
		q.log.Error("corrupt due index entry not repaired", "queue_id", id, "err", err)
		return 0
	}
	q.log.Error("corrupt due index entry rebuilt", "queue_id", id)
	q.count.lanes[l]++
	q.count.addDomains(domains, 1)
	return 1
}

// Enqueue stores env and the message read from body (header and body,
// CRLF line endings, as received) and returns the new queue id. It returns
// only after both are on stable storage; an error means the message was
// not acknowledged (and if it was stored after all, it is delivered: a
// duplicate, never a loss). env is validated and copied; its ID field is
// ignored. The body is streamed to the store in 64 KiB chunks, never held
// whole in memory.
func (q *Queue) Enqueue(ctx context.Context, env *sluice.Envelope, body io.Reader) (string, error) {
	return q.enqueue(ctx, env, body, false)
}

// EnqueueHeld is [Queue.Enqueue] for a message that must not be
// delivered until an operator releases it ([Queue.Release]): a message a
// filter quarantined. The message is stored held in the same write as its
// envelope, so no crash and no worker can deliver it in between, as could
// happen with Enqueue followed by [Queue.Hold].
func (q *Queue) EnqueueHeld(ctx context.Context, env *sluice.Envelope, body io.Reader) (string, error) {
	return q.enqueue(ctx, env, body, true)
}

func (q *Queue) enqueue(ctx context.Context, env *sluice.Envelope, body io.Reader, held bool) (string, error) {
	if err := env.Validate(); err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := q.begin(); err != nil {
		return "", err
	}
	defer q.calls.Done()
	start := time.Now()
	now := q.cfg.now()
	env = env.Clone()
	env.ID = q.ids.next(now)
	if env.Received.IsZero() {
		env.Received = now
	}
	domains := recipientDomains(env)
	st := initialState(len(env.Recipients), now.UnixNano())
	st.Held = held
	q.mu.Lock()
	q.count.lanes[st.lane()]++
	q.count.addDomains(domains, 1)
	q.mu.Unlock()
	gen := q.opsGen.Load() // before the message exists: no operation can have touched it yet
	se, first, err := q.spool.writeMessage(env.ID, env, st, domains, body)
	if err != nil { // nothing of the message is stored
		q.mu.Lock()
		q.count.lanes[st.lane()]--
		q.count.addDomains(domains, -1)
		q.mu.Unlock()
		q.metrics.enqueueErrors.Inc()
		return "", err
	}
	due := stateDueKey(env.ID, st)
	q.noteEnqueued(st.lane(), candidate{key: due, id: env.ID, t: st.Next, se: se, st: st, gen: gen, first: first})
	if err := q.spool.gsync.wait(); err != nil {
		// The message is committed and hinted: it stays counted, and
		// it is delivered if the store keeps it (see Enqueue). Taking it
		// out of the counts here would count it out twice once its
		// attempt finishes.
		q.metrics.enqueueErrors.Inc()
		return "", err
	}
	q.metrics.enqueued.Inc()
	q.metrics.enqueueLatency.Observe(time.Since(start).Seconds())
	q.poke()
	return env.ID, nil
}

// recipientDomains returns the distinct recipient domains of env, lower
// case, in order.
func recipientDomains(env *sluice.Envelope) []string {
	var ds []string
	for _, r := range env.Recipients {
		d := strings.ToLower(sluice.Domain(r.Address))
		if !slices.Contains(ds, d) {
			ds = append(ds, d)
		}
	}
	return ds
}

// begin registers a call that must finish before the spool closes, or
// returns ErrClosed.
func (q *Queue) begin() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	q.calls.Add(1)
	return nil
}

// poke wakes the scheduler without blocking.
func (q *Queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Depth returns the number of messages in the queue, in flight or not.
func (q *Queue) Depth() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, c := range q.count.lanes {
		n += c
	}
	for _, c := range q.count.inflight {
		n += c
	}
	return n
}

// Check reports whether the queue can accept mail: it is open and its
// spool is writable. It is meant for readiness checks.
func (q *Queue) Check(ctx context.Context) error {
	q.mu.Lock()
	closed := q.closed
	q.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return q.spool.probe()
}

// Shutdown stops the scheduler from starting attempts and waits for the
// attempts in flight to finish, or for ctx to be done, whichever is first;
// then it cancels what is left, waits for it and closes the spool. Queued
// messages stay on disk for the next start.
func (q *Queue) Shutdown(ctx context.Context) error {
	if !q.markClosed() {
		return ErrClosed
	}
	done := make(chan struct{})
	go func() { q.attempts.Wait(); q.calls.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		q.cancel()
		<-done
	}
	q.cancel()
	q.runners.Wait() // the queue is closed: idle runners exit
	return errors.Join(err, q.closeSpool())
}

// Close cancels the attempts in flight, waits for their workers to return
// and closes the spool. It is safe to call more than once.
func (q *Queue) Close() error {
	if !q.markClosed() {
		return nil
	}
	q.cancel()
	q.attempts.Wait()
	q.calls.Wait()
	q.runners.Wait() // the queue is closed: idle runners exit
	return q.closeSpool()
}

// closeSpool makes the last state changes durable and closes the spool.
func (q *Queue) closeSpool() error {
	return errors.Join(q.spool.gsync.wait(), q.spool.close())
}

// markClosed flags the queue closed and stops Serve; it reports false if
// the queue was already closed.
func (q *Queue) markClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.closed = true
	close(q.stop)
	return true
}
