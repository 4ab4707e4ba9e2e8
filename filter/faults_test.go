package filter_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

// lineServer is a real TCP filter backend on loopback: each connection
// is counted; while healthy it answers "OK\n", while dead it closes the
// connection without a word, and while hung it reads and never answers.
type lineServer struct {
	ln    net.Listener
	conns atomic.Int64
	mode  atomic.Int32 // 0 healthy, 1 dead, 2 hung
	wg    sync.WaitGroup
	stop  chan struct{}
}

const (
	modeHealthy = iota
	modeDead
	modeHung
)

func startLineServer(t *testing.T, mode int32) *lineServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lineServer{ln: ln, stop: make(chan struct{})}
	s.mode.Store(mode)
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.wg.Go(func() { s.serve(c) })
		}
	})
	t.Cleanup(func() {
		close(s.stop)
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *lineServer) serve(c net.Conn) {
	defer c.Close()
	switch s.mode.Load() {
	case modeHealthy:
		c.Write([]byte("OK\n"))
	case modeHung:
		<-s.stop
	}
}

// client is a filter that asks the line server: "OK" accepts, anything
// else (a closed connection) is an error. It honours ctx on dial and read.
func (s *lineServer) client() filter.Filter {
	return filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", s.ln.Addr().String())
		if err != nil {
			return filter.Verdict{}, err
		}
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
		defer stop()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return filter.Verdict{}, err
		}
		if line != "OK\n" {
			return filter.Verdict{}, errors.New("bad answer " + line)
		}
		return filter.Verdict{Headers: []filter.Header{hdr("X-Line", "ok")}}, nil
	})
}

// TestHungEndpointPolicyWithinTimeout: a backend that accepts and never
// answers; each policy applies within timeout + 50 ms of the call.
func TestHungEndpointPolicyWithinTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	srv := startLineServer(t, modeHung)
	tests := []struct {
		policy filter.Policy
		action filter.Action
	}{
		{filter.PolicyTempfail, filter.Tempfail},
		{filter.PolicyReject, filter.Reject},
		{filter.PolicyAccept, filter.Accept},
		{filter.PolicyQuarantine, filter.Quarantine},
	}
	runs := int64(0)
	for _, tt := range tests {
		t.Run(tt.policy.String(), func(t *testing.T) {
			c, err := filter.New(filter.WithFilter("hung", srv.client(), filter.Timeout(timeout), filter.OnTimeout(tt.policy)))
			if err != nil {
				t.Fatal(err)
			}
			var v filter.Verdict
			elapsed := bestOf(3, timeout+50*time.Millisecond, func() time.Duration {
				runs++
				start := time.Now()
				v = c.Run(context.Background(), testMessage())
				return time.Since(start)
			})
			t.Logf("policy %s applied %v after the call (timeout %v)", tt.policy, elapsed, timeout)
			if elapsed > timeout+50*time.Millisecond {
				t.Errorf("policy applied after %v, want within %v", elapsed, timeout+50*time.Millisecond)
			}
			if v.Action != tt.action {
				t.Errorf("Action = %v, want %v", v.Action, tt.action)
			}
			if tt.action == filter.Accept || tt.action == filter.Quarantine {
				want := []filter.Header{hdr("X-Sluice-Filter", "hung timeout")}
				if !reflect.DeepEqual(v.Headers, want) {
					t.Errorf("Headers = %v, want %v", v.Headers, want)
				}
			}
		})
	}
	if srv.conns.Load() != runs {
		t.Errorf("server saw %d connections, want %d", srv.conns.Load(), runs)
	}
}

// TestBreakerStopsTrafficAndRecovers: after Failures errors the breaker
// opens and the dead backend sees no connection however many messages
// come; after the cool-down one probe goes through, and when it succeeds
// traffic flows again. Connections are counted on the backend's listener;
// the breaker's clock is a fake one, so nothing depends on wall time.
func TestBreakerStopsTrafficAndRecovers(t *testing.T) {
	srv := startLineServer(t, modeDead)
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	const cooldown = 30 * time.Second
	c, err := filter.New(
		filter.WithRegisterer(reg), filter.WithClock(clock),
		filter.WithFilter("line", srv.client(), filter.Timeout(5*time.Second), filter.OnError(filter.PolicyAccept),
			filter.WithBreaker(filter.Breaker{Failures: 3, Window: time.Minute, Cooldown: cooldown})),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	state := func() float64 { return metricValue(t, reg, "sluice_filter_breaker_state") }
	run := func() []filter.Header { return c.Run(ctx, testMessage()).Headers }
	for i := range 3 {
		if got, want := run(), []filter.Header{hdr("X-Sluice-Filter", "line error")}; !reflect.DeepEqual(got, want) {
			t.Fatalf("call %d: Headers = %v, want %v", i, got, want)
		}
	}
	if got := srv.conns.Load(); got != 3 {
		t.Fatalf("dead backend saw %d connections, want 3", got)
	}
	if state() != 2 {
		t.Fatalf("breaker state gauge = %v, want 2 (open)", state())
	}
	for range 50 {
		if got, want := run(), []filter.Header{hdr("X-Sluice-Filter", "line open")}; !reflect.DeepEqual(got, want) {
			t.Fatalf("open breaker: Headers = %v, want %v", got, want)
		}
	}
	advance(cooldown - time.Second)
	run()
	if got := srv.conns.Load(); got != 3 {
		t.Fatalf("open breaker let %d connections through to the dead backend", got-3)
	}

	srv.mode.Store(modeHealthy)
	advance(time.Second) // the cool-down is over: the next call probes
	if got, want := run(), []filter.Header{hdr("X-Line", "ok")}; !reflect.DeepEqual(got, want) {
		t.Fatalf("probe: Headers = %v, want %v", got, want)
	}
	if got := srv.conns.Load(); got != 4 {
		t.Errorf("backend saw %d connections, want 4 (3 failures, then the probe)", got)
	}
	if state() != 0 {
		t.Errorf("breaker state gauge = %v, want 0 (closed)", state())
	}
	for range 5 {
		run()
	}
	if got := srv.conns.Load(); got != 9 {
		t.Errorf("backend saw %d connections, want 9 once closed", got)
	}
	if got := metricValue(t, reg, "sluice_filter_breaker_opened_total"); got != 1 {
		t.Errorf("opened_total = %v, want 1", got)
	}
}

// TestBreakerProbeFailureReopens: a failing probe opens the breaker for
// another cool-down; with a fake clock no wall time is needed.
func TestBreakerProbeFailureReopens(t *testing.T) {
	srv := startLineServer(t, modeDead)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	c, err := filter.New(filter.WithClock(clock),
		filter.WithFilter("line", srv.client(), filter.OnError(filter.PolicyAccept),
			filter.WithBreaker(filter.Breaker{Failures: 2, Window: time.Second, Cooldown: time.Minute})))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.Run(ctx, testMessage())
	advance(2 * time.Second) // the first failure leaves the window
	c.Run(ctx, testMessage())
	c.Run(ctx, testMessage()) // two within the window: open
	c.Run(ctx, testMessage())
	if got := srv.conns.Load(); got != 3 {
		t.Fatalf("connections = %d, want 3", got)
	}
	advance(time.Minute)
	c.Run(ctx, testMessage()) // the probe, which fails
	c.Run(ctx, testMessage())
	if got := srv.conns.Load(); got != 4 {
		t.Fatalf("connections = %d, want 4 (one probe, then open again)", got)
	}
}

// TestGroupRunsInParallel: two filters of a group meet at a barrier that
// only opens when both are inside their Check at the same time.
func TestGroupRunsInParallel(t *testing.T) {
	var arrived sync.WaitGroup
	arrived.Add(2)
	both := make(chan struct{})
	go func() { arrived.Wait(); close(both) }()
	barrier := func(name string) filter.Filter {
		return filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
			arrived.Done()
			select {
			case <-both:
				return filter.Verdict{Headers: []filter.Header{hdr("X-"+name, "1")}}, nil
			case <-ctx.Done():
				return filter.Verdict{}, ctx.Err()
			}
		})
	}
	c, err := filter.New(
		filter.WithFilter("first", returns(filter.Verdict{Headers: []filter.Header{hdr("X-First", "1")}}, nil, nil)),
		filter.WithFilter("a", barrier("A"), filter.Group("scan"), filter.Timeout(10*time.Second)),
		filter.WithFilter("b", barrier("B"), filter.Group("scan"), filter.Timeout(10*time.Second)),
	)
	if err != nil {
		t.Fatal(err)
	}
	v := c.Run(context.Background(), testMessage())
	want := filter.Verdict{Headers: []filter.Header{hdr("X-First", "1"), hdr("X-A", "1"), hdr("X-B", "1")}}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("Run = %+v, want %+v", v, want)
	}
}

// TestGroupOrderIsDeterministic: whichever filter of a group finishes
// first, headers come in the order the filters were added and the first
// non-Accept in that order decides.
func TestGroupOrderIsDeterministic(t *testing.T) {
	release := make(chan struct{})
	slowTag := filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
		<-release
		return filter.Verdict{Headers: []filter.Header{hdr("X-Slow", "1")}}, nil
	})
	fastReject := filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
		defer close(release) // the slow one answers only after this one
		return filter.Verdict{Action: filter.Reject, Headers: []filter.Header{hdr("X-Fast", "1")}}, nil
	})
	never := 0
	c, err := filter.New(
		filter.WithFilter("slow", slowTag, filter.Group("g")),
		filter.WithFilter("fast", fastReject, filter.Group("g")),
		filter.WithFilter("after", returns(filter.Verdict{}, nil, &never)),
	)
	if err != nil {
		t.Fatal(err)
	}
	v := c.Run(context.Background(), testMessage())
	want := []filter.Header{hdr("X-Slow", "1"), hdr("X-Fast", "1")}
	if v.Action != filter.Reject || !reflect.DeepEqual(v.Headers, want) || never != 0 {
		t.Errorf("Run = %+v (after called %d times), want reject with %v", v, never, want)
	}
}

// TestConcurrencyCap: with a cap of one, a second call waits for the slot
// and gets the timeout policy when the first holds it past the timeout.
func TestConcurrencyCap(t *testing.T) {
	entered := make(chan struct{}, 4)
	release := make(chan struct{})
	var calls atomic.Int32
	held := filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
		calls.Add(1)
		entered <- struct{}{}
		<-release
		return filter.Verdict{}, nil
	})
	c, err := filter.New(filter.WithFilter("capped", held, filter.Concurrency(1),
		filter.Timeout(200*time.Millisecond), filter.OnTimeout(filter.PolicyAccept),
		filter.WithBreaker(filter.Breaker{})))
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan filter.Verdict, 1)
	go func() { first <- c.Run(context.Background(), testMessage()) }()
	<-entered
	v := c.Run(context.Background(), testMessage()) // waits for the slot the first holds
	if want := []filter.Header{hdr("X-Sluice-Filter", "capped timeout")}; !reflect.DeepEqual(v.Headers, want) {
		t.Errorf("over-cap call: %+v, want headers %v", v, want)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("filter called %d times, want 1 (the second call never got a slot)", got)
	}
	<-first // the first was abandoned at its own timeout but keeps its slot
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < 2 && time.Now().Before(deadline) {
		done := make(chan struct{})
		go func() { c.Run(context.Background(), testMessage()); close(done) }()
		select {
		case <-entered:
		case <-done:
		}
		<-done
	}
	if calls.Load() < 2 {
		t.Error("the slot was never given back after the filter returned")
	}
}

// TestPerRecipientVerdicts: at the post-queue stage each recipient gets
// the first non-Accept verdict about it; at RCPT the verdict about the
// recipient being checked is the stage's verdict.
func TestPerRecipientVerdicts(t *testing.T) {
	rej := func(addr string) filter.RecipientVerdict {
		return filter.RecipientVerdict{Address: addr, Action: filter.Reject,
			Reply: reply(550, sluice.EnhancedCode{5, 7, 1}, addr+" suppressed")}
	}
	suppress := returns(filter.Verdict{Recipients: []filter.RecipientVerdict{rej("b@example.com")}}, nil, nil)
	quota := returns(filter.Verdict{Recipients: []filter.RecipientVerdict{
		{Address: "B@example.com", Action: filter.Tempfail}, {Address: "c@example.com", Action: filter.Tempfail}}}, nil, nil)
	c, err := filter.New(
		filter.WithFilter("suppress", suppress, filter.AtStage(filter.StagePostQueue)),
		filter.WithFilter("quota", quota, filter.AtStage(filter.StagePostQueue)),
		filter.WithFilter("rcpt", suppress, filter.AtStage(filter.StageRcpt)),
	)
	if err != nil {
		t.Fatal(err)
	}
	m := testMessage()
	m.Envelope.Recipients = append(m.Envelope.Recipients, sluice.Recipient{Address: "c@example.com"})
	v := c.RunStage(context.Background(), filter.StagePostQueue, m)
	want := []filter.RecipientVerdict{rej("b@example.com"),
		{Address: "c@example.com", Action: filter.Tempfail, Reply: reply(451, sluice.EnhancedCode{4, 7, 1}, "message deferred, try again later")}}
	if v.Action != filter.Accept || !reflect.DeepEqual(v.Recipients, want) {
		t.Errorf("post-queue = %+v, want accept with %+v", v, want)
	}
	m = testMessage() // its last recipient is b@example.com
	if v := c.RunStage(context.Background(), filter.StageRcpt, m); v.Action != filter.Reject || !strings.Contains(v.Reply.Message, "suppressed") {
		t.Errorf("rcpt = %+v, want the recipient's reject", v)
	}
	m.Envelope.Recipients[0].Address = "other@example.com"
	if v := c.RunStage(context.Background(), filter.StageRcpt, m); v.Action != filter.Accept {
		t.Errorf("rcpt for another recipient = %+v, want accept", v)
	}
}

// metricValue returns the value of the one series of metric name.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		return m.GetCounter().GetValue()
	}
	t.Fatalf("metric %s with one series not found", name)
	return 0
}

// TestBreakerHalfOpenLetsOneProbeThrough: while the probe is in progress,
// other calls are not sent to the filter.
func TestBreakerHalfOpenLetsOneProbeThrough(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var calls atomic.Int32
	failing := atomic.Bool{}
	failing.Store(true)
	inProbe := make(chan struct{})
	release := make(chan struct{})
	f := filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
		calls.Add(1)
		if failing.Load() {
			return filter.Verdict{}, errors.New("down")
		}
		close(inProbe)
		<-release
		return filter.Verdict{}, nil
	})
	c, err := filter.New(filter.WithClock(clock), filter.WithFilter("f", f, filter.OnError(filter.PolicyAccept),
		filter.WithBreaker(filter.Breaker{Failures: 1, Cooldown: time.Minute})))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.Run(ctx, testMessage()) // opens
	failing.Store(false)
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	probe := make(chan filter.Verdict, 1)
	go func() { probe <- c.Run(ctx, testMessage()) }()
	<-inProbe
	for range 10 {
		if v := c.Run(ctx, testMessage()); !reflect.DeepEqual(v.Headers, []filter.Header{hdr("X-Sluice-Filter", "f open")}) {
			t.Errorf("call during the probe: %+v, want the open-breaker policy", v)
		}
	}
	close(release)
	if v := <-probe; v.Action != filter.Accept || len(v.Headers) != 0 {
		t.Errorf("probe verdict %+v, want a clean accept", v)
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("filter called %d times, want 2 (the failure and the probe)", got)
	}
}

// bestOf runs f up to n times and returns the first duration within bound,
// or the shortest: a deadline that works is met at least once on a busy
// machine, a broken one never is.
func bestOf(n int, bound time.Duration, f func() time.Duration) time.Duration {
	best := time.Duration(1<<63 - 1)
	for range n {
		d := f()
		best = min(best, d)
		if d <= bound {
			break
		}
	}
	return best
}
