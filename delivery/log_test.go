package delivery_test

import (
	"strings"
	"testing"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

func TestDeliveryLogRecordFields(t *testing.T) {
	cfg, err := smtptest.NewTLSConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	sink := newSink(t, smtptest.WithTLS(cfg), smtptest.WithRcptFunc(func(from, to string) error {
		if strings.HasPrefix(to, "gone@") {
			return sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "mailbox unavailable")
		}
		return nil
	}))
	srv := newDNS(t, "logs.test. 60 IN MX 10 mx.logs.test.", "mx.logs.test. 60 IN A 127.0.0.1")
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())))
	msg := newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "ok@logs.test", "gone@logs.test")
	msg.Attempt = 3
	deliver(t, e.agent, msg)
	recs := e.logs.records(t, "delivery")
	if len(recs) != 2 {
		t.Fatalf("got %d records, want one per recipient", len(recs))
	}
	want := []map[string]any{{
		"queue_id": "Q1", "from": "a@x.test", "to": "ok@logs.test", "route": "mx", "relay": "mx.logs.test",
		"ip": sink.Addr(), "source_ip": "127.0.0.1", "tls": true, "tls_version": "TLS 1.3", "code": float64(250),
		"enhanced": "2.0.0", "attempt": float64(3), "result": "delivered", "category": "",
	}, {
		"to": "gone@logs.test", "code": float64(550), "enhanced": "5.1.1", "text": "mailbox unavailable",
		"result": "bounced", "category": "bad-mailbox", "reply": "550 5.1.1 mailbox unavailable",
	}}
	for i, fields := range want {
		for k, v := range fields {
			if recs[i][k] != v {
				t.Errorf("record %d: %s = %v, want %v", i, k, recs[i][k], v)
			}
		}
		for _, k := range []string{"delay", "duration"} {
			if _, ok := recs[i][k].(float64); !ok {
				t.Errorf("record %d: %s = %v, want seconds", i, k, recs[i][k])
			}
		}
	}
}
