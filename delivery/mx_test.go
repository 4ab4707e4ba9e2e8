package delivery_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestDNSCacheHonoursTTL(t *testing.T) {
	sink := newSink(t)
	srv := newDNS(t,
		"ttl.test. 60 IN MX 10 mx.ttl.test.",
		"mx.ttl.test. 300 IN A 127.0.0.1",
	)
	clock := newFakeClock()
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())),
		delivery.WithClock(clock.Now), delivery.WithNegativeTTL(600*time.Second))
	send := func() sluice.Outcome {
		return deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@ttl.test"))[0].Outcome
	}
	steps := []struct {
		name    string
		advance time.Duration
		queries int // new queries the attempt must make
	}{
		{"cold cache: MX, A and AAAA", 0, 3},
		{"all fresh", 59 * time.Second, 0},
		{"MX expired (60s), A and the empty AAAA still fresh", 2 * time.Second, 1},
		{"MX (fetched at 61s) and A (300s) expired, the AAAA no-data answer fresh", 240 * time.Second, 2},
		{"everything expired", 600 * time.Second, 3},
	}
	for _, s := range steps {
		clock.Advance(s.advance)
		before := srv.Queries()
		if got := send(); got != sluice.OutcomeDelivered {
			t.Fatalf("%s: got %v, want delivered", s.name, got)
		}
		if got := srv.Queries() - before; got != s.queries {
			t.Errorf("%s: server got %d queries, want %d", s.name, got, s.queries)
		}
	}
}

func TestDNSCacheSeesChangeAfterExpiry(t *testing.T) {
	sink := newSink(t)
	srv := newDNS(t, "move.test. 30 IN MX 10 old.move.test.", "old.move.test. 30 IN A 127.0.0.1",
		"new.move.test. 30 IN A 127.0.0.1")
	clock := newFakeClock()
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())), delivery.WithClock(clock.Now))
	relay := func() any {
		deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@move.test"))
		recs := e.logs.records(t, "delivery")
		return recs[len(recs)-1]["relay"]
	}
	if got := relay(); got != "old.move.test" {
		t.Fatalf("relay %v, want old.move.test", got)
	}
	srv.Remove("move.test", dns.TypeMX)
	if err := srv.Add("move.test. 30 IN MX 10 new.move.test."); err != nil {
		t.Fatal(err)
	}
	if got := relay(); got != "old.move.test" {
		t.Errorf("within the TTL: relay %v, want the cached old.move.test", got)
	}
	clock.Advance(31 * time.Second)
	if got := relay(); got != "new.move.test" {
		t.Errorf("after the TTL: relay %v, want new.move.test", got)
	}
}

func TestDNSNegativeCaching(t *testing.T) {
	srv := newDNS(t, "nodata.test. 60 IN TXT \"x\"", "flaky.test. 60 IN A 127.0.0.1")
	srv.SetRcode("flaky.test", dns.RcodeServerFailure)
	tests := []struct {
		domain      string
		want        sluice.Outcome
		perAttempt  []int // new queries of attempts 1, 2, and 3 (after the negative TTL)
		description string
	}{
		{"nx.test", sluice.OutcomeBounced, []int{1, 0, 1}, "NXDOMAIN cached for the negative TTL"},
		// MX no-data -> implicit MX -> A and AAAA no-data.
		{"nodata.test", sluice.OutcomeBounced, []int{3, 0, 3}, "NODATA cached for the negative TTL"},
		{"flaky.test", sluice.OutcomeDeferred, []int{1, 1, 1}, "SERVFAIL never cached"},
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			clock := newFakeClock()
			e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithClock(clock.Now),
				delivery.WithNegativeTTL(30*time.Second))
			for i, want := range tt.perAttempt {
				if i == 2 {
					clock.Advance(31 * time.Second)
				}
				before := srv.Queries()
				r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@"+tt.domain))[0]
				if r.Outcome != tt.want {
					t.Fatalf("attempt %d: got %v %v, want %v", i+1, r.Outcome, r.Reply, tt.want)
				}
				if got := srv.Queries() - before; got != want {
					t.Errorf("%s: attempt %d made %d queries, want %d", tt.description, i+1, got, want)
				}
			}
		})
	}
}

func TestDNSCacheDisabled(t *testing.T) {
	srv := newDNS(t)
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithDNSCache(0))
	for range 2 {
		deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@nx.test"))
	}
	if got := srv.Queries(); got != 2 {
		t.Errorf("server got %d queries, want 2 with the cache off", got)
	}
}

func TestEqualPreferenceRandomised(t *testing.T) {
	sink := newSink(t)
	srv := newDNS(t,
		"eq.test. 60 IN MX 10 a.eq.test.",
		"eq.test. 60 IN MX 10 b.eq.test.",
		"eq.test. 60 IN MX 20 c.eq.test.",
		"a.eq.test. 60 IN A 127.0.0.1",
		"b.eq.test. 60 IN A 127.0.0.1",
		"c.eq.test. 60 IN A 127.0.0.1",
	)
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())))
	seen := map[any]int{}
	// The chance that 40 attempts all pick the same host is 2^-39.
	for range 40 {
		deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@eq.test"))
	}
	for _, r := range e.logs.records(t, "delivery") {
		seen[r["relay"]]++
	}
	if seen["a.eq.test"] == 0 || seen["b.eq.test"] == 0 || seen["c.eq.test"] != 0 {
		t.Errorf("relays used %v, want both preference-10 hosts and never the preference-20 one", seen)
	}
}

// recordingDialer records the addresses it is asked to dial.
type recordingDialer struct {
	mu    sync.Mutex
	addrs []string
}

func (d *recordingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, addr)
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func TestMaxHostsCapsAttempt(t *testing.T) {
	var records []string
	for i := range 5 {
		records = append(records,
			fmt.Sprintf("many.test. 60 IN MX %d mx%d.many.test.", 10*(i+1), i),
			// Nothing listens on port 9 of these: every connection is refused.
			fmt.Sprintf("mx%d.many.test. 60 IN A 127.0.0.%d", i, i+2))
	}
	srv := newDNS(t, records...)
	d := &recordingDialer{}
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(9),
		delivery.WithMaxHosts(2), delivery.WithDialer(d.dial))
	r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@many.test"))[0]
	if r.Outcome != sluice.OutcomeDeferred {
		t.Errorf("got %v %v, want deferred", r.Outcome, r.Reply)
	}
	want := []string{"127.0.0.2:9", "127.0.0.3:9"}
	if fmt.Sprint(d.addrs) != fmt.Sprint(want) {
		t.Errorf("dialed %v, want %v (the two most preferred hosts only)", d.addrs, want)
	}
}
