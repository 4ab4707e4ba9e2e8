package delivery_test

import (
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/internal/blackhole"
	"github.com/sluicemta/sluice/queue"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

func TestSmarthostDeliversBodyUnchanged(t *testing.T) {
	sink := newSink(t)
	reg := prometheus.NewRegistry()
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()), delivery.WithRegisterer(reg))
	var b strings.Builder
	b.WriteString("Subject: test\r\nFrom: a@x.test\r\n\r\n")
	for i := range 3000 {
		b.WriteString(".line with a leading dot and some text to make it long ")
		b.WriteString(strings.Repeat("x", i%50))
		b.WriteString("\r\n")
	}
	body := b.String()
	msg := newMessage(body, "a@x.test", "b@one.test", "c@two.test")

	res := deliver(t, e.agent, msg)
	for i, r := range res {
		if r.Outcome != sluice.OutcomeDelivered || r.Reply == nil || r.Reply.Code != 250 {
			t.Errorf("recipient %d: got %v %v, want delivered with 250", i, r.Outcome, r.Reply)
		}
	}
	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sink got %d messages, want 1 (one session for all recipients)", len(msgs))
	}
	if got := string(msgs[0].Data); got != body {
		t.Errorf("body changed in transit: got %d bytes, want %d", len(got), len(body))
	}
	if got := strings.Join(msgs[0].To, ","); got != "b@one.test,c@two.test" {
		t.Errorf("got recipients %q", got)
	}

	recs := e.logs.records(t, "delivery")
	if len(recs) != 2 {
		t.Fatalf("got %d delivery log records, want 2", len(recs))
	}
	r := recs[0]
	for k, want := range map[string]any{
		"queue_id": "Q1", "from": "a@x.test", "to": "b@one.test", "relay": "127.0.0.1",
		"ip": sink.Addr(), "attempt": float64(1), "tls": false, "result": "delivered",
	} {
		if r[k] != want {
			t.Errorf("log %s = %v, want %v", k, r[k], want)
		}
	}
	if reply, _ := r["reply"].(string); !strings.HasPrefix(reply, "250 ") {
		t.Errorf("log reply = %q, want a 250 reply", reply)
	}
	if _, ok := r["delay"]; !ok {
		t.Error("log record has no delay")
	}
	if got := counterValue(t, reg, "delivered"); got != 2 {
		t.Errorf("sluice_delivery_attempts_total{result=delivered} = %v, want 2", got)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_delivery_attempts_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no sluice_delivery_attempts_total{result=%q}", result)
	return 0
}

func TestPerRecipientReplies(t *testing.T) {
	sink := newSink(t, smtptest.WithRcptFunc(func(from, to string) error {
		switch {
		case strings.HasPrefix(to, "unknown@"):
			return sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no such user")
		case strings.HasPrefix(to, "full@"):
			return sluice.NewReply(452, sluice.EnhancedCode{4, 2, 2}, "mailbox full")
		}
		return nil
	}))
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()))
	res := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "unknown@y.test", "ok@y.test", "full@y.test"))
	want := []struct {
		outcome  sluice.Outcome
		code     int
		enhanced string
	}{
		{sluice.OutcomeBounced, 550, "5.1.1"},
		{sluice.OutcomeDelivered, 250, "2.0.0"},
		{sluice.OutcomeDeferred, 452, "4.2.2"},
	}
	for i, w := range want {
		r := res[i]
		if r.Outcome != w.outcome || r.Reply == nil || r.Reply.Code != w.code || r.Reply.Enhanced.String() != w.enhanced {
			t.Errorf("recipient %d: got %v %v, want %v %d %s", i, r.Outcome, r.Reply, w.outcome, w.code, w.enhanced)
		}
	}
	if msgs := sink.Messages(); len(msgs) != 1 || strings.Join(msgs[0].To, ",") != "ok@y.test" {
		t.Errorf("sink got %+v, want one message to ok@y.test", msgs)
	}
}

func TestDataAndMailReplies(t *testing.T) {
	tests := []struct {
		name string
		opt  smtptest.Option
		want sluice.Outcome
		code int
	}{
		{"DATA 554", smtptest.WithDataFunc(func(*smtptest.Message) error {
			return sluice.NewReply(554, sluice.EnhancedCode{5, 7, 1}, "spam")
		}), sluice.OutcomeBounced, 554},
		{"DATA 451", smtptest.WithDataFunc(func(*smtptest.Message) error {
			return sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1}, "greylisted")
		}), sluice.OutcomeDeferred, 451},
		{"MAIL 550", smtptest.WithMailFunc(func(string) error {
			return sluice.NewReply(550, sluice.EnhancedCode{5, 7, 1}, "sender refused")
		}), sluice.OutcomeBounced, 550},
		{"MAIL 421", smtptest.WithMailFunc(func(string) error {
			return sluice.NewReply(421, sluice.EnhancedCode{4, 3, 2}, "shutting down")
		}), sluice.OutcomeDeferred, 421},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := newSink(t, tt.opt)
			e := newAgent(t, delivery.WithSmarthost(sink.Addr()))
			res := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test", "c@y.test"))
			for i, r := range res {
				if r.Outcome != tt.want || r.Reply == nil || r.Reply.Code != tt.code {
					t.Errorf("recipient %d: got %v %v, want %v %d", i, r.Outcome, r.Reply, tt.want, tt.code)
				}
			}
		})
	}
}

func TestHungPeerDefersWithinDeadline(t *testing.T) {
	tests := []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"never greets", func(t *testing.T) string { return blackhole.Start(t, "127.0.0.1:0") }},
		{"connection refused", func(t *testing.T) string {
			s := newSink(t)
			addr := s.Addr()
			s.Close()
			return addr
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newAgent(t, delivery.WithSmarthost(tt.addr(t)))
			start := time.Now()
			res := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("attempt took %v with 200ms timeouts", d)
			}
			r := res[0]
			if r.Outcome != sluice.OutcomeDeferred || r.Reply == nil || !r.Reply.Temporary() {
				t.Errorf("got %v %v, want deferred with a 4xx reply", r.Outcome, r.Reply)
			}
			if !strings.Contains(r.Reply.Message, "127.0.0.1") {
				t.Errorf("reply %q does not name the next hop", r.Reply.Message)
			}
		})
	}
}

func TestCorruptBodyAbortsAndDefers(t *testing.T) {
	sink := newSink(t)
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()))
	env := &sluice.Envelope{ID: "Q9", From: "a@x.test", Recipients: []sluice.Recipient{{Address: "b@y.test"}}}
	msg := queue.NewMessage(env, 100, func() (io.ReadCloser, error) {
		return io.NopCloser(&failingReader{data: []byte("Subject: x\r\n\r\npartial"), err: errDamaged}), nil
	})
	res := deliver(t, e.agent, msg)
	if res[0].Outcome != sluice.OutcomeDeferred || !strings.Contains(res[0].Reply.Message, "checksum mismatch") {
		t.Errorf("got %v %v, want deferred naming the damage", res[0].Outcome, res[0].Reply)
	}
	// Close waits for the sink's sessions, so the aborted DATA is over.
	sink.Close()
	if n := sink.Count(); n != 0 {
		t.Errorf("sink accepted %d messages from a damaged body, want 0", n)
	}
}

func TestSTARTTLS(t *testing.T) {
	cfg, err := smtptest.NewTLSConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    []delivery.Option
		wantTLS bool
	}{
		{"opportunistic", nil, true},
		{"handshake fails, plain retry", []delivery.Option{delivery.WithTLS(&tls.Config{ServerName: "mx.test"})}, false},
		{"disabled", []delivery.Option{delivery.WithTLS(nil)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := newSink(t, smtptest.WithTLS(cfg))
			e := newAgent(t, append(tt.opts, delivery.WithSmarthost(sink.Addr()))...)
			res := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))
			if res[0].Outcome != sluice.OutcomeDelivered {
				t.Fatalf("got %v %v, want delivered", res[0].Outcome, res[0].Reply)
			}
			m := sink.Messages()[0]
			if m.TLS != tt.wantTLS || m.Helo != "mta.test" {
				t.Errorf("got TLS %v helo %q, want TLS %v helo mta.test", m.TLS, m.Helo, tt.wantTLS)
			}
			if got := e.logs.records(t, "delivery")[0]["tls"]; got != tt.wantTLS {
				t.Errorf("log tls = %v, want %v", got, tt.wantTLS)
			}
		})
	}
}

func TestSMTPUTF8(t *testing.T) {
	for _, offered := range []bool{false, true} {
		sink := newSink(t, smtptest.WithSMTPUTF8(offered))
		e := newAgent(t, delivery.WithSmarthost(sink.Addr()))
		msg := newMessage("x: y\r\n\r\nhi\r\n", "jörg@x.test", "b@y.test")
		msg.Envelope.SMTPUTF8 = true
		r := deliver(t, e.agent, msg)[0]
		switch {
		case offered && (r.Outcome != sluice.OutcomeDelivered || !sink.Messages()[0].SMTPUTF8):
			t.Errorf("SMTPUTF8 offered: got %v %v, want delivered with SMTPUTF8", r.Outcome, r.Reply)
		case !offered && (r.Outcome != sluice.OutcomeBounced || r.Reply.Code != 553 || r.Reply.Enhanced.String() != "5.6.7"):
			t.Errorf("SMTPUTF8 not offered: got %v %v, want bounced 553 5.6.7", r.Outcome, r.Reply)
		}
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		opts []delivery.Option
	}{
		{"empty hostname", []delivery.Option{delivery.WithHostname("")}},
		{"bad smarthost", []delivery.Option{delivery.WithSmarthost("no-port")}},
		{"bad resolver", []delivery.Option{delivery.WithResolvers("1.2.3.4")}},
		{"port 0", []delivery.Option{delivery.WithPort(0)}},
		{"max hosts 0", []delivery.Option{delivery.WithMaxHosts(0)}},
		{"negative timeout", []delivery.Option{delivery.WithTimeouts(delivery.Timeouts{DNS: -1})}},
		{"nil logger", []delivery.Option{delivery.WithLogger(nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := append([]delivery.Option{delivery.WithResolvers("127.0.0.1:53")}, tt.opts...)
			if _, err := delivery.New(&recorder{}, opts...); err == nil {
				t.Error("New accepted it")
			}
		})
	}
	if _, err := delivery.New(nil); err == nil {
		t.Error("New accepted a nil Enqueuer")
	}
}
