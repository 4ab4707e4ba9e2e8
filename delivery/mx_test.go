package delivery_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
)

func TestMXRouting(t *testing.T) {
	sink := newSink(t)
	p := port(t, sink.Addr())
	srv := newDNS(t,
		// 127.0.0.2 has nothing listening on the sink's port: the first
		// host fails and the second one is used.
		"pref.test. 60 IN MX 10 down.pref.test.",
		"pref.test. 60 IN MX 20 up.pref.test.",
		"down.pref.test. 60 IN A 127.0.0.2",
		"up.pref.test. 60 IN A 127.0.0.1",
		"nullmx.test. 60 IN MX 0 .",
		"implicit.test. 60 IN A 127.0.0.1",
		"servfail.test. 60 IN A 127.0.0.1",
		"hang.test. 60 IN A 127.0.0.1",
		"noaddr.test. 60 IN TXT \"v=spf1 -all\"",
	)
	srv.SetRcode("servfail.test", dns.RcodeServerFailure)
	srv.Hang("hang.test")
	tests := []struct {
		domain   string
		want     sluice.Outcome
		code     int
		enhanced string
		relay    string
	}{
		{"pref.test", sluice.OutcomeDelivered, 250, "2.0.0", "up.pref.test"},
		{"implicit.test", sluice.OutcomeDelivered, 250, "2.0.0", "implicit.test"},
		{"[127.0.0.1]", sluice.OutcomeDelivered, 250, "2.0.0", "[127.0.0.1]"},
		{"nullmx.test", sluice.OutcomeBounced, 556, "5.1.10", ""},
		{"nxdomain.test", sluice.OutcomeBounced, 550, "5.1.2", ""},
		{"noaddr.test", sluice.OutcomeBounced, 550, "5.1.2", ""},
		{"servfail.test", sluice.OutcomeDeferred, 451, "4.4.3", ""},
		{"hang.test", sluice.OutcomeDeferred, 451, "4.4.3", ""},
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(p))
			before := sink.Count()
			start := time.Now()
			r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@"+tt.domain))[0]
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("attempt took %v with 200ms timeouts", d)
			}
			if r.Outcome != tt.want || r.Reply == nil || r.Reply.Code != tt.code || r.Reply.Enhanced.String() != tt.enhanced {
				t.Fatalf("got %v %v, want %v %d %s", r.Outcome, r.Reply, tt.want, tt.code, tt.enhanced)
			}
			wantCount := before
			if tt.want == sluice.OutcomeDelivered {
				wantCount++
			}
			if got := sink.Count(); got != wantCount {
				t.Errorf("sink has %d messages, want %d", got, wantCount)
			}
			if got := e.logs.records(t, "delivery")[0]["relay"]; got != tt.relay {
				t.Errorf("log relay = %v, want %q", got, tt.relay)
			}
		})
	}
}

func TestMXTruncatedAnswerRetriedOverTCP(t *testing.T) {
	sink := newSink(t)
	srv := newDNS(t)
	for i := range 40 {
		if err := srv.Add(fmt.Sprintf("big.test. 60 IN MX %d mx%02d.a-long-host-name.big.test.", 10+i, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Add("mx00.a-long-host-name.big.test. 60 IN A 127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())))
	r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@big.test"))[0]
	if r.Outcome != sluice.OutcomeDelivered {
		t.Fatalf("got %v %v, want delivered through the lowest-preference MX of a truncated answer", r.Outcome, r.Reply)
	}
}

func TestResolverFallback(t *testing.T) {
	sink := newSink(t)
	bad := newDNS(t)
	bad.SetRcode("ok.test", dns.RcodeServerFailure)
	good := newDNS(t, "ok.test. 60 IN A 127.0.0.1")
	e := newAgent(t, delivery.WithResolvers(bad.Addr(), good.Addr()), delivery.WithPort(port(t, sink.Addr())))
	r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@ok.test"))[0]
	if r.Outcome != sluice.OutcomeDelivered {
		t.Fatalf("got %v %v, want delivered through the second resolver", r.Outcome, r.Reply)
	}
	if bad.Queries() == 0 {
		t.Error("first resolver was never asked")
	}
}
