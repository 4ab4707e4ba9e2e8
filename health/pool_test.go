package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice/internal/blackhole"
)

// fastProbes makes probes quick enough for tests.
func fastProbes(rise, fall int, onChange func(string, bool, error)) PoolOption {
	return WithProbeOptions(WithProbeInterval(10*time.Millisecond), WithProbeDeadline(200*time.Millisecond),
		WithRise(rise), WithFall(fall), WithProbeOnChange(onChange))
}

// TestPoolEjectsAndTakesBack: a replica that starts hanging is ejected by
// its probe, gets no traffic while down, and is taken back after exactly
// rise successful probes.
func TestPoolEjectsAndTakesBack(t *testing.T) {
	const rise, fall = 3, 2
	a, b := newPingServer(t, "tcp"), newPingServer(t, "tcp")
	type event struct {
		addr  string
		up    bool
		pongs int64
	}
	events := make(chan event, 8)
	reg := prometheus.NewRegistry()
	var logs syncBuffer
	p, err := NewPool("spamd", []string{a.addr, b.addr}, SpamdPing(), WithPoolRegisterer(reg),
		WithPoolLogger(slog.New(slog.NewTextHandler(&logs, nil))),
		fastProbes(rise, fall, func(addr string, up bool, _ error) { events <- event{addr, up, b.pongs.Load()} }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	b.setHung(true)
	ev := next(t, events)
	if ev.addr != b.addr || ev.up {
		t.Fatalf("first transition %+v, want %s down", ev, b.addr)
	}
	if got := upGauge(t, reg, b.addr); got != 0 {
		t.Errorf("sluice_pool_endpoint_up{endpoint=%s} = %v, want 0", b.addr, got)
	}
	for range 50 {
		addr, err := p.Pick()
		if err != nil || addr != a.addr {
			t.Fatalf("Pick with %s down = %q, %v; want %s", b.addr, addr, err, a.addr)
		}
		p.Done(addr, nil)
	}

	pongsWhenDown := b.pongs.Load()
	b.setHung(false)
	ev = next(t, events)
	if ev.addr != b.addr || !ev.up || ev.pongs-pongsWhenDown != rise {
		t.Fatalf("got %+v, want %s up after %d PONGs", ev, b.addr, rise)
	}
	if got := upGauge(t, reg, b.addr); got != 1 {
		t.Errorf("sluice_pool_endpoint_up{endpoint=%s} = %v, want 1", b.addr, got)
	}
	picked := map[string]int{}
	for range 200 {
		addr, err := p.Pick()
		if err != nil {
			t.Fatal(err)
		}
		picked[addr]++
		p.Done(addr, nil)
	}
	if picked[a.addr] == 0 || picked[b.addr] == 0 {
		t.Errorf("picks after recovery %v, want both replicas", picked)
	}
	for _, want := range []string{"endpoint down", "endpoint up", "pool=spamd", "endpoint=" + b.addr} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestPoolFirstCheck: a pool checks its replicas before it returns, so a
// replica dead or hung at start never gets a request, and a healthy one
// is up at once.
func TestPoolFirstCheck(t *testing.T) {
	healthy, dead, hung := newPingServer(t, "tcp").addr, closedPort(t), blackhole.Start(t, "127.0.0.1:0")
	start := time.Now()
	p, err := NewPool("spamd", []string{dead, hung, healthy}, SpamdPing(), WithStrategy(OrderedFailover),
		WithProbeOptions(WithProbeDeadline(300*time.Millisecond), WithProbeInterval(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("NewPool took %v, want about the probe deadline", took)
	}
	st := p.Endpoints()
	if st[0].Up || st[1].Up || !st[2].Up {
		t.Errorf("states after NewPool: %+v, want dead and hung down, healthy up", st)
	}
	for range 10 {
		if addr, err := p.Pick(); err != nil || addr != healthy {
			t.Fatalf("Pick = %s, %v; want only %s", addr, err, healthy)
		}
	}
}

// TestPoolDeadReplica: a replica whose port is closed is ejected by the
// errors of real traffic (before its probe's fall count), and traffic
// continues on the healthy one.
func TestPoolDeadReplica(t *testing.T) {
	healthy, dead := newPingServer(t, "tcp").addr, closedPort(t)
	const ejectAfter = 2
	p, err := NewPool("spamd", []string{dead, healthy}, SpamdPing(), WithStrategy(OrderedFailover), WithFirstCheck(false),
		WithEjectAfter(ejectAfter), WithProbeOptions(WithFall(1000), WithProbeInterval(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	var failed, served int
	for range 20 {
		addr, err := p.Pick()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = SpamdPing()(ctx, addr) // the "request": any spamd exchange
		cancel()
		p.Done(addr, err)
		if err != nil {
			failed++
			continue
		}
		if addr != healthy {
			t.Fatalf("served by %s, want %s", addr, healthy)
		}
		served++
	}
	if failed != ejectAfter || served != 20-ejectAfter {
		t.Errorf("%d failed, %d served; want %d failed before the ejection", failed, served, ejectAfter)
	}
	st := p.Endpoints()
	if st[0].Up || st[0].Err == nil || !strings.Contains(st[0].Err.Error(), "ejected after 2 consecutive request errors") {
		t.Errorf("dead replica state %+v, want ejected", st[0])
	}
	if !st[1].Up {
		t.Errorf("healthy replica state %+v, want up", st[1])
	}
	if err := p.Check(context.Background()); err != nil {
		t.Errorf("pool Check with one replica up = %v", err)
	}
}

// staticPool is a pool whose probes always pass, for strategy tests.
func staticPool(t *testing.T, s Strategy, addrs ...string) *Pool {
	t.Helper()
	ok := func(context.Context, string) error { return nil }
	p, err := NewPool("test", addrs, ok, WithStrategy(s), WithEjectAfter(1), WithProbeOptions(WithProbeInterval(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestPoolStrategies(t *testing.T) {
	addrs := []string{"a:1", "b:1", "c:1"}
	t.Run("ordered failover", func(t *testing.T) {
		p := staticPool(t, OrderedFailover, addrs...)
		for i, want := range []string{"a:1", "a:1", "b:1", "c:1"} {
			got, err := p.Pick()
			if err != nil || got != want {
				t.Fatalf("pick %d = %q, %v; want %s", i, got, err, want)
			}
			if i >= 1 {
				p.Done(got, errors.New("refused")) // eject after 1
			} else {
				p.Done(got, nil)
			}
		}
		if _, err := p.Pick(); !errors.Is(err, ErrNoEndpoint) {
			t.Errorf("Pick with all ejected: err = %v, want ErrNoEndpoint", err)
		}
		if err := p.Check(context.Background()); !errors.Is(err, ErrNoEndpoint) {
			t.Errorf("Check with all ejected: err = %v, want ErrNoEndpoint", err)
		}
	})
	t.Run("random", func(t *testing.T) {
		p := staticPool(t, Random, addrs...)
		seen := map[string]int{}
		for range 300 {
			got, _ := p.Pick()
			seen[got]++
			p.Done(got, nil)
		}
		for _, a := range addrs {
			if seen[a] < 50 {
				t.Errorf("%s picked %d times of 300: %v", a, seen[a], seen)
			}
		}
	})
	t.Run("least outstanding", func(t *testing.T) {
		p := staticPool(t, LeastOutstanding, addrs...)
		held := map[string]int{}
		for range 6 { // never Done: two each
			got, _ := p.Pick()
			held[got]++
		}
		for _, a := range addrs {
			if held[a] != 2 {
				t.Fatalf("outstanding %v, want 2 each", held)
			}
		}
		p.Done("b:1", nil)
		if got, _ := p.Pick(); got != "b:1" {
			t.Errorf("Pick = %s, want b:1 (fewest outstanding)", got)
		}
	})
	t.Run("exclude", func(t *testing.T) {
		p := staticPool(t, OrderedFailover, addrs...)
		if got, _ := p.Pick("a:1"); got != "b:1" {
			t.Errorf("Pick excluding a:1 = %s, want b:1", got)
		}
		if _, err := p.Pick(addrs...); !errors.Is(err, ErrNoEndpoint) {
			t.Errorf("Pick excluding all: err = %v", err)
		}
	})
}

func TestPoolCanceledIsNotAFailure(t *testing.T) {
	p := staticPool(t, OrderedFailover, "a:1", "b:1")
	for range 5 {
		addr, _ := p.Pick()
		p.Done(addr, fmt.Errorf("spamd: read: %w", context.Canceled))
	}
	if st := p.Endpoints(); !st[0].Up || st[0].Outstanding != 0 {
		t.Errorf("after cancelled requests: %+v, want up with none outstanding", st[0])
	}
	addr, _ := p.Pick()
	p.Done(addr, fmt.Errorf("spamd: read: %w", context.DeadlineExceeded))
	if st := p.Endpoints(); st[0].Up {
		t.Error("a timed-out request did not count as a failure")
	}
}

func TestPoolsShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	ok := func(context.Context, string) error { return nil }
	p1, err := NewPool("one", []string{"a:1"}, ok, WithPoolRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	p2, err := NewPool("two", []string{"a:1"}, ok, WithPoolRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	if n := seriesCount(t, reg, "sluice_pool_endpoint_up"); n != 2 {
		t.Errorf("%d up series, want 2", n)
	}
	p1.Close()
	p2.Close()
	if n := seriesCount(t, reg, "sluice_pool_endpoint_up"); n != 0 {
		t.Errorf("%d up series after Close, want 0", n)
	}
}

func TestNewPoolRejectsBadArguments(t *testing.T) {
	ok := ProbeFunc(func(context.Context, string) error { return nil })
	tests := []struct {
		name  string
		pool  string
		addrs []string
		check ProbeFunc
		opts  []PoolOption
	}{
		{"no name", "", []string{"a:1"}, ok, nil},
		{"no endpoints", "p", nil, ok, nil},
		{"repeated endpoint", "p", []string{"a:1", "a:1"}, ok, nil},
		{"no probe", "p", []string{"a:1"}, nil, nil},
		{"bad strategy", "p", []string{"a:1"}, ok, []PoolOption{WithStrategy(Strategy(9))}},
		{"bad eject", "p", []string{"a:1"}, ok, []PoolOption{WithEjectAfter(0)}},
		{"bad probe option", "p", []string{"a:1"}, ok, []PoolOption{WithProbeOptions(WithRise(0))}},
	}
	for _, tc := range tests {
		if _, err := NewPool(tc.pool, tc.addrs, tc.check, tc.opts...); err == nil || !strings.HasPrefix(err.Error(), "health: pool") {
			t.Errorf("%s: err = %v, want a health: pool error", tc.name, err)
		}
	}
}

func upGauge(t *testing.T, reg *prometheus.Registry, addr string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_pool_endpoint_up" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "endpoint" && l.GetValue() == addr {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no sluice_pool_endpoint_up series for %s", addr)
	return 0
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var _ io.Writer = (*syncBuffer)(nil)

func seriesCount(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}

// TestPoolCloseStopsProbes: Close abandons checks in progress (here, ones
// that hang until their context ends) and leaves no goroutine behind.
func TestPoolCloseStopsProbes(t *testing.T) {
	before := runtime.NumGoroutine()
	started := make(chan struct{}, 5)
	hang := func(ctx context.Context, _ string) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}
	p, err := NewPool("hung", []string{"a:1", "b:1", "c:1", "d:1", "e:1"}, hang, WithFirstCheck(false), WithProbeOptions(WithProbeDeadline(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		next(t, started)
	}
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	next(t, closed)
	waitFor(t, "the probes' goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	if st := p.Endpoints(); !st[0].Up {
		t.Error("an abandoned check counted as a failure")
	}
}

func TestTry(t *testing.T) {
	errDial, errProto := errors.New("refused"), errors.New("bad answer")
	retry := func(err error) bool { return errors.Is(err, errDial) }
	tests := []struct {
		name     string
		attempts int
		fail     map[string]error
		want     string
		wantErr  string
	}{
		{"first answers", 2, nil, "a:1", ""},
		{"unreachable: the next one", 2, map[string]error{"a:1": errDial}, "b:1", ""},
		{"attempts bound the tries", 2, map[string]error{"a:1": errDial, "b:1": errDial}, "", "b:1: refused"},
		{"a bad answer is not retried", 3, map[string]error{"a:1": errProto}, "", "a:1: bad answer"},
	}
	for _, tc := range tests {
		p := staticPool(t, OrderedFailover, "a:1", "b:1", "c:1") // a failure ejects: one pool per case
		var tried []string
		got, err := Try(context.Background(), p, tc.attempts, retry, func(addr string) (string, error) {
			tried = append(tried, addr)
			return addr, tc.fail[addr]
		})
		if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && err.Error() != tc.wantErr) {
			t.Errorf("%s: Try = %q, %v (tried %v); want %q, %q", tc.name, got, err, tried, tc.want, tc.wantErr)
		}
	}
}
