package delivery_test

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/internal/blackhole"
)

// A pool host that accepts connections and never greets is found by the
// pool's probes and tried last: mail goes to the healthy host without a
// session with the hung one (seed 000), and comes back to it when it
// answers again.
func TestPoolProbesSkipHungHost(t *testing.T) {
	hung := blackhole.Start(t, "127.0.0.1:0")
	sink := newSink(t)
	routes, err := delivery.NewRoutes([]delivery.Pool{{
		Name: "relays", Hosts: []delivery.PoolHost{{Addr: hung}, {Addr: sink.Addr()}},
		ProbeInterval: 20 * time.Millisecond,
	}}, []delivery.Route{{Domain: "*", Pool: "relays"}})
	if err != nil {
		t.Fatal(err)
	}
	e := newAgent(t, delivery.WithRoutes(routes), delivery.WithDeadHostTime(0),
		delivery.WithTimeouts(delivery.Timeouts{Greeting: 2 * time.Second}))
	eventually(t, "the probes to mark the hung host down", func() bool {
		x, err := e.agent.Explain(context.Background(), "a@y.test", "")
		return err == nil && len(x.Hops) == 2 && x.Hops[0].Address == sink.Addr() && x.Hops[1].Down
	})
	start := time.Now()
	r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "a@y.test"))[0]
	if r.Outcome != sluice.OutcomeDelivered {
		t.Fatalf("got %v %v, want delivered by the healthy host", r.Outcome, r.Reply)
	}
	// Trying the hung host first would have cost its 2s greeting timeout
	// and a "next hop failed" record.
	if took := time.Since(start); took > time.Second {
		t.Errorf("delivery took %v, want no wait for the hung host", took)
	}
	if recs := e.logs.records(t, "next hop failed"); len(recs) != 0 {
		t.Errorf("a session was tried with the hung host: %v", recs)
	}
	down := e.logs.records(t, "endpoint down")
	if len(down) != 1 || down[0]["endpoint"] != hung {
		t.Errorf("probe log records %v, want one \"endpoint down\" for %s", down, hung)
	}
}

// Probes follow the routes table: a table without them stops them.
func TestPoolProbesFollowRoutes(t *testing.T) {
	addr, sessions := fakeServer(t, "127.0.0.1:0", func(c net.Conn, r *bufio.Reader) {
		converse(c, r, "220 relay.test ESMTP", "250 relay.test", "221 bye")
	})
	routes, err := delivery.NewRoutes([]delivery.Pool{{
		Name: "relays", Hosts: []delivery.PoolHost{{Addr: addr}}, ProbeInterval: 10 * time.Millisecond,
	}}, []delivery.Route{{Domain: "*", Pool: "relays"}})
	if err != nil {
		t.Fatal(err)
	}
	e := newAgent(t, delivery.WithRoutes(routes))
	eventually(t, "probe sessions", func() bool { return sessions.Load() >= 3 })
	e.agent.SetRoutes(nil)
	n := sessions.Load()
	time.Sleep(100 * time.Millisecond) // ten probe intervals: no event to wait for
	if got := sessions.Load(); got > n+1 {
		t.Errorf("%d probe sessions after the routes changed, want none (or one in flight)", got-n)
	}
	if _, err := delivery.NewRoutes([]delivery.Pool{{Name: "p", Hosts: []delivery.PoolHost{{Addr: addr}}, ProbeInterval: -1}}, nil); err == nil {
		t.Error("NewRoutes accepted a negative probe interval")
	}
}
