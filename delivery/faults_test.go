package delivery_test

import (
	"bufio"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

// Each fault test runs with the 200ms deadlines of every test agent: an
// attempt that ends within a second ended on its deadline, not on the
// test's 10s context.
const faultBound = 1500 * time.Millisecond

// Server behaviours for the fault tests.
var (
	bannerNeverSent = func(c net.Conn, r *bufio.Reader) { waitClosed(r) }
	hungAfterEHLO   = func(c net.Conn, r *bufio.Reader) {
		if converse(c, r, "220 hung.test ESMTP", "250 hung.test", "") {
			waitClosed(r)
		}
	}
	hungAfterDot = func(c net.Conn, r *bufio.Reader) {
		if !converse(c, r, "220 x ESMTP", "250 x", "250 ok", "250 ok", "354 go") {
			return
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil || line == ".\r\n" {
				break
			}
		}
		waitClosed(r) // never answers the final dot
	}
	resetMidData = func(c net.Conn, r *bufio.Reader) {
		if !converse(c, r, "220 x ESMTP", "250 x", "250 ok", "250 ok", "354 go") {
			return
		}
		for n := 0; n < 64<<10; { // 64 KiB of the body, or all of a small one
			line, err := r.ReadString('\n')
			if err != nil || line == ".\r\n" {
				break
			}
			n += len(line)
		}
		c.(*net.TCPConn).SetLinger(0) // close with RST
		c.Close()
	}
	busyGreeting = func(c net.Conn, r *bufio.Reader) {
		converse(c, r, "421 4.7.0 too many connections from your IP, try later")
	}
)

// bigBody (1 MiB) is more than the socket buffers hold when the client's
// send buffer is small (dialer.writeBuffer), so the client is still
// writing when a peer resets the connection. Tests that send it allow body
// writes and the final reply 2s (slowBody), for a sink under the race
// detector.
var (
	bigBody  = "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 1022)+"\r\n", 1<<10)
	slowBody = delivery.WithTimeouts(delivery.Timeouts{Command: 2 * time.Second, Data: 2 * time.Second})
)

func TestFaultsSingleHop(t *testing.T) {
	tests := []struct {
		name     string
		handle   func(net.Conn, *bufio.Reader)
		body     string
		code     int
		enhanced string
		text     string // in the reply
		minTook  time.Duration
	}{
		{"banner never sent", bannerNeverSent, "x: y\r\n\r\nhi\r\n", 451, "4.4.2", "greeting", 200 * time.Millisecond},
		{"accepted then hung", hungAfterEHLO, "x: y\r\n\r\nhi\r\n", 451, "4.4.2", "MAIL", 200 * time.Millisecond},
		{"hung after the final dot", hungAfterDot, "x: y\r\n\r\nhi\r\n", 451, "4.4.2", "no reply after end of data", 200 * time.Millisecond},
		{"reset mid-DATA", resetMidData, bigBody, 451, "4.4.1", "DATA", 0},
		{"421 greeting", busyGreeting, "x: y\r\n\r\nhi\r\n", 421, "4.7.0", "too many connections", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, accepted := fakeServer(t, "127.0.0.1:0", tt.handle)
			d := &dialer{writeBuffer: 16 << 10}
			opts := []delivery.Option{delivery.WithSmarthost(addr), delivery.WithDialer(d.dial)}
			if tt.body == bigBody {
				opts = append(opts, slowBody)
			}
			e := newAgent(t, opts...)
			start := time.Now()
			r := deliver(t, e.agent, newMessage(tt.body, "a@x.test", "b@y.test"))[0]
			took := time.Since(start)
			if took < tt.minTook || took > faultBound {
				t.Errorf("attempt took %v, want between %v and %v", took, tt.minTook, faultBound)
			}
			if r.Outcome != sluice.OutcomeDeferred || r.Reply.Code != tt.code || r.Reply.Enhanced.String() != tt.enhanced ||
				!strings.Contains(r.Reply.Message, tt.text) {
				t.Errorf("got %v %v, want deferred %d %s mentioning %q", r.Outcome, r.Reply, tt.code, tt.enhanced, tt.text)
			}
			if got := accepted.Load(); got != 1 {
				t.Errorf("next hop saw %d connections, want 1", got)
			}
		})
	}
}

// mxPair returns an agent whose domain "pair.test" has two MX hosts: the
// preferred one served by first, the backup by second.
func mxPair(t *testing.T, first, second string, opts ...delivery.Option) (env, *dialer) {
	t.Helper()
	srv := newDNS(t,
		"pair.test. 60 IN MX 10 first.pair.test.",
		"pair.test. 60 IN MX 20 second.pair.test.",
		"first.pair.test. 60 IN A 192.0.2.1",
		"second.pair.test. 60 IN A 192.0.2.2",
	)
	d := &dialer{redirect: map[string]string{"192.0.2.1:25": first, "192.0.2.2:25": second}, writeBuffer: 16 << 10}
	return newAgent(t, append([]delivery.Option{delivery.WithResolvers(srv.Addr()), delivery.WithDialer(d.dial)}, opts...)...), d
}

func TestConnectionFaultsMoveToNextMX(t *testing.T) {
	tests := []struct {
		name      string
		handle    func(net.Conn, *bufio.Reader)
		body      string
		wantDead  bool // the first host is skipped by the next attempt
		wantMoved bool
	}{
		{"banner never sent", bannerNeverSent, "x: y\r\n\r\nhi\r\n", true, true},
		{"accepted then hung", hungAfterEHLO, "x: y\r\n\r\nhi\r\n", true, true},
		{"reset mid-DATA", resetMidData, bigBody, false, true},
		{"421 greeting", busyGreeting, "x: y\r\n\r\nhi\r\n", false, true}, // busy, not dead
		// The next hop may have the message: moving on could duplicate it.
		{"hung after the final dot", hungAfterDot, "x: y\r\n\r\nhi\r\n", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad, _ := fakeServer(t, "127.0.0.1:0", tt.handle)
			sink := newSink(t)
			// One message per connection: reusing the session with the
			// second host would hide whether the first is skipped.
			opts := []delivery.Option{delivery.WithShaping(delivery.Shaping{MaxPerConnection: 1})}
			if tt.body == bigBody {
				opts = append(opts, slowBody)
			}
			e, d := mxPair(t, bad, sink.Addr(), opts...)
			start := time.Now()
			r := deliver(t, e.agent, newMessage(tt.body, "a@x.test", "b@pair.test"))[0]
			bound := faultBound
			if tt.body == bigBody {
				bound += 2 * time.Second // the second host reads 1 MiB
			}
			if took := time.Since(start); took > bound {
				t.Errorf("attempt took %v, want at most %v", took, bound)
			}
			if tt.wantMoved {
				if r.Outcome != sluice.OutcomeDelivered || sink.Count() != 1 {
					t.Fatalf("got %v %v, sink has %d; want delivered by the second MX", r.Outcome, r.Reply, sink.Count())
				}
				if got := e.logs.records(t, "delivery")[0]["relay"]; got != "second.pair.test" {
					t.Errorf("log relay = %v, want second.pair.test", got)
				}
			} else if r.Outcome != sluice.OutcomeDeferred || sink.Count() != 0 {
				t.Fatalf("got %v %v, sink has %d; want deferred without trying the second MX", r.Outcome, r.Reply, sink.Count())
			}
			before := len(d.Dialed())
			deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@pair.test"))
			dialedFirst := false
			for _, a := range d.Dialed()[before:] {
				dialedFirst = dialedFirst || a == "192.0.2.1:25"
			}
			if dialedFirst == tt.wantDead {
				t.Errorf("second attempt dialed the first MX: %v; want %v (dead-host memory)", dialedFirst, !tt.wantDead)
			}
		})
	}
}

func TestFault451ThenSuccess(t *testing.T) {
	var calls atomic.Int32
	sink := newSink(t, smtptest.WithRcptFunc(func(from, to string) error {
		if calls.Add(1) == 1 {
			return sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1}, "greylisted, try again later")
		}
		return nil
	}))
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()))
	msg := newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test")
	r := deliver(t, e.agent, msg)[0]
	if r.Outcome != sluice.OutcomeDeferred || r.Reply.Code != 451 || sink.Count() != 0 {
		t.Fatalf("first attempt: got %v %v, sink %d; want deferred 451, nothing delivered", r.Outcome, r.Reply, sink.Count())
	}
	msg.Attempt = 2
	r = deliver(t, e.agent, msg)[0]
	if r.Outcome != sluice.OutcomeDelivered || sink.Count() != 1 {
		t.Fatalf("second attempt: got %v %v, sink %d; want delivered", r.Outcome, r.Reply, sink.Count())
	}
	recs := e.logs.records(t, "delivery")
	if len(recs) != 2 || recs[0]["result"] != "deferred" || recs[0]["attempt"] != float64(1) ||
		recs[1]["result"] != "delivered" || recs[1]["attempt"] != float64(2) {
		t.Errorf("log records %v, want deferred at attempt 1 then delivered at attempt 2", recs)
	}
}

func TestFault550BouncesWithCategory(t *testing.T) {
	sink := newSink(t, smtptest.WithRcptFunc(func(from, to string) error {
		return sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no such user here")
	}))
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()))
	r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))[0]
	if r.Outcome != sluice.OutcomeBounced || r.Reply.Code != 550 || r.Reply.Enhanced.String() != "5.1.1" {
		t.Fatalf("got %v %v, want bounced 550 5.1.1", r.Outcome, r.Reply)
	}
	rec := e.logs.records(t, "delivery")[0]
	for k, want := range map[string]any{"category": "bad-mailbox", "code": float64(550), "enhanced": "5.1.1", "text": "no such user here"} {
		if rec[k] != want {
			t.Errorf("log %s = %v, want %v", k, rec[k], want)
		}
	}
}
