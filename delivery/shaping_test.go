package delivery_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/internal/blackhole"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

func TestConcurrencyCapPerDestination(t *testing.T) {
	const limit, messages = 3, 24
	var inData atomic.Int32
	gate := make(chan struct{})
	sink := newSink(t, smtptest.WithDataFunc(func(*smtptest.Message) error {
		inData.Add(1)
		<-gate // hold every session until the test has seen the cap reached
		return nil
	}))
	srv := newDNS(t, "cap.test. 60 IN A 127.0.0.1")
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())),
		delivery.WithTimeouts(delivery.Timeouts{Data: 5 * time.Second}),
		delivery.WithShaping(delivery.Shaping{Concurrency: limit, InitialConcurrency: limit}))
	var wg sync.WaitGroup
	results := make([]rcptResult, messages)
	for i := range messages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r := e.agent.Deliver(ctx, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", fmt.Sprintf("r%d@cap.test", i)))[0]
			results[i] = rcptResult{r.Outcome, r.Reply}
		}()
	}
	// The cap is reached while 21 more deliveries wait for a slot.
	eventually(t, "the sink to hold 3 messages in DATA", func() bool { return inData.Load() >= limit })
	close(gate)
	wg.Wait()
	for i, r := range results {
		if r.outcome != sluice.OutcomeDelivered {
			t.Errorf("message %d: got %v %v, want delivered", i, r.outcome, r.reply)
		}
	}
	if got := sink.MaxConcurrent(); got != limit {
		t.Errorf("sink saw %d concurrent sessions, want exactly the cap %d", got, limit)
	}
}

type rcptResult struct {
	outcome sluice.Outcome
	reply   *sluice.Reply
}

func Test421StormShrinksAndParks(t *testing.T) {
	var healthy atomic.Bool
	addr, accepted := fakeServer(t, "127.0.0.1:0", func(c net.Conn, r *bufio.Reader) {
		if healthy.Load() {
			acceptOne(c, r)
			return
		}
		busyGreeting(c, r)
	})
	clk := newClock()
	reg := prometheus.NewRegistry()
	e := newAgent(t, delivery.WithSmarthost(addr), delivery.WithClock(clk.Now), delivery.WithRegisterer(reg),
		delivery.WithShaping(delivery.Shaping{Concurrency: 5, InitialConcurrency: 5, ParkAfter: 3, ParkFor: time.Minute, ParkMax: 10 * time.Minute}))

	// A storm: 20 messages at once, each refused with 421 at the greeting.
	const storm = 20
	var wg sync.WaitGroup
	var parked atomic.Int32
	start := time.Now()
	for i := range storm {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", fmt.Sprintf("r%d@y.test", i)))[0]
			if r.Outcome != sluice.OutcomeDeferred {
				t.Errorf("got %v %v, want deferred", r.Outcome, r.Reply)
			}
			if r.Reply.Enhanced.String() == "4.4.5" && strings.Contains(r.Reply.Message, "parked") {
				parked.Add(1)
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > faultBound {
		t.Errorf("the storm took %v, want at most %v", took, faultBound)
	}
	// At most the initial window of 5 sessions was opened; the window
	// shrank with each 421, and after 3 the destination was parked.
	if got := accepted.Load(); got > 5 {
		t.Errorf("next hop saw %d connections during the storm, want at most 5", got)
	}
	if got := parked.Load(); got < storm-5 {
		t.Errorf("%d messages were deferred as parked, want at least %d", got, storm-5)
	}

	if got := metricValue(t, reg, "sluice_delivery_destinations_parked_total", "", ""); got != 1 {
		t.Errorf("destinations_parked_total = %v, want 1", got)
	}

	// Parked: no connection is spent until ParkFor has passed.
	before := accepted.Load()
	r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))[0]
	if r.Outcome != sluice.OutcomeDeferred || accepted.Load() != before {
		t.Errorf("while parked: got %v %v and %d new connections, want deferred without connecting", r.Outcome, r.Reply, accepted.Load()-before)
	}
	// After ParkFor, one probe; it fails, and the park doubles.
	clk.Advance(time.Minute)
	deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))
	if got := accepted.Load() - before; got != 1 {
		t.Errorf("probe after ParkFor opened %d connections, want 1", got)
	}
	clk.Advance(time.Minute)
	deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))
	if got := accepted.Load() - before; got != 1 {
		t.Errorf("a minute after a failed probe: %d connections in all, want still 1 (park doubled to 2m)", got)
	}
	// The next hop recovers: the next probe succeeds and unparks.
	healthy.Store(true)
	clk.Advance(time.Minute)
	for i := range 3 {
		r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))[0]
		if r.Outcome != sluice.OutcomeDelivered {
			t.Fatalf("after recovery, message %d: got %v %v, want delivered", i, r.Outcome, r.Reply)
		}
	}
}

func TestDeadHostMemorySharedAcrossDomains(t *testing.T) {
	hung := blackhole.Start(t, "127.0.0.1:0")
	sink := newSink(t)
	srv := newDNS(t,
		"one.test. 60 IN MX 10 mx.provider.test.",
		"one.test. 60 IN MX 20 backup.provider.test.",
		"two.test. 60 IN MX 10 mx.provider.test.",
		"two.test. 60 IN MX 20 backup.provider.test.",
		"mx.provider.test. 60 IN A 192.0.2.1",
		"backup.provider.test. 60 IN A 192.0.2.2",
	)
	d := &dialer{redirect: map[string]string{"192.0.2.1:25": hung, "192.0.2.2:25": sink.Addr()}}
	clk := newClock()
	reg := prometheus.NewRegistry()
	// One message per connection, so that every attempt picks a host.
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithDialer(d.dial), delivery.WithClock(clk.Now), delivery.WithRegisterer(reg),
		delivery.WithShaping(delivery.Shaping{MaxPerConnection: 1}))
	if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@one.test"))[0]; r.Outcome != sluice.OutcomeDelivered {
		t.Fatalf("one.test: got %v %v, want delivered by the backup", r.Outcome, r.Reply)
	}
	start := time.Now()
	if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@two.test"))[0]; r.Outcome != sluice.OutcomeDelivered {
		t.Fatalf("two.test: got %v %v, want delivered by the backup", r.Outcome, r.Reply)
	}
	if took := time.Since(start); took >= 200*time.Millisecond {
		t.Errorf("two.test took %v: it waited for the hung host's greeting", took)
	}
	if got := strings.Count(strings.Join(d.Dialed(), " "), "192.0.2.1:25"); got != 1 {
		t.Errorf("the hung host was dialed %d times, want once for both domains", got)
	}
	if got := metricValue(t, reg, "sluice_delivery_dead_hosts_total", "", ""); got != 1 {
		t.Errorf("dead_hosts_total = %v, want 1", got)
	}
	clk.Advance(time.Minute) // the memory expires: the host is tried again
	deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@two.test"))
	if got := strings.Count(strings.Join(d.Dialed(), " "), "192.0.2.1:25"); got != 2 {
		t.Errorf("after the dead-host time the hung host was dialed %d times in all, want 2", got)
	}
}

func TestShapeBySiteSharesLimits(t *testing.T) {
	for _, tt := range []struct {
		key  delivery.ShapeKey
		want int
	}{{delivery.ShapeByDomain, 4}, {delivery.ShapeBySite, 2}} {
		t.Run(fmt.Sprint(tt.key), func(t *testing.T) {
			var inData atomic.Int32
			gate := make(chan struct{})
			sink := newSink(t, smtptest.WithDataFunc(func(*smtptest.Message) error {
				inData.Add(1)
				<-gate
				return nil
			}))
			// Two domains hosted by one provider: the same MX hosts, in
			// another order.
			srv := newDNS(t,
				"a.test. 60 IN MX 10 mx1.provider.test.", "a.test. 60 IN MX 20 mx2.provider.test.",
				"b.test. 60 IN MX 20 mx1.provider.test.", "b.test. 60 IN MX 10 mx2.provider.test.",
				"mx1.provider.test. 60 IN A 127.0.0.1", "mx2.provider.test. 60 IN A 127.0.0.1",
			)
			e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())),
				delivery.WithTimeouts(delivery.Timeouts{Data: 5 * time.Second}), delivery.WithShapeBy(tt.key),
				delivery.WithShaping(delivery.Shaping{Concurrency: 2, InitialConcurrency: 2}))
			var wg sync.WaitGroup
			for i := range 12 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", fmt.Sprintf("r%d@%s", i, []string{"a.test", "b.test"}[i%2])))
				}()
			}
			eventually(t, fmt.Sprintf("%d sessions in DATA", tt.want), func() bool { return inData.Load() >= int32(tt.want) })
			close(gate)
			wg.Wait()
			if got := sink.MaxConcurrent(); got != tt.want {
				t.Errorf("sink saw %d concurrent sessions, want %d", got, tt.want)
			}
			if got := sink.Count(); got != 12 {
				t.Errorf("sink has %d messages, want 12", got)
			}
		})
	}
}

func TestRateLimits(t *testing.T) {
	const rate, n = 10.0, 15 // a burst of 10, then 5 at 10/s: at least 0.4s
	for _, tt := range []struct {
		name string
		s    delivery.Shaping
	}{
		{"messages", delivery.Shaping{MessageRate: rate}},
		{"connections", delivery.Shaping{ConnectionRate: rate, MaxPerConnection: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sink := newSink(t)
			e := newAgent(t, delivery.WithSmarthost(sink.Addr()), delivery.WithShaping(tt.s))
			start := time.Now()
			sendN(t, e.agent, n)
			if took := time.Since(start); took < 400*time.Millisecond {
				t.Errorf("%d messages took %v at %v/s with a burst of %v, want at least 400ms", n, took, rate, rate)
			}
		})
	}
}

// TestFailedProbeDoublesTheParkOnce: a probe of a parked destination with
// three next hops fails at each of them, and the park doubles once (1m ->
// 2m), not once per next hop (1m -> 8m).
func TestFailedProbeDoublesTheParkOnce(t *testing.T) {
	var hosts []delivery.PoolHost
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, delivery.PoolHost{Addr: l.Addr().String()})
		l.Close() // refused from now on
	}
	rt, err := delivery.NewRoutes([]delivery.Pool{{Name: "p", Hosts: hosts}}, []delivery.Route{{Domain: "*", Pool: "p"}})
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	d := &dialer{}
	e := newAgent(t, delivery.WithRoutes(rt), delivery.WithClock(clk.Now), delivery.WithDialer(d.dial),
		delivery.WithDeadHostTime(0),
		delivery.WithShaping(delivery.Shaping{ParkAfter: 1, ParkFor: time.Minute, ParkMax: 30 * time.Minute}))
	send := func() { deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test")) }
	send() // fails at every host: parked for 1m
	clk.Advance(61 * time.Second)
	send() // the probe fails at all three: parked for 2m
	n := len(d.Dialed())
	clk.Advance(90 * time.Second)
	send()
	if got := len(d.Dialed()); got != n {
		t.Fatalf("a probe 90s after a failed probe with ParkFor 1m (want 2m): %d dials -> %d", n, got)
	}
	clk.Advance(31 * time.Second)
	send()
	if got := len(d.Dialed()); got == n {
		t.Errorf("no probe 2m after a failed probe with ParkFor 1m: the park doubled more than once")
	}
}

// TestSuspensionOutlastsSessionsUnderWay: a session that was waiting for
// its reply to the final dot when a reply rule suspended the destination
// ends in success, and the suspension holds all the same.
func TestSuspensionOutlastsSessionsUnderWay(t *testing.T) {
	atDot := make(chan struct{})
	release := make(chan struct{})
	var n atomic.Int32
	addr, accepted := fakeServer(t, "127.0.0.1:0", func(c net.Conn, r *bufio.Reader) {
		switch n.Add(1) {
		case 1: // under way: slow to answer the final dot
			if !converse(c, r, "220 a.test ESMTP", "250 a.test", "250 ok", "250 ok", "354 go") {
				return
			}
			for {
				line, err := r.ReadString('\n')
				if err != nil || line == ".\r\n" {
					break
				}
			}
			close(atDot)
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
			converse(c, r, "250 2.0.0 queued", "")
			waitClosed(r)
		default: // the provider blocks us
			converse(c, r, "554 5.7.1 client host [127.0.0.1] blocked using zen.example", "")
		}
	})
	e := newAgent(t, delivery.WithSmarthost(addr),
		delivery.WithTimeouts(delivery.Timeouts{Data: 5 * time.Second}),
		delivery.WithReplyRules(delivery.ReplyRule{
			Name: "blocked", Match: regexp.MustCompile(`blocked using`), Action: delivery.ReplySuspend, For: time.Hour,
		}))
	done := make(chan sluice.Outcome, 1)
	go func() {
		done <- e.agent.Deliver(context.Background(), newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "a@y.test"))[0].Outcome
	}()
	<-atDot
	if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))[0]; r.Outcome != sluice.OutcomeDeferred {
		t.Fatalf("blocked message: %v %v, want deferred", r.Outcome, r.Reply)
	}
	close(release)
	if got := <-done; got != sluice.OutcomeDelivered {
		t.Fatalf("the message under way: %v, want delivered", got)
	}
	before := accepted.Load()
	r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "c@y.test"))[0]
	if got := accepted.Load(); got != before || r.Outcome != sluice.OutcomeDeferred {
		t.Errorf("within the hour-long suspension: %d connections -> %d, result %v %v; want none opened, deferred", before, got, r.Outcome, r.Reply)
	}
}
