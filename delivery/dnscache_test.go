package delivery_test

import (
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
)

// The cache tests count the queries the DNS server receives while an
// injected clock moves past the TTLs.

func TestDNSCacheHonoursTTL(t *testing.T) {
	sink := newSink(t)
	srv := newDNS(t,
		"ttl.test. 60 IN MX 10 mx.ttl.test.",
		"mx.ttl.test. 300 IN A 127.0.0.1",
	)
	clk := newClock()
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())), delivery.WithClock(clk.Now))
	send := func() {
		t.Helper()
		if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@ttl.test"))[0]; r.Outcome != sluice.OutcomeDelivered {
			t.Fatalf("got %v %v, want delivered", r.Outcome, r.Reply)
		}
	}
	send()
	first := srv.Queries() // MX, A and AAAA
	if first != 3 {
		t.Fatalf("first attempt made %d queries, want 3 (MX, A, AAAA)", first)
	}
	send()
	if got := srv.Queries(); got != first {
		t.Errorf("second attempt within the TTL made %d queries, want 0", got-first)
	}
	clk.Advance(61 * time.Second) // past the MX TTL, not the A TTL
	send()
	if got := srv.Queries() - first; got != 1 {
		t.Errorf("attempt after the MX TTL made %d queries, want 1 (MX only)", got)
	}
	clk.Advance(300 * time.Second)
	send()
	if got := srv.Queries() - first; got != 4 {
		t.Errorf("attempt after every TTL made %d queries in all, want 4", got)
	}
}

func TestDNSNegativeCaching(t *testing.T) {
	sink := newSink(t)
	srv := newDNS(t,
		// RFC 2308: the negative TTL is min(SOA TTL, SOA MINIMUM) = 30s.
		"neg.test. 3600 IN SOA ns.neg.test. admin.neg.test. 1 3600 600 86400 30",
		"implicit.neg.test. 600 IN A 127.0.0.1",
		"implicit.neg.test. 600 IN AAAA ::1",
	)
	clk := newClock()
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())), delivery.WithClock(clk.Now))
	tests := []struct {
		name     string
		to       string
		want     sluice.Outcome
		queries  int // on a cold cache
		advance  time.Duration
		requery  int // after advance
		describe string
	}{
		{"NXDOMAIN", "b@missing.neg.test", sluice.OutcomeBounced, 1, 31 * time.Second, 1, "MX NXDOMAIN cached for the SOA minimum"},
		{"NODATA", "b@implicit.neg.test", sluice.OutcomeDelivered, 3, 31 * time.Second, 1, "MX NODATA cached for the SOA minimum, A/AAAA for their TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := srv.Queries()
			for i := range 2 {
				r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", tt.to))[0]
				if r.Outcome != tt.want {
					t.Fatalf("attempt %d: got %v %v, want %v", i, r.Outcome, r.Reply, tt.want)
				}
			}
			if got := srv.Queries() - before; got != tt.queries {
				t.Errorf("two attempts made %d queries, want %d (%s)", got, tt.queries, tt.describe)
			}
			clk.Advance(tt.advance)
			before = srv.Queries()
			deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", tt.to))
			if got := srv.Queries() - before; got != tt.requery {
				t.Errorf("after %v: %d queries, want %d", tt.advance, got, tt.requery)
			}
		})
	}
}

func TestDNSFailureIsNotCached(t *testing.T) {
	srv := newDNS(t, "flaky.test. 60 IN A 127.0.0.1")
	srv.Hang("flaky.test")
	clk := newClock()
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithClock(clk.Now))
	for i := range 2 {
		start := time.Now()
		r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@flaky.test"))[0]
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("attempt %d took %v with a 200ms DNS timeout", i, d)
		}
		if r.Outcome != sluice.OutcomeDeferred || r.Reply.Enhanced.String() != "4.4.3" {
			t.Errorf("attempt %d: got %v %v, want deferred 4.4.3", i, r.Outcome, r.Reply)
		}
	}
	if got := srv.Queries(); got != 2 {
		t.Errorf("two attempts made %d queries, want 2: a timeout must not be cached", got)
	}
}

func TestDNSCacheDisabled(t *testing.T) {
	sink := newSink(t)
	srv := newDNS(t, "nocache.test. 60 IN A 127.0.0.1")
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())), delivery.WithDNSCache(0))
	for range 2 {
		deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@nocache.test"))
	}
	if got := srv.Queries(); got != 6 {
		t.Errorf("two attempts without a cache made %d queries, want 6", got)
	}
}
