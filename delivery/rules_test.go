package delivery_test

import (
	"bufio"
	"context"
	"net"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/queue"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

// heldSink is a sink whose DATA replies wait on gate for recipients of the
// held domain, counting the messages held.
func heldSink(t *testing.T, held string, gate <-chan struct{}, opts ...smtptest.Option) (*smtptest.Sink, *atomic.Int32) {
	var inData atomic.Int32
	opts = append(opts, smtptest.WithDataFunc(func(m *smtptest.Message) error {
		if strings.HasSuffix(m.To[0], "@"+held) {
			inData.Add(1)
			<-gate
		}
		return nil
	}))
	return newSink(t, opts...), &inData
}

// slotTaken delivers one message to rcpt with a short deadline while
// another holds the destination's only slot, and reports whether it was
// deferred for want of a connection slot.
func slotTaken(t *testing.T, a *delivery.Agent, rcpt string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r := a.Deliver(ctx, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", rcpt))[0]
	return r.Outcome == sluice.OutcomeDeferred && strings.Contains(r.Reply.Message, "connection slot")
}

// holdOne starts a delivery to rcpt that the sink holds in DATA, and
// returns a channel that yields its result once gate is closed.
func holdOne(t *testing.T, a *delivery.Agent, rcpt string, inData *atomic.Int32) <-chan queue.Result {
	t.Helper()
	before := inData.Load()
	done := make(chan queue.Result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- a.Deliver(ctx, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", rcpt))[0]
	}()
	eventually(t, "the held message to reach DATA", func() bool { return inData.Load() > before })
	return done
}

func TestReplyRuleBackoff(t *testing.T) {
	gate := make(chan struct{})
	var throttle atomic.Bool
	throttle.Store(true)
	sink, inData := heldSink(t, "busy.test", gate, smtptest.WithRcptFunc(func(_, to string) error {
		if throttle.Load() {
			return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0}, Message: "Too many connections from your IP, slow down"}
		}
		return nil
	}))
	clk := newClock()
	reg := prometheus.NewRegistry()
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()), delivery.WithClock(clk.Now), delivery.WithRegisterer(reg),
		delivery.WithTimeouts(delivery.Timeouts{Data: 5 * time.Second}),
		delivery.WithShaping(delivery.Shaping{Concurrency: 5, InitialConcurrency: 5}),
		delivery.WithReplyRules(delivery.ReplyRule{
			Name: "throttled", Match: regexp.MustCompile(`(?i)too many connections`),
			Action: delivery.ReplyBackoff, For: 10 * time.Minute,
			Shaping: delivery.Shaping{Concurrency: 1},
		}))

	// The reply defers the recipient and backs the destination off to
	// one connection.
	r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "a@busy.test"))[0]
	if r.Outcome != sluice.OutcomeDeferred || r.Reply.Code != 451 {
		t.Fatalf("throttled recipient: got %v %v, want deferred 451", r.Outcome, r.Reply)
	}
	if got := metricValue(t, reg, "sluice_delivery_reply_rules_total", "action", "backoff"); got != 1 {
		t.Errorf("reply_rules_total{action=backoff} = %v, want 1", got)
	}
	throttle.Store(false)

	// With one message held in DATA, a second finds no slot, where the
	// configured concurrency of 5 would have given it one.
	held := holdOne(t, e.agent, "b@busy.test", inData)
	if !slotTaken(t, e.agent, "c@busy.test") {
		t.Error("during the backoff a second session was opened, want the profile's concurrency of 1")
	}
	close(gate)
	if r := <-held; r.Outcome != sluice.OutcomeDelivered {
		t.Errorf("held message: got %v %v, want delivered", r.Outcome, r.Reply)
	}
	if got := sink.MaxConcurrent(); got != 1 {
		t.Errorf("sink saw %d concurrent sessions during the backoff, want 1", got)
	}
}

func TestReplyRuleSuspend(t *testing.T) {
	addr, accepted := fakeServer(t, "127.0.0.1:0", func(c net.Conn, r *bufio.Reader) {
		converse(c, r, "554 5.7.1 Service unavailable; client host [127.0.0.1] blocked using zen.example", "")
	})
	clk := newClock()
	e := newAgent(t, delivery.WithSmarthost(addr), delivery.WithClock(clk.Now),
		delivery.WithReplyRules(delivery.ReplyRule{
			Name: "blocked", Match: regexp.MustCompile(`blocked using`), Action: delivery.ReplySuspend, For: time.Hour,
		}))

	r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "a@y.test", "b@y.test"))
	for i, res := range r {
		if res.Outcome != sluice.OutcomeDeferred || res.Reply.Enhanced.String() != "4.4.5" || !strings.Contains(res.Reply.Message, "suspended") {
			t.Errorf("recipient %d: got %v %v, want deferred 4.4.5 suspended", i, res.Outcome, res.Reply)
		}
	}
	if got := accepted.Load(); got != 1 {
		t.Fatalf("%d connections, want 1", got)
	}
	// Suspended: an hour of attempts without a connection.
	clk.Advance(59 * time.Minute)
	if res := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "c@y.test"))[0]; res.Outcome != sluice.OutcomeDeferred {
		t.Errorf("while suspended: got %v %v, want deferred", res.Outcome, res.Reply)
	}
	if got := accepted.Load(); got != 1 {
		t.Errorf("while suspended: %d connections, want still 1", got)
	}
	clk.Advance(2 * time.Minute)
	deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "c@y.test"))
	if got := accepted.Load(); got != 2 {
		t.Errorf("after the suspension: %d connections, want 2", got)
	}
}

func TestReplyRuleBounce(t *testing.T) {
	sink := newSink(t, smtptest.WithRcptFunc(func(_, to string) error {
		switch {
		case strings.HasPrefix(to, "gone@"):
			return &gosmtp.SMTPError{Code: 450, EnhancedCode: gosmtp.EnhancedCode{4, 2, 1}, Message: "mailbox disabled, not accepting messages"}
		case strings.HasPrefix(to, "busy@"):
			return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	}))
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()),
		delivery.WithReplyRules(delivery.ReplyRule{
			Name: "disabled", Match: regexp.MustCompile(`^450 4\.2\.1 mailbox disabled`), Action: delivery.ReplyBounce,
		}))
	r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "gone@y.test", "busy@y.test", "ok@y.test"))
	want := []struct {
		outcome sluice.Outcome
		reply   string
	}{
		{sluice.OutcomeBounced, "550 5.2.1 mailbox disabled, not accepting messages (made permanent by rule disabled)"},
		{sluice.OutcomeDeferred, "451 4.3.0 try again later"},
		{sluice.OutcomeDelivered, "250"},
	}
	for i, w := range want {
		if r[i].Outcome != w.outcome || !strings.HasPrefix(r[i].Reply.Error(), w.reply) {
			t.Errorf("recipient %d: got %v %q, want %v %q", i, r[i].Outcome, r[i].Reply.Error(), w.outcome, w.reply)
		}
	}
}

func TestShapingRules(t *testing.T) {
	gate := make(chan struct{})
	sink, inData := heldSink(t, "slow.test", gate)
	srv := newDNS(t,
		"slow.test. 60 IN MX 10 mx.slow.test.", "mx.slow.test. 60 IN A 127.0.0.1",
		"fast.test. 60 IN MX 10 mx.fast.test.", "mx.fast.test. 60 IN A 127.0.0.1")
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())),
		delivery.WithTimeouts(delivery.Timeouts{Data: 5 * time.Second}),
		delivery.WithShaping(delivery.Shaping{Concurrency: 5, InitialConcurrency: 5}),
		delivery.WithShapingRules(delivery.ShapingRule{Match: "slow.test", Shaping: delivery.Shaping{Concurrency: 1}}))

	// fast.test is known to the agent before its rule exists.
	if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "a@fast.test"))[0]; r.Outcome != sluice.OutcomeDelivered {
		t.Fatalf("fast.test: got %v %v", r.Outcome, r.Reply)
	}
	held := holdOne(t, e.agent, "a@slow.test", inData)
	if !slotTaken(t, e.agent, "b@slow.test") {
		t.Error("slow.test: a second session was opened, want its rule's concurrency of 1")
	}
	if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@fast.test"))[0]; r.Outcome != sluice.OutcomeDelivered {
		t.Errorf("fast.test is not limited by slow.test's rule: got %v %v", r.Outcome, r.Reply)
	}
	close(gate)
	<-held
}

// TestShapingRulesReload: new rules apply to a destination the agent
// already knows, and a rule matches an MX site by its host names.
func TestShapingRulesReload(t *testing.T) {
	gate := make(chan struct{})
	sink, inData := heldSink(t, "b.test", gate)
	srv := newDNS(t,
		"a.test. 60 IN MX 10 mx1.provider.test.", "b.test. 60 IN MX 10 mx1.provider.test.",
		"mx1.provider.test. 60 IN A 127.0.0.1")
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())),
		delivery.WithTimeouts(delivery.Timeouts{Data: 5 * time.Second}),
		delivery.WithShapeBy(delivery.ShapeBySite),
		delivery.WithShaping(delivery.Shaping{Concurrency: 5, InitialConcurrency: 5}))
	if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "a@a.test"))[0]; r.Outcome != sluice.OutcomeDelivered {
		t.Fatalf("got %v %v", r.Outcome, r.Reply)
	}
	if err := e.agent.SetShapingRules(delivery.ShapingRule{Match: ".provider.test", Shaping: delivery.Shaping{Concurrency: 1}}); err != nil {
		t.Fatal(err)
	}
	held := holdOne(t, e.agent, "a@b.test", inData)
	if !slotTaken(t, e.agent, "b@a.test") {
		t.Error("after the reload a second session was opened to the site, want its new concurrency of 1")
	}
	close(gate)
	<-held
}

func TestShapingRuleValidation(t *testing.T) {
	e := newAgent(t)
	for _, r := range []delivery.ShapingRule{
		{Match: "bad domain", Shaping: delivery.Shaping{Concurrency: 1}},
		{Match: "pool:", Shaping: delivery.Shaping{Concurrency: 1}},
		{Match: "x.test", Shaping: delivery.Shaping{Concurrency: -1}},
	} {
		if err := e.agent.SetShapingRules(r); err == nil {
			t.Errorf("SetShapingRules(%+v) succeeded, want an error", r)
		}
	}
	for _, r := range []delivery.ReplyRule{
		{Match: regexp.MustCompile("x"), Action: delivery.ReplyBounce},
		{Name: "n", Action: delivery.ReplyBounce},
		{Name: "n", Match: regexp.MustCompile("x"), Action: delivery.ReplySuspend},
		{Name: "n", Match: regexp.MustCompile("x")},
	} {
		if err := e.agent.SetReplyRules(r); err == nil {
			t.Errorf("SetReplyRules(%+v) succeeded, want an error", r)
		}
	}
	if _, err := delivery.New(&recorder{}, delivery.WithReplyRules(delivery.ReplyRule{Name: "n"})); err == nil {
		t.Error("New accepted a reply rule without a pattern")
	}
}

// TestDataRateWatchdog: a next hop that takes the body a few bytes at a
// time, never slowly enough to trip the per-write deadline, is given up
// on when the whole transfer overruns its share of DataRate.
func TestDataRateWatchdog(t *testing.T) {
	addr, _ := fakeServer(t, "127.0.0.1:0", func(c net.Conn, r *bufio.Reader) {
		c.(*net.TCPConn).SetReadBuffer(4096)
		if !converse(c, r, "220 slow.test ESMTP", "250 slow.test", "250 ok", "250 ok", "354 go", "") {
			return
		}
		buf := make([]byte, 512)
		for {
			if _, err := r.Read(buf); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond) // the peer's pace: about 50 KB/s
		}
	})
	smallBuffers := func(ctx context.Context, network, laddr, raddr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, raddr)
		if err == nil {
			c.(*net.TCPConn).SetWriteBuffer(4096)
		}
		return c, err
	}
	e := newAgent(t, delivery.WithSmarthost(addr), delivery.WithDialer(smallBuffers),
		delivery.WithTimeouts(delivery.Timeouts{Command: 2 * time.Second, DataRate: 256 << 10}))
	body := "x: y\r\n\r\n" + strings.Repeat(strings.Repeat("a", 78)+"\r\n", 512<<10/80)
	start := time.Now()
	r := deliver(t, e.agent, newMessage(body, "a@x.test", "a@y.test"))[0]
	took := time.Since(start)
	// Command 2s + 512 KiB at 256 KiB/s = 4s; the peer alone would need 10s.
	if took < 3*time.Second || took > 6*time.Second {
		t.Errorf("attempt took %v, want the watchdog's 4s", took)
	}
	if r.Outcome != sluice.OutcomeDeferred || !strings.Contains(r.Reply.Message, "slower than 262144 bytes/s") {
		t.Errorf("got %v %v, want deferred by the transfer-rate watchdog", r.Outcome, r.Reply)
	}
}
