package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluicemta/sluice"
)

func enqueue(t *testing.T, q *Queue, from string, rcpts ...string) string {
	t.Helper()
	env := testEnvelope(rcpts...)
	env.From = from
	id, err := q.Enqueue(context.Background(), env, strings.NewReader("Subject: x\r\n\r\nx\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func listIDs(t *testing.T, q *Queue, o ListOptions) []string {
	t.Helper()
	p, err := q.List(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range p.Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

func TestListFiltersAndPages(t *testing.T) {
	q := newTestQueue(t, t.TempDir())
	m1 := enqueue(t, q, "alice@example.org", "a@x.example")
	m2 := enqueue(t, q, "bob@example.org", "b@y.example")
	m3 := enqueue(t, q, "", "c@X.example", "d@y.example")
	ctx := context.Background()
	if err := q.Hold(ctx, m1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    ListOptions
		want []string
	}{
		{"all, oldest first", ListOptions{}, []string{m1, m2, m3}},
		{"by domain, any case", ListOptions{Domain: "X.EXAMPLE"}, []string{m1, m3}},
		{"by sender", ListOptions{Sender: "BOB@example.org"}, []string{m2}},
		{"null sender", ListOptions{Sender: "<>"}, []string{m3}},
		{"held", ListOptions{State: StateHeld}, []string{m1}},
		{"pending", ListOptions{State: StatePending}, []string{m2, m3}},
		{"older than an hour", ListOptions{OlderThan: time.Hour}, nil},
		{"newer than an hour", ListOptions{NewerThan: time.Hour}, []string{m1, m2, m3}},
		{"after a cursor", ListOptions{After: m1}, []string{m2, m3}},
	} {
		if got := listIDs(t, q, tc.o); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	p, err := q.List(ctx, ListOptions{Limit: 2})
	if err != nil || len(p.Messages) != 2 || p.Next != m2 {
		t.Fatalf("first page of 2: %+v, %v; want 2 messages and cursor %s", p, err, m2)
	}
	if p, _ = q.List(ctx, ListOptions{Limit: 2, After: p.Next}); len(p.Messages) != 1 || p.Next != "" {
		t.Errorf("second page: %+v, want the last message and no cursor", p)
	}
	if _, err := q.List(ctx, ListOptions{After: "../../etc"}); err == nil {
		t.Error("List accepted a cursor that is not a queue id")
	}
}

func TestShowAndStats(t *testing.T) {
	q := newTestQueue(t, t.TempDir())
	id := enqueue(t, q, "alice@example.org", "a@x.example", "b@x.example", "c@y.example")
	enqueue(t, q, "alice@example.org", "d@x.example")
	info, err := q.Show(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != StatePending || len(info.Recipients) != 3 || info.Recipients[2].Address != "c@y.example" ||
		info.Recipients[2].State != StatePending || info.Envelope.From != "alice@example.org" || info.Next.IsZero() {
		t.Errorf("Show = %+v", info)
	}
	if _, err := q.Show(context.Background(), "AAAAAAAAAAAAAAAAAAAA"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Show of an unknown id: err = %v, want ErrNotFound", err)
	}
	st := q.Stats()
	if st.Pending != 2 || len(st.Domains) != 2 || st.Domains[0] != (DomainStats{"x.example", 2, st.Domains[0].Oldest}) ||
		st.Domains[1].Messages != 1 || st.Domains[0].Oldest.IsZero() {
		t.Errorf("Stats = %+v, want 2 pending, x.example 2, y.example 1, with oldest times", st)
	}
}

func TestHoldReleaseDelete(t *testing.T) {
	q := newTestQueue(t, t.TempDir())
	ctx := context.Background()
	held := enqueue(t, q, "a@example.org", "r@example.com")
	gone := enqueue(t, q, "a@example.org", "r@example.com")
	free := enqueue(t, q, "a@example.org", "r@example.com")
	if err := q.Hold(ctx, held); err != nil {
		t.Fatal(err)
	}
	if err := q.Delete(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Show(ctx, gone); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted message still shown: %v", err)
	}
	d := newDeliverer(accept)
	serve(t, q, d)
	d.waitFor(t, "the free message", func() bool { return q.Depth() == 1 })
	if got := d.attempts(); len(got) != 1 || got[0].id != free {
		t.Fatalf("attempts = %+v, want only %s (one held, one deleted)", got, free)
	}
	if info, err := q.Show(ctx, held); err != nil || info.State != StateHeld || info.Recipients[0].State != StateHeld {
		t.Fatalf("held message: %+v, %v", info, err)
	}
	if err := q.Release(ctx, held); err != nil {
		t.Fatal(err)
	}
	d.waitFor(t, "the released message", func() bool { return q.Depth() == 0 })
	if err := q.Delete(ctx, held); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete of a delivered message: err = %v, want ErrNotFound", err)
	}
}

// deferUntil defers every recipient until release is closed, then
// delivers.
func deferUntil(release <-chan struct{}) func(*Message, string) Result {
	return func(*Message, string) Result {
		select {
		case <-release:
			return Result{Outcome: sluice.OutcomeDelivered}
		default:
			return Result{Outcome: sluice.OutcomeDeferred, Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 4, 0}, "try later")}
		}
	}
}

func TestRequeueAndFlushRetryNow(t *testing.T) {
	// Retries an hour apart: only Requeue and Flush can make them happen
	// within the test.
	q := newTestQueue(t, t.TempDir(), WithRetry(time.Hour, time.Hour), WithRestartSpread(time.Millisecond))
	ctx := context.Background()
	release := make(chan struct{})
	d := newDeliverer(deferUntil(release))
	a := enqueue(t, q, "s@example.org", "r@example.com")
	b := enqueue(t, q, "s@example.org", "r@example.com")
	c := enqueue(t, q, "s@example.org", "r@example.com")
	serve(t, q, d)
	d.waitFor(t, "three deferrals", func() bool { return q.Stats().Deferred == 3 })
	if err := q.Requeue(ctx, a); err != nil {
		t.Fatal(err)
	}
	d.waitFor(t, "the requeued retry", func() bool { return len(d.attempts()) == 4 })
	if got := d.attempts()[3]; got.id != a || got.attempt != 2 {
		t.Errorf("attempt after Requeue: %s #%d, want %s #2", got.id, got.attempt, a)
	}
	d.waitFor(t, "the retry recorded", func() bool { return q.Stats().Deferred == 3 })
	close(release)
	n, err := q.Flush(ctx)
	if err != nil || n != 3 {
		t.Fatalf("Flush = %d, %v; want 3 moved", n, err)
	}
	d.waitFor(t, "flushed deliveries", func() bool { return q.Depth() == 0 })
	var ids []string
	for _, at := range d.attempts()[4:] {
		ids = append(ids, at.id)
	}
	slices.Sort(ids)
	want := []string{a, b, c}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("delivered after Flush: %v, want %v", ids, want)
	}
}

func TestBounceReturnsToSender(t *testing.T) {
	q := newTestQueue(t, t.TempDir(), WithRetry(time.Hour, time.Hour))
	d := newDeliverer(deferUntil(nil))
	id := enqueue(t, q, "s@example.org", "r1@example.com", "r2@example.com")
	serve(t, q, d)
	d.waitFor(t, "a deferral", func() bool { return q.Stats().Deferred == 1 })
	if err := q.Bounce(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	d.waitFor(t, "the bounce", func() bool { return q.Depth() == 0 })
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.bounced) != 2 || d.bounced[0].Reply.Enhanced != (sluice.EnhancedCode{5, 0, 0}) {
		t.Errorf("bounced = %+v, want both recipients with 5.0.0", d.bounced)
	}
	if len(d.seen) != 1 {
		t.Errorf("%d delivery attempts, want 1: a bounced message is not tried again", len(d.seen))
	}
}

func TestDeleteInFlightCancelsTheAttempt(t *testing.T) {
	q := newTestQueue(t, t.TempDir())
	started := make(chan struct{})
	cancelled := make(chan struct{})
	d := &ctxDeliverer{fn: func(ctx context.Context) {
		close(started)
		<-ctx.Done()
		close(cancelled)
	}}
	id := enqueue(t, q, "s@example.org", "r@example.com")
	serve(t, q, d)
	<-started
	if info, err := q.Show(context.Background(), id); err != nil || info.State != StateInFlight {
		t.Fatalf("Show during the attempt: %+v, %v; want in-flight", info, err)
	}
	if err := q.Delete(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	<-cancelled
	waitUntil(t, "removal", func() bool { return q.Depth() == 0 })
	if _, err := q.Show(context.Background(), id); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted in-flight message still queued: %v", err)
	}
}

type ctxDeliverer struct{ fn func(context.Context) }

func (c *ctxDeliverer) Deliver(ctx context.Context, msg *Message) []Result {
	c.fn(ctx)
	return nil
}

// waitUntil polls cond with a deadline.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling with a deadline
	}
}

// TestFreshMailIsNotDelayedByRetries: with every retry worker stuck on a
// deferred backlog, a new message is still delivered at once, because
// retries may hold only the retry budget's share of the workers (seed 002).
func TestFreshMailIsNotDelayedByRetries(t *testing.T) {
	q := newTestQueue(t, t.TempDir(), WithWorkers(4), WithRetryBudget(0.5))
	unblock := make(chan struct{})
	var mu sync.Mutex
	retries, maxRetries := 0, 0
	d := newDeliverer(func(m *Message, rcpt string) Result {
		if !strings.HasSuffix(rcpt, "@slow.example") {
			return Result{Outcome: sluice.OutcomeDelivered}
		}
		if m.Attempt == 1 {
			return Result{Outcome: sluice.OutcomeDeferred}
		}
		mu.Lock()
		retries++
		maxRetries = max(maxRetries, retries)
		mu.Unlock()
		<-unblock // a retry that hangs, holding its worker
		mu.Lock()
		retries--
		mu.Unlock()
		return Result{Outcome: sluice.OutcomeDelivered}
	})
	for i := range 20 {
		enqueue(t, q, "s@example.org", fmt.Sprintf("r%d@slow.example", i))
	}
	serve(t, q, d)
	waitUntil(t, "two stuck retries", func() bool { mu.Lock(); defer mu.Unlock(); return retries == 2 })
	fresh := enqueue(t, q, "s@example.org", "r@fast.example")
	d.waitFor(t, "the fresh message", func() bool {
		_, err := q.Show(context.Background(), fresh)
		return errors.Is(err, ErrNotFound)
	})
	close(unblock)
	d.waitFor(t, "the backlog", func() bool { return q.Depth() == 0 })
	if maxRetries != 2 {
		t.Errorf("at most %d retries ran at once, want 2 (half of 4 workers)", maxRetries)
	}
}

// TestRestartSpreadsOverdueRetries: retries overdue when Serve starts go
// out evenly over the spread window, not all at once.
func TestRestartSpreadsOverdueRetries(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	dir := t.TempDir()
	q, err := New(dir, WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 20 {
		ids = append(ids, enqueue(t, q, "s@example.org", "r@slow.example"))
	}
	d := newDeliverer(deferUntil(nil))
	errc := make(chan error, 1)
	go func() { errc <- q.Serve(d) }()
	d.waitFor(t, "first attempts", func() bool { return q.Stats().Deferred == 20 })
	q.Close()
	<-errc

	advance(24 * time.Hour) // down for a day: every retry is overdue
	const spread = 10 * time.Minute
	q2 := newTestQueue(t, dir, WithClock(clock), WithRestartSpread(spread))
	release := make(chan struct{})
	close(release)
	d2 := newDeliverer(deferUntil(release))
	serve(t, q2, d2)
	probe := func() { // a fresh message wakes the scheduler and proves it looked
		id := enqueue(t, q2, "s@example.org", "r@fast.example")
		d2.waitFor(t, "the probe", func() bool { _, err := q2.Show(context.Background(), id); return errors.Is(err, ErrNotFound) })
	}
	probe()
	slowAttempts := func() int {
		n := 0
		for _, a := range d2.attempts() {
			if a.rcpts[0] == "r@slow.example" {
				n++
			}
		}
		return n
	}
	for _, at := range []time.Duration{spread / 3, 2 * spread / 3} {
		advance(spread / 3)
		want := int(float64(len(ids)) * float64(at) / float64(spread)) // an even ramp
		probe()
		d2.waitFor(t, fmt.Sprintf("%d retries %v into the spread", want, at), func() bool { return slowAttempts() >= want })
		probe() // one more scan at the same time starts nothing more
		if got := slowAttempts(); got != want {
			t.Errorf("%v into the spread: %d retries started, want %d", at, got, want)
		}
	}
	advance(spread)
	probe()
	d2.waitFor(t, "every retry", func() bool { return q2.Depth() == 0 })
}

type warner struct {
	*deliverer
	warned chan []Failure
}

func (w warner) NotifyDelay(_ context.Context, _ *Message, delayed []Failure) error {
	w.warned <- delayed
	return nil
}

func TestDelayWarningIsSentOnce(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	q := newTestQueue(t, t.TempDir(), WithClock(clock), WithDelayWarning(time.Hour), WithRetry(time.Hour, time.Hour))
	w := warner{newDeliverer(deferUntil(nil)), make(chan []Failure, 10)}
	env := testEnvelope("late@example.com")
	env.Received = time.Time{}
	id, err := q.Enqueue(context.Background(), env, strings.NewReader("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	serve(t, q, w)
	w.waitFor(t, "attempt 1", func() bool { return q.Stats().Deferred == 1 })
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	for attempt := 2; attempt <= 3; attempt++ {
		if err := q.Requeue(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		w.waitFor(t, fmt.Sprint("attempt ", attempt), func() bool {
			return len(w.attempts()) == attempt && q.Stats().Deferred == 1
		})
	}
	if len(w.warned) != 1 {
		t.Fatalf("%d delay warnings, want 1", len(w.warned))
	}
	if f := <-w.warned; len(f) != 1 || !f[0].Delayed || f[0].Recipient.Address != "late@example.com" {
		t.Errorf("warning = %+v", f)
	}
	if info, _ := q.Show(context.Background(), id); !info.Recipients[0].Warned {
		t.Error("Show does not report the warning")
	}
}

// TestRetriesAreNotStarvedByFreshMail: when a worker frees up while fresh
// mail is waiting, a due retry gets it first, from the retries' reserve.
func TestRetriesAreNotStarvedByFreshMail(t *testing.T) {
	q := newTestQueue(t, t.TempDir(), WithWorkers(2), WithRetry(time.Hour, time.Hour))
	tokens := make(chan struct{}, 10)
	var mu sync.Mutex
	blocked := 0
	d := newDeliverer(func(m *Message, rcpt string) Result {
		if rcpt == "retry@example.com" {
			if m.Attempt == 1 {
				return Result{Outcome: sluice.OutcomeDeferred}
			}
			return Result{Outcome: sluice.OutcomeDelivered}
		}
		mu.Lock()
		blocked++
		mu.Unlock()
		<-tokens // fresh mail holds its worker until given a token
		mu.Lock()
		blocked--
		mu.Unlock()
		return Result{Outcome: sluice.OutcomeDelivered}
	})
	r := enqueue(t, q, "s@example.org", "retry@example.com")
	serve(t, q, d)
	t.Cleanup(func() { close(tokens) }) // runs before serve's Close: no worker stays blocked
	d.waitFor(t, "the first attempt", func() bool { return q.Stats().Deferred == 1 })
	for i := range 6 {
		enqueue(t, q, "s@example.org", fmt.Sprintf("f%d@example.com", i))
	}
	waitUntil(t, "both workers busy", func() bool { mu.Lock(); defer mu.Unlock(); return blocked == 2 })
	if err := q.Requeue(context.Background(), r); err != nil { // the retry is due, no worker is free
		t.Fatal(err)
	}
	tokens <- struct{}{} // one fresh message finishes
	d.waitFor(t, "the retry ahead of the waiting fresh mail", func() bool {
		_, err := q.Show(context.Background(), r)
		return errors.Is(err, ErrNotFound)
	})
	for range 5 {
		tokens <- struct{}{}
	}
	d.waitFor(t, "the fresh mail", func() bool { return q.Depth() == 0 })
}

func TestMetricsReportDepthByStateAndDomain(t *testing.T) {
	reg := prometheus.NewRegistry()
	q := newTestQueue(t, t.TempDir(), WithRegisterer(reg), WithDomainMetrics(1))
	id := enqueue(t, q, "s@example.org", "a@deep.example")
	enqueue(t, q, "s@example.org", "b@deep.example", "c@shallow.example")
	if err := q.Hold(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			got[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
			if h := m.GetHistogram(); h != nil {
				got[name+"#count"], got[name+"#sum"] = float64(h.GetSampleCount()), h.GetSampleSum()
			}
		}
	}
	for name, want := range map[string]float64{
		"sluice_queue_messages/pending":             1,
		"sluice_queue_messages/held":                1,
		"sluice_queue_domain_messages/deep.example": 2,
		"sluice_queue_domain_messages/other":        1,
		"sluice_queue_enqueued_total":               2,
		"sluice_queue_corrupt_records_total":        0,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	if _, ok := got["sluice_queue_domain_oldest_seconds/deep.example"]; !ok {
		t.Error("no oldest-age series for deep.example")
	}
	// Each enqueue and the hold waited for an fsync of their own.
	syncs := got["sluice_queue_fsync_duration_seconds#count"]
	if syncs < 3 || got["sluice_queue_fsync_batch_size#count"] != syncs {
		t.Errorf("%v fsyncs timed and %v batches counted, want the same number, at least 3",
			syncs, got["sluice_queue_fsync_batch_size#count"])
	}
	if got["sluice_queue_fsync_duration_seconds#sum"] <= 0 {
		t.Error("fsyncs took no time")
	}
}

func TestOldest(t *testing.T) {
	var mu sync.Mutex
	now := time.UnixMilli(1_800_000_000_000)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	q := newTestQueue(t, t.TempDir(), WithClock(clock))
	if got := q.Oldest(); !got.IsZero() {
		t.Errorf("Oldest of an empty queue = %v, want zero", got)
	}
	first := enqueue(t, q, "s@example.org", "r@example.com")
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	enqueue(t, q, "s@example.org", "r@example.com")
	if got, want := q.Oldest(), time.UnixMilli(1_800_000_000_000); !got.Equal(want) {
		t.Errorf("Oldest = %v, want %v", got, want)
	}
	if err := q.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	if got, want := q.Oldest(), time.UnixMilli(1_800_000_000_000).Add(time.Hour); !got.Equal(want) {
		t.Errorf("Oldest after deleting the first = %v, want %v", got, want)
	}
}

// TestEnqueueHeldIsNeverTriedUntilReleased: a quarantined message is held
// from its first write, even across a restart, and goes out on Release.
func TestEnqueueHeldIsNeverTriedUntilReleased(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	q := newTestQueue(t, dir)
	held, err := q.EnqueueHeld(ctx, testEnvelope("r@example.com"), strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = newTestQueue(t, dir)
	free := enqueue(t, q, "a@example.org", "r@example.com")
	d := newDeliverer(accept)
	serve(t, q, d)
	d.waitFor(t, "the free message", func() bool { return q.Depth() == 1 })
	if got := d.attempts(); len(got) != 1 || got[0].id != free {
		t.Fatalf("attempts = %+v, want only %s", got, free)
	}
	if info, err := q.Show(ctx, held); err != nil || info.State != StateHeld {
		t.Fatalf("quarantined message: %+v, %v; want held", info, err)
	}
	if err := q.Release(ctx, held); err != nil {
		t.Fatal(err)
	}
	d.waitFor(t, "the released message", func() bool { return q.Depth() == 0 })
}

// scanHook is a Store that calls hook once, from inside a scan of the
// envelopes (as List makes), after the scan has passed hookAt keys, while
// armed.
type scanHook struct {
	Store
	hookAt int
	hook   func()
	armed  atomic.Bool
}

func (s *scanHook) Scan(lower, upper []byte, fn func(k, v []byte) (bool, error)) error {
	if len(lower) == 0 || lower[0] != pfxEnvelope || !s.armed.Load() {
		return s.Store.Scan(lower, upper, fn)
	}
	n := 0
	return s.Store.Scan(lower, upper, func(k, v []byte) (bool, error) {
		if n++; n == s.hookAt && s.armed.CompareAndSwap(true, false) {
			s.hook()
		}
		return fn(k, v)
	})
}

type deliverFunc func(ctx context.Context, msg *Message) []Result

func (f deliverFunc) Deliver(ctx context.Context, msg *Message) []Result { return f(ctx, msg) }

// TestListSeesAttemptsThatStartDuringIt: List looks at the messages in
// flight once per listInflightEvery messages it reads, not once per
// message; a message whose attempt starts while List runs is still listed
// in flight once List has read that many more. Here the only worker moves
// from the first message to the last one after List has passed the first.
func TestListSeesAttemptsThatStartDuringIt(t *testing.T) {
	dir := t.TempDir()
	st := spoolStore(t, dir)
	hs := &scanHook{Store: st, hookAt: 10}
	q := newTestQueue(t, dir, WithStore(hs), WithWorkers(1), WithRetry(time.Hour, 2*time.Hour))
	ctx := context.Background()
	first := enqueue(t, q, "s@example.org", "r@example.com")
	// The messages in between are held, so the worker skips them; there
	// are more than listInflightEvery.
	const writers, each = 4, listInflightEvery/4 + 3
	var held sync.WaitGroup
	for range writers {
		held.Add(1)
		go func() {
			defer held.Done()
			for range each {
				if _, err := q.EnqueueHeld(ctx, testEnvelope("h@example.com"), strings.NewReader("x\r\n")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	held.Wait()
	last := enqueue(t, q, "s@example.org", "r@example.com")

	started := make(chan string, 10)
	release := make(chan struct{})
	serve(t, q, deliverFunc(func(ctx context.Context, msg *Message) []Result {
		started <- msg.Envelope.ID
		if msg.Envelope.ID == first {
			<-release
		} else {
			<-ctx.Done() // in flight until the queue closes
		}
		return nil // deferred
	}))
	waitStarted := func(id string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case got := <-started:
				if got == id {
					return
				}
			case <-deadline:
				t.Fatalf("timed out waiting for the attempt of %s", id)
			}
		}
	}
	waitStarted(first)
	hs.hook = func() {
		close(release)
		waitStarted(last)
	}
	hs.armed.Store(true)

	p, err := q.List(ctx, ListOptions{Limit: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	if hs.armed.Load() {
		t.Fatal("List's scan did not reach the hook")
	}
	states := map[string]State{}
	for _, m := range p.Messages {
		states[m.ID] = m.State
	}
	if want := writers*each + 2; len(p.Messages) != want {
		t.Fatalf("listed %d messages, want %d", len(p.Messages), want)
	}
	if got := states[first]; got != StateInFlight {
		t.Errorf("first message listed %s, want %s (in flight when List read it)", got, StateInFlight)
	}
	if got := states[last]; got != StateInFlight {
		t.Errorf("last message listed %s, want %s (in flight from before List read it, %d messages later)",
			got, StateInFlight, writers*each+1)
	}
	if got := p.Messages[1].State; got != StateHeld {
		t.Errorf("second message listed %s, want %s", got, StateHeld)
	}
}
