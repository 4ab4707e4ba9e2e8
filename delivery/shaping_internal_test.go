package delivery

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

func TestAdaptiveWindow(t *testing.T) {
	now := time.Unix(0, 0)
	d := newDestination("d", nil, Shaping{Concurrency: 4, InitialConcurrency: 2, MaxPerConnection: 1, ParkAfter: 100, ParkFor: time.Minute, ParkMax: time.Hour},
		func() time.Time { return now }, new(atomic.Bool))
	window := func() int { w, _, _ := d.state(); return w }
	steps := []struct {
		name string
		do   func()
		want int
	}{
		{"start", func() {}, 2},
		{"one success is half a window of feedback", d.success, 2},
		{"a window's worth of successes grows it", d.success, 3},
		{"three more", func() { d.success(); d.success(); d.success() }, 4},
		{"never above the cap", func() {
			for range 10 {
				d.success()
			}
		}, 4},
		{"a 421 shrinks it", func() { d.failure() }, 3},
		{"one success does not undo it (hysteresis)", d.success, 3},
		{"never below 1", func() {
			for range 10 {
				d.failure()
			}
		}, 1},
	}
	for _, s := range steps {
		s.do()
		if got := window(); got != s.want {
			t.Errorf("%s: window %d, want %d", s.name, got, s.want)
		}
	}
}

func TestParkAndProbe(t *testing.T) {
	now := time.Unix(0, 0)
	d := newDestination("d", nil, Shaping{Concurrency: 2, InitialConcurrency: 2, MaxPerConnection: 1, ParkAfter: 2, ParkFor: time.Minute, ParkMax: 3 * time.Minute},
		func() time.Time { return now }, new(atomic.Bool))
	ctx := context.Background()
	fail := func() {
		l, err := d.acquire(ctx)
		if err != nil {
			t.Fatalf("acquire: %v", err)
		}
		d.failure()
		l.release(nil, false)
	}
	parked := func() bool {
		_, err := d.acquire(ctx)
		var p *errParked
		return errors.As(err, &p)
	}
	fail()
	if parked() {
		t.Fatal("parked after 1 failure, want after 2")
	}
	// parked() acquired a slot above; give it back.
	d.mu.Lock()
	d.open--
	d.mu.Unlock()
	fail()
	if !parked() {
		t.Fatal("not parked after 2 failures")
	}
	for _, step := range []struct {
		advance time.Duration
		probeOK bool
	}{{time.Minute, false}, {2 * time.Minute, false}, {3 * time.Minute, true}} {
		now = now.Add(step.advance - time.Second)
		if !parked() {
			t.Fatalf("unparked a second before the %v park ends", step.advance)
		}
		now = now.Add(time.Second)
		l, err := d.acquire(ctx)
		if err != nil || !l.probe {
			t.Fatalf("after %v: got %v, want a probe", step.advance, err)
		}
		if !parked() {
			t.Error("a second session was allowed while the probe runs")
		}
		if step.probeOK {
			d.success()
		} else {
			d.failure()
		}
		l.release(nil, false)
	}
	if _, _, p := d.state(); p {
		t.Error("still parked after a successful probe")
	}
}

func TestSuspectHostsGoLastAmongEquals(t *testing.T) {
	now := time.Unix(0, 0)
	a := &Agent{shaper: newShaper(Shaping{}, nil, time.Minute, func() time.Time { return now })}
	a.cfg.timeouts.Greeting = 400 * time.Millisecond
	ap := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	hops := []hop{{"a", ap("192.0.2.1:25"), 10}, {"b", ap("192.0.2.2:25"), 10}, {"c", ap("192.0.2.3:25"), 20}, {"d", ap("192.0.2.4:25"), 20}}
	done := a.shaper.beginOpen(hops[0].addr) // a waits for its greeting
	names := func() string {
		var s string
		for _, h := range a.liveHops(hops) {
			s += h.name
		}
		return s
	}
	if got := names(); got != "abcd" {
		t.Errorf("fresh open: order %s, want abcd", got)
	}
	now = now.Add(101 * time.Millisecond)
	if got := names(); got != "bacd" {
		t.Errorf("open waiting past a quarter of the greeting timeout: order %s, want bacd (never after c)", got)
	}
	done()
	if got := names(); got != "abcd" {
		t.Errorf("after the greeting: order %s, want abcd", got)
	}
}

func TestBackoffProfileEnds(t *testing.T) {
	now := time.Unix(0, 0)
	base := Shaping{Concurrency: 4, InitialConcurrency: 4, MessageRate: 100, MaxPerConnection: 1, ParkAfter: 10, ParkFor: time.Minute, ParkMax: time.Hour}
	d := newDestination("d", nil, base, func() time.Time { return now }, new(atomic.Bool))
	d.backoff(Shaping{Concurrency: 1, MessageRate: 0.5}, now.Add(10*time.Minute))
	if got := d.limits(); got.Concurrency != 1 || got.MessageRate != 0.5 || got.ParkAfter != 10 {
		t.Errorf("during the backoff: limits %+v, want the profile over the base", got)
	}
	if w, _, _ := d.state(); w != 1 {
		t.Errorf("during the backoff: window %d, want 1", w)
	}
	if got := float64(d.msgs.Limit()); got != 0.5 {
		t.Errorf("during the backoff: message rate %v, want 0.5", got)
	}
	now = now.Add(10 * time.Minute)
	if got := d.limits(); got != base {
		t.Errorf("after the backoff: limits %+v, want %+v", got, base)
	}
	if got := float64(d.msgs.Limit()); got != 100 {
		t.Errorf("after the backoff: message rate %v, want 100", got)
	}
	// The window grows back by feedback, not at once.
	d.success()
	if w, _, _ := d.state(); w != 2 {
		t.Errorf("after the backoff and one success: window %d, want 2", w)
	}
}
