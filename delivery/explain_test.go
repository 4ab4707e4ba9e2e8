package delivery_test

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/delivery"
)

func TestExplain(t *testing.T) {
	srv := newDNS(t,
		"ex.test. 60 IN MX 10 mx1.ex.test.", "ex.test. 60 IN MX 20 mx2.ex.test.",
		"mx1.ex.test. 60 IN A 127.0.0.1", "mx2.ex.test. 60 IN A 127.0.0.2",
		"nullmx.test. 60 IN MX 0 .")
	routes, err := delivery.NewRoutes([]delivery.Pool{
		{Name: "relays", Hosts: []delivery.PoolHost{{Addr: "127.0.0.9:2525"}}, TLS: delivery.TLSRequired},
		{Name: "slow", Hosts: []delivery.PoolHost{{Addr: "127.0.0.10:2525"}}},
	}, []delivery.Route{
		{Domain: ".corp.test", Pool: "relays", Fallback: "slow"},
		{Domain: "ex.test", Egress: delivery.Egress{SourceIP: netip.MustParseAddr("127.0.0.3"), Helo: "out2.test"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(2525), delivery.WithRoutes(routes),
		delivery.WithClock(clk.Now), delivery.WithShaping(delivery.Shaping{Concurrency: 7, InitialConcurrency: 3}),
		delivery.WithShapingRules(delivery.ShapingRule{Match: "pool:relays", Shaping: delivery.Shaping{Concurrency: 2, MessageRate: 5}}))
	ctx := context.Background()

	x, err := e.agent.Explain(ctx, "Ann@ex.test", "me@x.test")
	if err != nil {
		t.Fatal(err)
	}
	if x.Route != "mx" || x.RouteDomain != "ex.test" || x.SourceIP != "127.0.0.3" || x.Helo != "out2.test" ||
		x.Destination != "ex.test" || x.TLS != "opportunistic" || x.Error != "" {
		t.Errorf("MX route: %+v", x)
	}
	if len(x.Hops) != 2 || x.Hops[0].Address != "127.0.0.1:2525" || x.Hops[1].Name != "mx2.ex.test" || x.Hops[1].Preference != 20 {
		t.Errorf("MX hops: %+v", x.Hops)
	}
	if x.Limits.Concurrency != 7 || x.State.Window != 3 || !x.State.ParkedUntil.IsZero() {
		t.Errorf("MX limits %+v, state %+v", x.Limits, x.State)
	}

	x, err = e.agent.Explain(ctx, "bob@hq.corp.test", "")
	if err != nil {
		t.Fatal(err)
	}
	if x.Route != "pool:relays" || x.Fallback != "slow" || x.TLS != "required" || x.Destination != "pool:relays" ||
		x.Limits.Concurrency != 2 || x.Limits.MessageRate != 5 || len(x.Hops) != 1 || x.Hops[0].Address != "127.0.0.9:2525" {
		t.Errorf("pool route: %+v", x)
	}

	x, err = e.agent.Explain(ctx, "c@nullmx.test", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(x.Error, "556 5.1.10") || len(x.Hops) != 0 {
		t.Errorf("null MX: error %q, hops %+v", x.Error, x.Hops)
	}

	if _, err := e.agent.Explain(ctx, "not an address", ""); err == nil {
		t.Error("Explain accepted a bad address")
	}
}

// A suspension by a reply rule shows in the explanation, with its reason
// and end.
func TestExplainShowsSuspension(t *testing.T) {
	addr, _ := fakeServer(t, "127.0.0.1:0", func(c net.Conn, r *bufio.Reader) {
		converse(c, r, "421 4.7.0 blocked for abuse", "")
	})
	clk := newClock()
	e := newAgent(t, delivery.WithSmarthost(addr), delivery.WithClock(clk.Now),
		delivery.WithReplyRules(delivery.ReplyRule{Name: "abuse", Match: regexp.MustCompile("abuse"), Action: delivery.ReplySuspend, For: time.Hour}))
	deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "a@y.test"))
	x, err := e.agent.Explain(context.Background(), "a@y.test", "")
	if err != nil {
		t.Fatal(err)
	}
	if !x.State.ParkedUntil.Equal(clk.Now().Add(time.Hour)) || x.State.ParkedWhy != "by reply rule abuse" {
		t.Errorf("state %+v, want parked an hour by reply rule abuse", x.State)
	}
}
