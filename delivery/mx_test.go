package delivery_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/smtp/smtptest"
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

func TestMXEqualPreferenceRandomised(t *testing.T) {
	a, b := newSink(t), newSink(t)
	srv := newDNS(t,
		"eq.test. 60 IN MX 10 a.eq.test.",
		"eq.test. 60 IN MX 10 b.eq.test.",
		"eq.test. 60 IN MX 20 backup.eq.test.",
		"a.eq.test. 60 IN A 192.0.2.1",
		"b.eq.test. 60 IN A 192.0.2.2",
		"backup.eq.test. 60 IN A 192.0.2.3",
	)
	d := &dialer{redirect: map[string]string{"192.0.2.1:25": a.Addr(), "192.0.2.2:25": b.Addr()}}
	// One message per connection, so that reuse does not pick the host.
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithDialer(d.dial),
		delivery.WithShaping(delivery.Shaping{MaxPerConnection: 1}))
	const n = 40
	for range n {
		if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@eq.test"))[0]; r.Outcome != sluice.OutcomeDelivered {
			t.Fatalf("got %v %v", r.Outcome, r.Reply)
		}
	}
	if a.Count() == 0 || b.Count() == 0 || a.Count()+b.Count() != n {
		t.Errorf("hosts of equal preference got %d and %d of %d messages, want both some", a.Count(), b.Count(), n)
	}
	for _, addr := range d.Dialed() {
		if addr == "192.0.2.3:25" {
			t.Error("the backup MX was dialed while a preferred one was up")
		}
	}
}

func TestMXHostCapAndIPv6(t *testing.T) {
	sink := newSink(t)
	srv := newDNS(t,
		"cap.test. 60 IN MX 10 one.cap.test.",
		"cap.test. 60 IN MX 20 two.cap.test.",
		"cap.test. 60 IN MX 30 three.cap.test.",
		"one.cap.test. 60 IN A 192.0.2.1",
		"one.cap.test. 60 IN AAAA 2001:db8::1",
		"two.cap.test. 60 IN AAAA 2001:db8::2",
		"three.cap.test. 60 IN A 192.0.2.3",
		"v6.test. 60 IN AAAA 2001:db8::6",
	)
	// Nothing listens behind the documentation addresses except where
	// redirected: the hosts refuse at once.
	refused := newSink(t)
	refusedAddr := refused.Addr()
	refused.Close()
	d := &dialer{redirect: map[string]string{
		"192.0.2.1:25": refusedAddr, "[2001:db8::1]:25": refusedAddr, "[2001:db8::2]:25": refusedAddr,
		"192.0.2.3:25": sink.Addr(), "[2001:db8::6]:25": sink.Addr(),
	}}
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithDialer(d.dial), delivery.WithMaxHosts(3),
		delivery.WithDeadHostTime(0))
	r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@cap.test"))[0]
	if r.Outcome != sluice.OutcomeDeferred {
		t.Errorf("got %v %v, want deferred: the only working host is the fourth address", r.Outcome, r.Reply)
	}
	want := []string{"192.0.2.1:25", "[2001:db8::1]:25", "[2001:db8::2]:25"}
	if got := d.Dialed(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dialed %v, want %v (preference order, IPv4 first, at most 3)", got, want)
	}

	r = deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@v6.test"))[0]
	if r.Outcome != sluice.OutcomeDelivered {
		t.Fatalf("IPv6-only implicit MX: got %v %v, want delivered", r.Outcome, r.Reply)
	}
	if got := e.logs.records(t, "delivery")[1]["ip"]; got != "[2001:db8::6]:25" {
		t.Errorf("log ip = %v, want [2001:db8::6]:25", got)
	}
}

func TestMXInternationalizedDomain(t *testing.T) {
	sink := newSink(t, smtptest.WithSMTPUTF8(true))
	srv := newDNS(t, "xn--bcher-kva.test. 60 IN A 127.0.0.1")
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())))
	msg := newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@bücher.test")
	msg.Envelope.SMTPUTF8 = true
	if r := deliver(t, e.agent, msg)[0]; r.Outcome != sluice.OutcomeDelivered {
		t.Fatalf("got %v %v, want delivered through the A-label's address", r.Outcome, r.Reply)
	}
	if got := sink.Messages()[0].To[0]; got != "b@bücher.test" {
		t.Errorf("RCPT %q, want the address as given", got)
	}
}

// DNSFailures counts lookups no resolver answered, not NXDOMAIN, and is a
// metric.
func TestDNSFailuresCounted(t *testing.T) {
	srv := newDNS(t, "ok.test. 60 IN MX 10 mx.ok.test.", "mx.ok.test. 60 IN A 127.0.0.1")
	srv.SetRcode("broken.test.", dns.RcodeServerFailure)
	reg := prometheus.NewRegistry()
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithRegisterer(reg), delivery.WithDNSCache(0))
	for _, d := range []string{"ok.test", "missing.test", "broken.test", "broken.test"} {
		e.agent.Explain(context.Background(), "x@"+d, "")
	}
	if got := e.agent.DNSFailures(); got != 2 {
		t.Errorf("DNSFailures = %d, want 2 (the SERVFAILs, not the NXDOMAIN)", got)
	}
	if got := metricValue(t, reg, "sluice_delivery_dns_failures_total", "", ""); got != 2 {
		t.Errorf("sluice_delivery_dns_failures_total = %v, want 2", got)
	}
}
