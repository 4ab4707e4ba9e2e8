package delivery_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

// dialogue plays a scripted server: it sends the greeting, then for each
// step reads one command line, checks it starts with want and answers
// reply (none if empty). A step whose want is "DATA-BODY" reads a body up
// to its final dot instead. Deviations are recorded in errs.
type dialogue struct {
	mu   sync.Mutex
	errs []string
	// early is set when a command arrived before the reply to the one
	// before it was sent (the client pipelined).
	early atomic.Bool
}

type step struct{ want, reply string }

func (d *dialogue) fail(format string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.errs = append(d.errs, format)
}

func (d *dialogue) errors() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.errs...)
}

func (d *dialogue) play(c net.Conn, r *bufio.Reader, greeting string, steps []step) bool {
	if _, err := io.WriteString(c, greeting+"\r\n"); err != nil {
		return false
	}
	for _, s := range steps {
		if s.want == "DATA-BODY" {
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return false
				}
				if line == ".\r\n" {
					break
				}
			}
		} else {
			line, err := r.ReadString('\n')
			if err != nil {
				d.fail("connection ended waiting for " + s.want)
				return false
			}
			if !strings.HasPrefix(line, s.want) {
				d.fail("got " + strings.TrimSpace(line) + ", want " + s.want)
				return false
			}
		}
		if r.Buffered() > 0 {
			d.early.Store(true)
		}
		if s.reply != "" {
			if _, err := io.WriteString(c, s.reply+"\r\n"); err != nil {
				return false
			}
		}
	}
	return true
}

func TestNonPipeliningPeerOneCommandPerRoundTrip(t *testing.T) {
	d := &dialogue{}
	addr, accepted := fakeServer(t, "127.0.0.1:0", func(c net.Conn, r *bufio.Reader) {
		d.play(c, r, "220 np.test ESMTP", []step{
			{"EHLO", "250-np.test\r\n250 8BITMIME"}, // no PIPELINING
			{"MAIL FROM:<a@x.test>", "250 ok"},
			{"RCPT TO:<b@y.test>", "250 ok"},
			{"RCPT TO:<no@y.test>", "550 5.1.1 no such user"},
			{"RCPT TO:<c@y.test>", "250 ok"},
			{"DATA", "354 go"},
			{"DATA-BODY", "250 2.0.0 queued"},
			{"MAIL FROM:<a@x.test>", "250 ok"}, // reused, no RSET first
			{"RCPT TO:<b@y.test>", "250 ok"},
			{"DATA", "354 go"},
			{"DATA-BODY", "250 2.0.0 queued"},
			{"QUIT", "221 bye"},
		})
	})
	e := newAgent(t, delivery.WithSmarthost(addr))
	res := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test", "no@y.test", "c@y.test"))
	wantCodes := []int{250, 550, 250}
	for i, r := range res {
		if r.Reply.Code != wantCodes[i] {
			t.Errorf("recipient %d: got %v %v, want %d", i, r.Outcome, r.Reply, wantCodes[i])
		}
	}
	sendN(t, e.agent, 1)
	e.agent.Close() // QUIT, answered after the dialogue checked it
	if errs := d.errors(); len(errs) > 0 {
		t.Errorf("dialogue: %v", errs)
	}
	if d.early.Load() {
		t.Error("a command arrived before the reply to the previous one, to a server without PIPELINING")
	}
	if got := accepted.Load(); got != 1 {
		t.Errorf("server saw %d connections, want 1", got)
	}
}

func TestPipelinedRefusedRecipientInTheMiddle(t *testing.T) {
	sink := newSink(t, smtptest.WithRcptFunc(func(from, to string) error {
		if strings.HasPrefix(to, "no") {
			return sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no such user %s", to)
		}
		return nil
	}))
	d := &dialer{}
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()), delivery.WithDialer(d.dial))
	res := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test", "no1@y.test", "c@y.test", "no2@y.test", "d@y.test"))
	want := []struct {
		code int
		text string
	}{{250, ""}, {550, "no1@y.test"}, {250, ""}, {550, "no2@y.test"}, {250, ""}}
	for i, w := range want {
		if res[i].Reply.Code != w.code || !strings.Contains(res[i].Reply.Message, w.text) {
			t.Errorf("recipient %d: got %v, want %d mentioning %q", i, res[i].Reply, w.code, w.text)
		}
	}
	msgs := sink.Messages()
	if len(msgs) != 1 || strings.Join(msgs[0].To, ",") != "b@y.test,c@y.test,d@y.test" {
		t.Fatalf("sink got %+v, want one message to b, c and d", msgs)
	}
	sendN(t, e.agent, 1) // the session is still in step
	if got := len(d.Dialed()); got != 1 {
		t.Errorf("dialed %d times, want 1", got)
	}
}

// TestPipelinedTransactionsThatEndEarly covers the transactions that a
// pipelining client must still read to the end: the next message on the
// same connection is delivered only if the session stayed in step.
func TestPipelinedTransactionsThatEndEarly(t *testing.T) {
	refuse := sluice.NewReply(550, sluice.EnhancedCode{5, 7, 1}, "refused")
	tests := []struct {
		name string
		opt  smtptest.Option
	}{
		{"MAIL refused", smtptest.WithMailFunc(func(from string) error {
			if from == "bad@x.test" {
				return refuse
			}
			return nil
		})},
		// go-smtp then refuses DATA, with MAIL accepted: RSET follows.
		{"every RCPT refused", smtptest.WithRcptFunc(func(from, to string) error {
			if from == "bad@x.test" {
				return refuse
			}
			return nil
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := newSink(t, tt.opt)
			d := &dialer{}
			e := newAgent(t, delivery.WithSmarthost(sink.Addr()), delivery.WithDialer(d.dial))
			for i, r := range deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "bad@x.test", "b@y.test", "c@y.test")) {
				if r.Outcome != sluice.OutcomeBounced || r.Reply.Code != 550 {
					t.Errorf("recipient %d: got %v %v, want bounced 550", i, r.Outcome, r.Reply)
				}
			}
			sendN(t, e.agent, 2)
			if got := len(d.Dialed()); got != 1 {
				t.Errorf("dialed %d times, want 1", got)
			}
			if got := sink.Count(); got != 2 {
				t.Errorf("sink has %d messages, want 2", got)
			}
		})
	}
}

func TestPipelinedNoRecipientButDATAAccepted(t *testing.T) {
	// RFC 2920 section 3.1: a server may answer DATA with 354 when every
	// RCPT failed; the client then sends the final dot alone.
	d := &dialogue{}
	addr, _ := fakeServer(t, "127.0.0.1:0", func(c net.Conn, r *bufio.Reader) {
		d.play(c, r, "220 p.test ESMTP", []step{
			{"EHLO", "250-p.test\r\n250 PIPELINING"},
			{"MAIL FROM:<bad@x.test>", ""}, {"RCPT TO:<b@y.test>", ""}, {"DATA", "250 ok\r\n550 5.1.1 no\r\n354 go"},
			{".\r\n", "554 5.5.1 no valid recipients"},
			{"MAIL FROM:<a@x.test>", ""}, {"RCPT TO:<b@y.test>", ""}, {"DATA", "250 ok\r\n250 ok\r\n354 go"},
			{"DATA-BODY", "250 2.0.0 queued"},
			{"QUIT", "221 bye"},
		})
	})
	e := newAgent(t, delivery.WithSmarthost(addr))
	if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "bad@x.test", "b@y.test"))[0]; r.Reply.Code != 550 {
		t.Errorf("got %v %v, want 550", r.Outcome, r.Reply)
	}
	sendN(t, e.agent, 1)
	e.agent.Close()
	if errs := d.errors(); len(errs) > 0 {
		t.Errorf("dialogue: %v", errs)
	}
}

// TestDeadCachedConnection closes the server side of an idle cached
// connection, silently or with the 421 an idle timeout gets from Postfix:
// the next message goes out on a new connection at once, with no deferral,
// no dead host and no destination feedback.
func TestDeadCachedConnection(t *testing.T) {
	for _, goodbye := range []string{"", "421 4.4.2 one.test Error: timeout exceeded"} {
		t.Run("goodbye "+goodbye, func(t *testing.T) {
			var closed atomic.Int64
			addr, accepted := fakeServer(t, "127.0.0.1:0", func(c net.Conn, r *bufio.Reader) {
				defer closed.Add(1)
				if !converse(c, r, "220 one.test ESMTP", "250-one.test\r\n250 PIPELINING", "", "", "250 ok\r\n250 ok\r\n354 go") {
					return
				}
				for {
					line, err := r.ReadString('\n')
					if err != nil || line == ".\r\n" {
						break
					}
				}
				io.WriteString(c, "250 2.0.0 queued\r\n")
				if goodbye != "" {
					io.WriteString(c, goodbye+"\r\n")
				}
			})
			reg := prometheus.NewRegistry()
			e := newAgent(t, delivery.WithSmarthost(addr), delivery.WithRegisterer(reg))
			sendN(t, e.agent, 1)
			eventually(t, "the server to close the connection", func() bool { return closed.Load() == 1 })
			for i := range 3 { // each one finds the connection of the one before closed
				if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))[0]; r.Outcome != sluice.OutcomeDelivered {
					t.Fatalf("message %d: got %v %v, want delivered", i, r.Outcome, r.Reply)
				}
				eventually(t, "the server to close the connection", func() bool { return closed.Load() == int64(i+2) })
			}
			if got := accepted.Load(); got != 4 {
				t.Errorf("server saw %d connections, want 4", got)
			}
			if got := metricValue(t, reg, "sluice_delivery_dead_hosts_total", "", ""); got != 0 {
				t.Errorf("dead_hosts_total %v, want 0", got)
			}
			if got := e.logs.records(t, "next hop failed"); len(got) > 0 {
				t.Errorf("a closed cached connection counted as a failure: %v", got)
			}
			if got := e.logs.records(t, "cached connection closed by the next hop, opening a new one"); len(got) != 3 {
				t.Errorf("%d stale connections logged, want 3", len(got))
			}
		})
	}
}

// TestLineBreakInAddressNeverReachesTheWire: a recipient whose address
// holds a CR or LF would end the RCPT line and inject a command; it is
// bounced before anything is sent, and the others are delivered.
func TestLineBreakInAddressNeverReachesTheWire(t *testing.T) {
	sink := newSink(t)
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()))
	res := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test", "c@y.test\r\nRSET", "d@y.test"))
	if res[1].Reply.Code != 553 || res[1].Reply.Enhanced != (sluice.EnhancedCode{5, 1, 3}) {
		t.Errorf("recipient with a line break: got %v, want 553 5.1.3", res[1].Reply)
	}
	if res[0].Reply.Code != 250 || res[2].Reply.Code != 250 {
		t.Errorf("the others: got %v and %v, want 250", res[0].Reply, res[2].Reply)
	}
	msgs := sink.Messages()
	if len(msgs) != 1 || strings.Join(msgs[0].To, ",") != "b@y.test,d@y.test" {
		t.Fatalf("sink got %+v, want one message to b and d", msgs)
	}
}

// TestManyRecipientsInOnePipelinedGroup: MAIL, 300 RCPTs and DATA outgrow
// the session's 8 KiB write buffer, which then writes part of the group
// before the flush; that write needs its deadline too (it had none set, so
// a deadline of now: the transaction failed as a timeout, and the healthy
// next hop was marked dead).
func TestManyRecipientsInOnePipelinedGroup(t *testing.T) {
	sink := newSink(t)
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()))
	var to []string
	for i := range 300 {
		to = append(to, fmt.Sprintf("recipient-number-%03d@y.test", i))
	}
	for i, r := range deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", to...)) {
		if r.Outcome != sluice.OutcomeDelivered {
			t.Fatalf("recipient %d: %v %v, want delivered", i, r.Outcome, r.Reply)
		}
	}
	if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))[0]; r.Outcome != sluice.OutcomeDelivered {
		t.Fatalf("the next message: %v %v, want delivered", r.Outcome, r.Reply)
	}
	msgs := sink.Messages()
	if len(msgs) != 2 || len(msgs[0].To) != 300 {
		t.Fatalf("sink got %d messages (first with %d recipients), want 2 (300)", len(msgs), len(msgs[0].To))
	}
}

// TestThreeHundredReplyIsNotDelivery: a recipient is delivered only on a
// 2xx to the final dot (or to its RCPT's transaction); a next hop that
// answers RCPT or the dot with a 3xx is out of step, and the recipient is
// deferred, not reported delivered.
func TestThreeHundredReplyIsNotDelivery(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"RCPT 3xx", []step{
			{"EHLO", "250 np.test"},
			{"MAIL FROM:<a@x.test>", "250 ok"},
			{"RCPT TO:<b@y.test>", "354 what?"},
			{"RSET", "250 ok"},
			{"QUIT", "221 bye"},
		}},
		{"final dot 3xx", []step{
			{"EHLO", "250 np.test"},
			{"MAIL FROM:<a@x.test>", "250 ok"},
			{"RCPT TO:<b@y.test>", "250 ok"},
			{"DATA", "354 go"},
			{"DATA-BODY", "354 go on"},
			{"QUIT", "221 bye"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &dialogue{}
			addr, _ := fakeServer(t, "127.0.0.1:0", func(c net.Conn, r *bufio.Reader) {
				d.play(c, r, "220 np.test ESMTP", tc.steps)
			})
			e := newAgent(t, delivery.WithSmarthost(addr))
			if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))[0]; r.Outcome != sluice.OutcomeDeferred {
				t.Errorf("got %v %v, want deferred", r.Outcome, r.Reply)
			}
		})
	}
}
