package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicemta/sluice"
)

// ErrClosed is returned by [Queue.Serve] after [Queue.Shutdown] or
// [Queue.Close], and by [Queue.Enqueue] on a closed queue.
var ErrClosed = errors.New("queue: closed")

// Queue is a durable mail queue on a spool directory. Its methods are safe
// for concurrent use. Create one with [New].
type Queue struct {
	cfg     config
	spool   *spool
	log     *slog.Logger
	metrics *metrics

	wake chan struct{} // a new message or a finished attempt: look at the heap again

	mu      sync.Mutex        // guards the fields below
	entries map[string]*entry // every queued message by id
	due     dueHeap           // messages not in flight, by next attempt
	closed  bool
	serving bool
	stop    chan struct{} // closed by Shutdown/Close to stop Serve

	attempts sync.WaitGroup // in-flight attempts
	enqueues sync.WaitGroup // in-flight Enqueue calls
	cancel   context.CancelFunc
	baseCtx  context.Context // parent of every attempt; cancelled by Close
}

// entry is one queued message in memory.
type entry struct {
	id       string
	layout   *msgLayout
	state    *msgState
	inFlight bool
	index    int // in the due heap; -1 when not there
}

// New opens the spool in dir, creating it if needed, and loads the
// messages queued there. Records that fail their checksum are quarantined
// and reported through the logger. Options are validated once; an invalid
// one is an error.
func New(dir string, opts ...Option) (*Queue, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sp, err := openSpool(dir)
	if err != nil {
		return nil, err
	}
	q := &Queue{
		cfg:     cfg,
		spool:   sp,
		log:     cfg.logger.With("component", "queue"),
		wake:    make(chan struct{}, 1),
		entries: make(map[string]*entry),
		stop:    make(chan struct{}),
	}
	q.baseCtx, q.cancel = context.WithCancel(context.Background())
	q.metrics = newMetrics(q)
	if err := q.load(); err != nil {
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

// load reads every message of the spool into memory.
func (q *Queue) load() error {
	ids, orphans, err := q.spool.ids()
	if err != nil {
		return err
	}
	for _, id := range orphans {
		q.spool.remove(id)
	}
	now := q.cfg.now().UnixNano()
	for _, id := range ids {
		l, err := q.spool.readMsg(id)
		if errors.Is(err, ErrCorrupt) {
			q.quarantine(id, "msg", err)
			q.spool.remove(id)
			continue
		}
		if err != nil {
			return err
		}
		st, err := q.spool.readState(id, len(l.env.Recipients))
		if errors.Is(err, ErrCorrupt) {
			q.quarantine(id, "state", err)
			st = nil
		} else if err != nil {
			return err
		}
		if st == nil {
			st = initialState(len(l.env.Recipients), now)
		}
		e := &entry{id: id, layout: l, state: st, index: -1}
		q.entries[id] = e
		heap.Push(&q.due, e)
	}
	if len(ids) > 0 {
		q.log.Info("spool loaded", "messages", len(q.entries), "dir", q.spool.dir)
	}
	return nil
}

func (q *Queue) quarantine(id, which string, cause error) {
	q.metrics.corrupt.Inc()
	if err := q.spool.quarantine(id, which); err != nil {
		q.log.Error("quarantine failed", "queue_id", id, "record", which, "err", err)
	}
	q.log.Error("corrupt record quarantined", "queue_id", id, "record", which, "err", cause,
		"path", q.spool.path("quarantine", id+"."+which))
}

// Enqueue stores env and the message read from body (header and body,
// CRLF line endings, as received) and returns the new queue id. It returns
// only after both are on stable storage; an error means nothing was
// queued. env is validated and copied; its ID field is ignored.
func (q *Queue) Enqueue(ctx context.Context, env *sluice.Envelope, body io.Reader) (string, error) {
	if err := env.Validate(); err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return "", ErrClosed
	}
	q.enqueues.Add(1)
	q.mu.Unlock()
	defer q.enqueues.Done()
	start := time.Now()
	now := q.cfg.now()
	env = env.Clone()
	env.ID = newID(now)
	if env.Received.IsZero() {
		env.Received = now
	}
	l, err := q.spool.writeMsg(env.ID, env, body)
	if err != nil {
		q.metrics.enqueueErrors.Inc()
		return "", err
	}
	q.metrics.enqueued.Inc()
	q.metrics.enqueueLatency.Observe(time.Since(start).Seconds())
	e := &entry{id: env.ID, layout: l, state: initialState(len(env.Recipients), now.UnixNano()), index: -1}
	q.mu.Lock()
	q.entries[e.id] = e
	heap.Push(&q.due, e)
	q.mu.Unlock()
	q.poke()
	return env.ID, nil
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
	return len(q.entries)
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
	go func() { q.attempts.Wait(); q.enqueues.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		q.cancel()
		<-done
	}
	q.cancel()
	return errors.Join(err, q.spool.close())
}

// Close cancels the attempts in flight, waits for their workers to return
// and closes the spool. It is safe to call more than once.
func (q *Queue) Close() error {
	if !q.markClosed() {
		return nil
	}
	q.cancel()
	q.attempts.Wait()
	q.enqueues.Wait()
	return q.spool.close()
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

// dueHeap orders entries by their next attempt.
type dueHeap []*entry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].state.Next < h[j].state.Next }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *dueHeap) Push(x any) { e := x.(*entry); e.index = len(*h); *h = append(*h, e) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}
