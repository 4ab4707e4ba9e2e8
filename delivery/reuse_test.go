package delivery_test

import (
	"bufio"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

func sendN(t *testing.T, a *delivery.Agent, n int) {
	t.Helper()
	for i := range n {
		if r := deliver(t, a, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))[0]; r.Outcome != sluice.OutcomeDelivered {
			t.Fatalf("message %d: got %v %v, want delivered", i, r.Outcome, r.Reply)
		}
	}
}

func TestConnectionReuse(t *testing.T) {
	tests := []struct {
		name      string
		perConn   int
		wantDials int
	}{
		{"one connection for five messages", 0, 1},
		{"at most two messages per connection", 2, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := newSink(t)
			d := &dialer{}
			reg := prometheus.NewRegistry()
			e := newAgent(t, delivery.WithSmarthost(sink.Addr()), delivery.WithDialer(d.dial), delivery.WithRegisterer(reg),
				delivery.WithShaping(delivery.Shaping{MaxPerConnection: tt.perConn}))
			sendN(t, e.agent, 5)
			if got := len(d.Dialed()); got != tt.wantDials {
				t.Errorf("dialed %d times for 5 messages, want %d", got, tt.wantDials)
			}
			newConns := metricValue(t, reg, "sluice_delivery_connections_total", "kind", "new")
			reused := metricValue(t, reg, "sluice_delivery_connections_total", "kind", "reused")
			if newConns != float64(tt.wantDials) || reused != float64(5-tt.wantDials) {
				t.Errorf("connections_total new %v reused %v, want %d and %d", newConns, reused, tt.wantDials, 5-tt.wantDials)
			}
			if got := sink.Count(); got != 5 {
				t.Errorf("sink has %d messages, want 5", got)
			}
		})
	}
}

func TestReuseOfConnectionRefusedAfterOneMessage(t *testing.T) {
	// The server takes one message per connection and then hangs up on
	// anything but QUIT: the MAIL of a reuse fails and a new connection
	// is opened, within the same attempt.
	addr, accepted := fakeServer(t, "127.0.0.1:0", acceptOne)
	e := newAgent(t, delivery.WithSmarthost(addr))
	sendN(t, e.agent, 3)
	if got := accepted.Load(); got != 3 {
		t.Errorf("server saw %d connections, want 3", got)
	}
}

func TestConnectionDroppedAfterError(t *testing.T) {
	var calls atomic.Int32
	sink := newSink(t, smtptest.WithRcptFunc(func(from, to string) error {
		if calls.Add(1) == 1 {
			return sluice.NewReply(421, sluice.EnhancedCode{4, 3, 2}, "closing")
		}
		return nil
	}))
	d := &dialer{}
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()), delivery.WithDialer(d.dial))
	if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))[0]; r.Outcome != sluice.OutcomeDeferred {
		t.Fatalf("got %v %v, want deferred on 421", r.Outcome, r.Reply)
	}
	sendN(t, e.agent, 2)
	if got := len(d.Dialed()); got != 2 {
		t.Errorf("dialed %d times, want 2: the connection that got a 421 must not be reused", got)
	}
}

func TestIdleConnectionsClosed(t *testing.T) {
	var closed atomic.Int32
	handle := func(c net.Conn, r *bufio.Reader) {
		acceptOne(c, r)
		closed.Add(1)
	}
	t.Run("idle timeout", func(t *testing.T) {
		closed.Store(0)
		addr, _ := fakeServer(t, "127.0.0.1:0", handle)
		e := newAgent(t, delivery.WithSmarthost(addr), delivery.WithShaping(delivery.Shaping{IdleTimeout: 20 * time.Millisecond}))
		sendN(t, e.agent, 1)
		eventually(t, "the idle connection to be closed", func() bool { return closed.Load() == 1 })
	})
	t.Run("Close", func(t *testing.T) {
		closed.Store(0)
		addr, _ := fakeServer(t, "127.0.0.1:0", handle)
		e := newAgent(t, delivery.WithSmarthost(addr))
		sendN(t, e.agent, 1)
		if got := closed.Load(); got != 0 {
			t.Fatalf("connection closed right after the message (%d), want it kept for reuse", got)
		}
		e.agent.Close()
		eventually(t, "Close to close the idle connection", func() bool { return closed.Load() == 1 })
	})
}
