package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sluicemta/sluice"
)

// deliverer is an in-process Deliverer for scheduler tests: it reads every
// body, records what it saw, and answers with whatever decide returns.
type deliverer struct {
	decide func(msg *Message, rcpt string) Result

	mu       sync.Mutex
	seen     []seenAttempt
	bounced  []Failure
	bounceFn func() error
	events   chan struct{} // one per attempt and per bounce
}

type seenAttempt struct {
	id      string
	attempt int
	rcpts   []string
	body    []byte
	err     error
}

func newDeliverer(decide func(*Message, string) Result) *deliverer {
	return &deliverer{decide: decide, events: make(chan struct{}, 1000)}
}

func (d *deliverer) Deliver(ctx context.Context, msg *Message) []Result {
	rc, err := msg.Open()
	var body []byte
	if err == nil {
		body, err = io.ReadAll(rc)
		rc.Close()
	}
	a := seenAttempt{id: msg.Envelope.ID, attempt: msg.Attempt, body: body, err: err}
	res := make([]Result, len(msg.Envelope.Recipients))
	for i, r := range msg.Envelope.Recipients {
		a.rcpts = append(a.rcpts, r.Address)
		if err != nil {
			res[i] = Result{Outcome: sluice.OutcomeDeferred, Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 3, 0}, "%v", err)}
			continue
		}
		res[i] = d.decide(msg, r.Address)
	}
	d.mu.Lock()
	d.seen = append(d.seen, a)
	d.mu.Unlock()
	d.events <- struct{}{}
	return res
}

func (d *deliverer) Bounce(ctx context.Context, msg *Message, failed []Failure) error {
	d.mu.Lock()
	defer func() { d.mu.Unlock(); d.events <- struct{}{} }()
	if d.bounceFn != nil {
		if err := d.bounceFn(); err != nil {
			return err
		}
	}
	d.bounced = append(d.bounced, failed...)
	return nil
}

func (d *deliverer) attempts() []seenAttempt {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]seenAttempt(nil), d.seen...)
}

// waitFor re-checks cond on every attempt and every few milliseconds (the
// queue records an outcome just after the attempt returns), failing the
// test after 10 s.
func (d *deliverer) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	d.waitForWithin(t, what, 10*time.Second, cond)
}

// waitForWithin is waitFor with a bound of its own, for a wait whose work
// grows with the test's (under the race detector, delivering every message
// of the crash test took 4-6 s on a quiet machine).
func (d *deliverer) waitForWithin(t *testing.T, what string, bound time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.After(bound)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-d.events:
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func accept(*Message, string) Result { return Result{Outcome: sluice.OutcomeDelivered} }

func testEnvelope(rcpts ...string) *sluice.Envelope {
	env := &sluice.Envelope{From: "sender@example.org", Received: time.Now()}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, sluice.Recipient{Address: r})
	}
	return env
}

// spoolStore opens the pebble store of a spool at dir, as New would, for
// a test that wraps it (WithStore) or writes behind the queue's back.
func spoolStore(t *testing.T, dir string) Store {
	t.Helper()
	st, err := openPebble(filepath.Join(dir, "db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func newTestQueue(t *testing.T, dir string, opts ...Option) *Queue {
	t.Helper()
	q, err := New(dir, append([]Option{WithRetry(10*time.Millisecond, 40*time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func serve(t *testing.T, q *Queue, d Deliverer) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- q.Serve(d) }()
	t.Cleanup(func() {
		q.Close()
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
	})
}

func TestEnqueueDeliversBodyIntact(t *testing.T) {
	dir := t.TempDir()
	q := newTestQueue(t, dir)
	body := "Subject: hi\r\n\r\n.leading dot\r\nline\r\n"
	id, err := q.Enqueue(context.Background(), testEnvelope("a@example.com", "b@example.net"), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if !validID(id) {
		t.Fatalf("id %q is not a valid queue id", id)
	}
	d := newDeliverer(accept)
	serve(t, q, d)
	d.waitFor(t, "delivery", func() bool { return q.Depth() == 0 })
	got := d.attempts()
	if len(got) != 1 || got[0].id != id || string(got[0].body) != body {
		t.Fatalf("attempts = %+v, want one of %s with body %q", got, id, body)
	}
	if want := []string{"a@example.com", "b@example.net"}; fmt.Sprint(got[0].rcpts) != fmt.Sprint(want) {
		t.Errorf("recipients = %v, want %v", got[0].rcpts, want)
	}
	if keys := storeKeys(t, q); len(keys) != 0 {
		t.Errorf("store still holds %d keys after delivery: %q", len(keys), keys)
	}
}

// TestLargeBodyIsStreamedInChunks: a body of several write batches reads
// back intact, and leaves no partial marker behind.
func TestLargeBodyIsStreamedInChunks(t *testing.T) {
	q := newTestQueue(t, t.TempDir())
	body := bytes.Repeat([]byte("0123456789abcdef\r\n"), 3*batchFlush/18+77)
	id, err := q.Enqueue(context.Background(), testEnvelope("a@example.com"), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range storeKeys(t, q) {
		if k[0] == pfxPartial {
			t.Errorf("partial marker %q left after Enqueue returned", k)
		}
	}
	d := newDeliverer(accept)
	serve(t, q, d)
	d.waitFor(t, "delivery", func() bool { return q.Depth() == 0 })
	if got := d.attempts(); len(got) != 1 || got[0].id != id || !bytes.Equal(got[0].body, body) {
		t.Fatalf("body of %d bytes not delivered intact (attempts %d)", len(body), len(got))
	}
}

// TestRemovedMessagesLeaveNoChunks: the body chunks of a delivered message
// and of a deleted one, each several chunks long, are all removed (by
// point deletions, one per chunk the envelope counts).
func TestRemovedMessagesLeaveNoChunks(t *testing.T) {
	q := newTestQueue(t, t.TempDir())
	ctx := context.Background()
	body := bytes.Repeat([]byte("0123456789abcdef\r\n"), 3*chunkSize/18+5) // 4 chunks
	deleted, err := q.Enqueue(ctx, testEnvelope("a@example.com"), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Hold(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(ctx, testEnvelope("b@example.com"), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	chunks := 0
	for _, k := range storeKeys(t, q) {
		if k[0] == pfxBody {
			chunks++
		}
	}
	if chunks != 8 {
		t.Fatalf("store holds %d body chunks for two bodies of %d bytes, want 8", chunks, len(body))
	}
	if err := q.Delete(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	d := newDeliverer(accept)
	serve(t, q, d)
	d.waitFor(t, "delivery", func() bool { return q.Depth() == 0 })
	if keys := storeKeys(t, q); len(keys) != 0 {
		t.Errorf("store still holds %d keys after delivery and deletion: %q", len(keys), keys)
	}
}

func TestBodyChunks(t *testing.T) {
	for _, c := range []struct {
		se   *storedEnvelope
		want int
	}{
		{&storedEnvelope{Size: 0, Chunks: 0}, 0},
		{&storedEnvelope{Size: 10, Chunks: 1}, 1},
		{&storedEnvelope{Size: 10, Chunks: 0}, -1}, // a record that does not count its chunks
		{nil, -1},
	} {
		if got := c.se.bodyChunks(); got != c.want {
			t.Errorf("bodyChunks(%+v) = %d, want %d", c.se, got, c.want)
		}
	}
}

// TestPartialBodyIsDroppedAtStart: chunks of a message whose writer died
// before its last batch were never acknowledged, and are deleted when the
// spool opens.
func TestPartialBodyIsDroppedAtStart(t *testing.T) {
	dir := t.TempDir()
	q := newTestQueue(t, dir)
	good, _ := q.Enqueue(context.Background(), testEnvelope("a@example.com"), strings.NewReader("x\r\n"))
	id := newID(time.Now())
	b := q.spool.store.NewBatch()
	b.Set(partialKey(id), nil)
	b.Set(chunkKey(id, 0), sealRecord(chunkKey(id, 0), kindChunk, []byte("half a message")))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q2 := newTestQueue(t, dir)
	for _, k := range storeKeys(t, q2) {
		if bytes.Contains(k, []byte(id)) {
			t.Errorf("key %q of the partial message survived the restart", k)
		}
	}
	if _, err := q2.Show(context.Background(), good); err != nil {
		t.Errorf("complete message lost: %v", err)
	}
}

func TestDeferredRecipientIsRetriedAlone(t *testing.T) {
	q := newTestQueue(t, t.TempDir())
	tries := map[string]int{}
	var mu sync.Mutex
	d := newDeliverer(func(_ *Message, rcpt string) Result {
		mu.Lock()
		defer mu.Unlock()
		tries[rcpt]++
		if rcpt == "slow@example.com" && tries[rcpt] < 3 {
			return Result{Outcome: sluice.OutcomeDeferred, Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1}, "greylisted")}
		}
		return Result{Outcome: sluice.OutcomeDelivered}
	})
	if _, err := q.Enqueue(context.Background(), testEnvelope("fast@example.com", "slow@example.com"), strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	serve(t, q, d)
	d.waitFor(t, "three attempts", func() bool { return q.Depth() == 0 })
	got := d.attempts()
	if len(got) != 3 {
		t.Fatalf("got %d attempts, want 3", len(got))
	}
	for i, a := range got[1:] {
		if fmt.Sprint(a.rcpts) != "[slow@example.com]" || a.attempt != i+2 {
			t.Errorf("retry %d: recipients %v attempt %d, want [slow@example.com] attempt %d", i+1, a.rcpts, a.attempt, i+2)
		}
	}
}

func TestPermanentFailureIsBouncedOnce(t *testing.T) {
	q := newTestQueue(t, t.TempDir())
	d := newDeliverer(func(_ *Message, rcpt string) Result {
		if rcpt == "gone@example.com" {
			return Result{Outcome: sluice.OutcomeBounced, Reply: sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no such user")}
		}
		return Result{Outcome: sluice.OutcomeDelivered}
	})
	calls := 0
	d.bounceFn = func() error {
		calls++
		if calls == 1 {
			return errors.New("dsn queue full")
		}
		return nil
	}
	if _, err := q.Enqueue(context.Background(), testEnvelope("ok@example.com", "gone@example.com"), strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	serve(t, q, d)
	d.waitFor(t, "bounce", func() bool { return q.Depth() == 0 })
	d.mu.Lock()
	defer d.mu.Unlock()
	if calls != 2 {
		t.Errorf("Bounce called %d times, want 2 (one failure, one retry)", calls)
	}
	if len(d.bounced) != 1 || d.bounced[0].Recipient.Address != "gone@example.com" || d.bounced[0].Expired ||
		d.bounced[0].Reply.Enhanced != (sluice.EnhancedCode{5, 1, 1}) {
		t.Errorf("bounced = %+v, want gone@example.com with 5.1.1", d.bounced)
	}
}

func TestExpiredRecipientBounces(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	q := newTestQueue(t, t.TempDir(), WithClock(clock), WithMaxAge(time.Hour))
	d := newDeliverer(func(*Message, string) Result {
		mu.Lock()
		now = now.Add(2 * time.Hour) // the next look at the clock is past the maximum age
		mu.Unlock()
		return Result{Outcome: sluice.OutcomeDeferred, Reply: sluice.NewReply(421, sluice.EnhancedCode{4, 4, 2}, "busy")}
	})
	env := testEnvelope("late@example.com")
	env.Received = time.Time{} // stamped by Enqueue from the clock
	if _, err := q.Enqueue(context.Background(), env, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	serve(t, q, d)
	d.waitFor(t, "expiry", func() bool { return q.Depth() == 0 })
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.bounced) != 1 || !d.bounced[0].Expired {
		t.Fatalf("bounced = %+v, want one expired failure", d.bounced)
	}
}

func TestQueueSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	q, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 5 {
		id, err := q.Enqueue(context.Background(), testEnvelope("r@example.com"), strings.NewReader(fmt.Sprintf("msg %d\r\n", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q2 := newTestQueue(t, dir)
	if got := q2.Depth(); got != 5 {
		t.Fatalf("after restart Depth = %d, want 5", got)
	}
	d := newDeliverer(accept)
	serve(t, q2, d)
	d.waitFor(t, "redelivery", func() bool { return q2.Depth() == 0 })
	seen := map[string]bool{}
	for _, a := range d.attempts() {
		seen[a.id] = true
	}
	for _, id := range ids {
		if !seen[id] {
			t.Errorf("message %s not delivered after restart", id)
		}
	}
}

func TestSpoolIsLocked(t *testing.T) {
	dir := t.TempDir()
	newTestQueue(t, dir)
	if q, err := New(dir); err == nil {
		q.Close()
		t.Fatal("second New on the same spool succeeded, want an error")
	}
}

func TestCorruptBodyIsQuarantinedNotDelivered(t *testing.T) {
	dir := t.TempDir()
	q, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := q.Enqueue(context.Background(), testEnvelope("r@example.com"), strings.NewReader("Subject: damaged\r\n\r\nbody\r\n"))
	good, _ := q.Enqueue(context.Background(), testEnvelope("r@example.com"), strings.NewReader("Subject: fine\r\n\r\nbody\r\n"))
	q.Close()
	damage(t, dir, chunkKey(bad, 0), -3) // inside the body

	reg := prometheus.NewRegistry()
	q2 := newTestQueue(t, dir, WithRegisterer(reg))
	d := newDeliverer(accept)
	serve(t, q2, d)
	d.waitFor(t, "both attempts", func() bool { return q2.Depth() == 0 })
	for _, a := range d.attempts() {
		if a.id == bad && !errors.Is(a.err, ErrCorrupt) {
			t.Errorf("damaged body read with err %v, want ErrCorrupt", a.err)
		}
		if a.id == good && (a.err != nil || !bytes.Contains(a.body, []byte("fine"))) {
			t.Errorf("good message: err %v body %q", a.err, a.body)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "quarantine", bad+".body")); err != nil || !bytes.Contains(b, []byte("damaged")) {
		t.Errorf("damaged message not in quarantine: %q, %v", b, err)
	}
	if got := counterValue(q2.metrics.corrupt); got != 1 {
		t.Errorf("corrupt records = %v, want 1", got)
	}
}

func TestCorruptEnvelopeIsQuarantined(t *testing.T) {
	dir := t.TempDir()
	q, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := q.Enqueue(context.Background(), testEnvelope("r@example.com"), strings.NewReader("x\r\n"))
	good, _ := q.Enqueue(context.Background(), testEnvelope("r@example.com"), strings.NewReader("y\r\n"))
	q.Close()
	damage(t, dir, envKey(bad), 12)
	var logs bytes.Buffer
	q2 := newTestQueue(t, dir, WithLogger(slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))))
	d := newDeliverer(accept)
	serve(t, q2, d)
	d.waitFor(t, "the good message", func() bool { return q2.Depth() == 0 })
	if got := d.attempts(); len(got) != 1 || got[0].id != good {
		t.Errorf("attempts = %+v, want only %s", got, good)
	}
	if _, err := os.Stat(filepath.Join(dir, "quarantine", bad+".envelope")); err != nil {
		t.Errorf("damaged envelope not in quarantine: %v", err)
	}
	if !strings.Contains(logs.String(), "corrupt record quarantined") || !strings.Contains(logs.String(), bad) {
		t.Errorf("no log line names the quarantined message:\n%s", logs.String())
	}
}

func TestCorruptStateFallsBackToInitial(t *testing.T) {
	dir := t.TempDir()
	q := newTestQueue(t, dir)
	tries := make(chan string, 10)
	d := newDeliverer(func(*Message, string) Result { return Result{Outcome: sluice.OutcomeDeferred} })
	id, _ := q.Enqueue(context.Background(), testEnvelope("r@example.com"), strings.NewReader("x\r\n"))
	errc := make(chan error, 1)
	go func() { errc <- q.Serve(d) }()
	d.waitFor(t, "a deferred attempt", func() bool { return q.Stats().Deferred == 1 })
	q.Close()
	<-errc
	damage(t, dir, stateKey(id), -2)
	q2 := newTestQueue(t, dir, WithRestartSpread(0))
	if q2.Depth() != 1 {
		t.Fatalf("message lost with its damaged state: Depth = %d", q2.Depth())
	}
	d2 := newDeliverer(func(m *Message, _ string) Result {
		tries <- m.Envelope.ID
		return Result{Outcome: sluice.OutcomeDelivered}
	})
	serve(t, q2, d2)
	d2.waitFor(t, "redelivery", func() bool { return q2.Depth() == 0 })
	if got := <-tries; got != id {
		t.Errorf("delivered %s, want %s", got, id)
	}
	if _, err := os.Stat(filepath.Join(dir, "quarantine", id+".state")); err != nil {
		t.Errorf("damaged state not quarantined: %v", err)
	}
}

func TestConcurrentEnqueuesAllDurable(t *testing.T) {
	dir := t.TempDir()
	q, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i := range n {
		wg.Go(func() {
			id, err := q.Enqueue(context.Background(), testEnvelope("r@example.com"), strings.NewReader(strings.Repeat("z", i*100)))
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	q.Close()
	q2 := newTestQueue(t, dir)
	if got := q2.Depth(); got != n {
		t.Errorf("Depth after reopen = %d, want %d", got, n)
	}
	for _, id := range ids {
		if _, err := q2.Show(context.Background(), id); err != nil {
			t.Errorf("acknowledged message %s missing: %v", id, err)
		}
	}
}

func TestEnqueueRejectsInvalidEnvelope(t *testing.T) {
	q := newTestQueue(t, t.TempDir())
	for _, env := range []*sluice.Envelope{
		{From: "a@example.org"},
		{From: "not an address", Recipients: []sluice.Recipient{{Address: "r@example.com"}}},
		{Recipients: []sluice.Recipient{{Address: "r@@example.com"}}},
	} {
		if _, err := q.Enqueue(context.Background(), env, strings.NewReader("x")); err == nil {
			t.Errorf("Enqueue(%+v) succeeded, want an error", env)
		}
	}
	if q.Depth() != 0 {
		t.Errorf("Depth = %d, want 0", q.Depth())
	}
}

func TestShutdownWaitsForAttemptInFlight(t *testing.T) {
	q := newTestQueue(t, t.TempDir())
	release := make(chan struct{})
	started := make(chan struct{})
	d := newDeliverer(func(*Message, string) Result {
		close(started)
		<-release
		return Result{Outcome: sluice.OutcomeDelivered}
	})
	q.Enqueue(context.Background(), testEnvelope("r@example.com"), strings.NewReader("x\r\n"))
	go q.Serve(d)
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- q.Shutdown(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while an attempt was in flight", err)
	case <-ctx.Done():
	}
	close(release)
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if err := q.Check(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Check after Shutdown = %v, want ErrClosed", err)
	}
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	q := &Queue{cfg: defaultConfig()}
	q.cfg.retryMin, q.cfg.retryMax = time.Minute, 10*time.Minute
	for _, tc := range []struct {
		n        int
		min, max time.Duration
	}{
		{1, 48 * time.Second, 72 * time.Second},
		{2, 96 * time.Second, 144 * time.Second},
		{3, 192 * time.Second, 288 * time.Second},
		{10, 8 * time.Minute, 12 * time.Minute},
	} {
		for range 50 {
			if got := q.backoff(tc.n); got < tc.min || got > tc.max {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", tc.n, got, tc.min, tc.max)
			}
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, opt := range []Option{WithWorkers(0), WithRetry(time.Minute, time.Second), WithMaxAge(0), WithLogger(nil),
		WithBackoffFactor(0.5), WithRetryBudget(0), WithRetryBudget(1.5), WithRestartSpread(-1), WithDelayWarning(-1)} {
		if q, err := New(t.TempDir(), opt); err == nil {
			q.Close()
			t.Error("New accepted an invalid option")
		}
	}
}

// damage inverts one byte of the value stored under key in the closed
// spool dir; a negative offset counts from the end.
func damage(t *testing.T, dir string, key []byte, off int) {
	t.Helper()
	st := spoolStore(t, dir)
	defer st.Close()
	v, err := st.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += len(v)
	}
	v[off] ^= 0xff
	b := st.NewBatch()
	b.Set(key, v)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(); err != nil {
		t.Fatal(err)
	}
}

// storeKeys returns every key in q's store.
func storeKeys(t *testing.T, q *Queue) [][]byte {
	t.Helper()
	var keys [][]byte
	err := q.spool.store.Scan(nil, nil, func(k, _ []byte) (bool, error) {
		keys = append(keys, bytes.Clone(k))
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// syncWriter serialises writes to a buffer shared with the test.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// bodyBouncer bounces every recipient without reading the body; its
// Bounce reads the body, as a DSN with RET=FULL does.
type bodyBouncer struct{ bounceErr chan error }

func (bodyBouncer) Deliver(_ context.Context, msg *Message) []Result {
	res := make([]Result, len(msg.Envelope.Recipients))
	for i := range res {
		res[i] = Result{Outcome: sluice.OutcomeBounced, Reply: sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no")}
	}
	return res
}

func (b bodyBouncer) Bounce(_ context.Context, msg *Message, _ []Failure) error {
	rc, err := msg.Open()
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	b.bounceErr <- err
	return err
}

func TestCorruptBodyFoundByBouncerIsQuarantined(t *testing.T) {
	dir := t.TempDir()
	q, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := q.Enqueue(context.Background(), testEnvelope("r@example.com"), strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
	q.Close()
	damage(t, dir, chunkKey(id, 0), -3)
	q2 := newTestQueue(t, dir)
	b := bodyBouncer{bounceErr: make(chan error, 10)}
	serve(t, q2, b)
	if err := <-b.bounceErr; !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Bounce read the damaged body with err %v, want ErrCorrupt", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for q2.Depth() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling the queue with a deadline
	}
	if q2.Depth() != 0 {
		t.Fatal("message with a damaged body is still queued after its bounce failed on it")
	}
	if _, err := os.Stat(filepath.Join(dir, "quarantine", id+".body")); err != nil {
		t.Errorf("damaged message not quarantined: %v", err)
	}
}

// reopeningDeliverer reads part of the body, closes it, tries to read on,
// then reads the whole body through a second Open.
type reopeningDeliverer struct{ got chan [3][]byte }

func (d reopeningDeliverer) Deliver(_ context.Context, msg *Message) []Result {
	var r [3][]byte
	if rc, err := msg.Open(); err == nil {
		r[0] = make([]byte, 100<<10)
		n, _ := io.ReadFull(rc, r[0])
		r[0] = r[0][:n]
		rc.Close()
		if n, err := rc.Read(make([]byte, 10)); n != 0 || err == nil {
			r[1] = []byte(fmt.Sprintf("read %d bytes, err %v", n, err))
		}
	}
	if rc, err := msg.Open(); err == nil {
		r[2], _ = io.ReadAll(rc)
		rc.Close()
	}
	d.got <- r
	res := make([]Result, len(msg.Envelope.Recipients))
	for i := range res {
		res[i] = Result{Outcome: sluice.OutcomeDelivered}
	}
	return res
}

// TestBodyReadAfterClose: a body reader reuses a pooled buffer across the
// chunks it reads and gives it back on Close, so a Read after Close must
// fail rather than hand out a buffer someone else may now be filling, and
// a second Open reads the whole body again.
func TestBodyReadAfterClose(t *testing.T) {
	q := newTestQueue(t, t.TempDir())
	body := make([]byte, 3*chunkSize+123)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	if _, err := q.Enqueue(context.Background(), testEnvelope("r@example.com"), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	d := reopeningDeliverer{got: make(chan [3][]byte, 1)}
	serve(t, q, d)
	select {
	case r := <-d.got:
		if !bytes.Equal(r[0], body[:100<<10]) {
			t.Errorf("first read: %d bytes, not the body's first 100 KiB", len(r[0]))
		}
		if r[1] != nil {
			t.Errorf("Read after Close: %s, want an error", r[1])
		}
		if !bytes.Equal(r[2], body) {
			t.Errorf("second Open read %d bytes, not the %d-byte body", len(r[2]), len(body))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no attempt within 10 s")
	}
}
