package delivery_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

func newRoutes(t *testing.T, pools []delivery.Pool, routes ...delivery.Route) *delivery.Routes {
	t.Helper()
	rt, err := delivery.NewRoutes(pools, routes)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func pool(name string, addrs ...string) delivery.Pool {
	p := delivery.Pool{Name: name}
	for _, a := range addrs {
		p.Hosts = append(p.Hosts, delivery.PoolHost{Addr: a})
	}
	return p
}

var deferAll = smtptest.WithRcptFunc(func(from, to string) error {
	return sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1}, "blocked from this IP, try later")
})

func TestSourceIPAndHeloPinnedPerRoute(t *testing.T) {
	sink := newSink(t)
	srv := newDNS(t, "sub.mx.test. 60 IN A 127.0.0.1")
	rt := newRoutes(t, []delivery.Pool{pool("relay", sink.Addr())},
		// Seed 003: one ISP's mail leaves through another address.
		delivery.Route{Domain: "pinned.test", Pool: "relay",
			Egress: delivery.Egress{SourceIP: netip.MustParseAddr("127.0.0.2"), Helo: "out2.mta.test"}},
		delivery.Route{Domain: ".mx.test",
			Egress: delivery.Egress{SourceIP: netip.MustParseAddr("127.0.0.3"), Helo: "out3.mta.test"}},
		delivery.Route{Domain: "*", Pool: "relay"},
	)
	e := newAgent(t, delivery.WithRoutes(rt), delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())))
	tests := []struct {
		to, source, helo string
	}{
		{"b@pinned.test", "127.0.0.2", "out2.mta.test"},
		{"b@sub.mx.test", "127.0.0.3", "out3.mta.test"},
		{"b@other.test", "127.0.0.1", "mta.test"},
	}
	for i, tt := range tests {
		if r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", tt.to))[0]; r.Outcome != sluice.OutcomeDelivered {
			t.Fatalf("%s: got %v %v, want delivered", tt.to, r.Outcome, r.Reply)
		}
		m := sink.Messages()[i]
		host, _, _ := net.SplitHostPort(m.RemoteAddr)
		if host != tt.source || m.Helo != tt.helo {
			t.Errorf("%s: sink saw source %s and EHLO %q, want %s and %q", tt.to, host, m.Helo, tt.source, tt.helo)
		}
		if got := e.logs.records(t, "delivery")[i]["source_ip"]; got != tt.source {
			t.Errorf("%s: log source_ip = %v, want %s", tt.to, got, tt.source)
		}
	}
}

func TestSetRoutesReroutesQueuedMail(t *testing.T) {
	a := newSink(t, deferAll)
	b := newSink(t)
	e := newAgent(t, delivery.WithRoutes(newRoutes(t, []delivery.Pool{pool("a", a.Addr())}, delivery.Route{Domain: "*", Pool: "a"})))
	msg := newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test")
	if r := deliver(t, e.agent, msg)[0]; r.Outcome != sluice.OutcomeDeferred {
		t.Fatalf("attempt 1 at route A: got %v %v, want deferred", r.Outcome, r.Reply)
	}
	// The operator moves the domain to B; the queued message was never
	// told where it goes.
	e.agent.SetRoutes(newRoutes(t, []delivery.Pool{pool("b", b.Addr())}, delivery.Route{Domain: "y.test", Pool: "b"}))
	msg.Attempt = 2
	if r := deliver(t, e.agent, msg)[0]; r.Outcome != sluice.OutcomeDelivered || b.Count() != 1 {
		t.Fatalf("attempt 2 after SetRoutes: got %v %v, B has %d; want delivered at B", r.Outcome, r.Reply, b.Count())
	}
	recs := e.logs.records(t, "delivery")
	if recs[0]["route"] != "pool:a" || recs[1]["route"] != "pool:b" {
		t.Errorf("log routes %v then %v, want pool:a then pool:b", recs[0]["route"], recs[1]["route"])
	}
}

func TestFallbackTakesDeferredRecipients(t *testing.T) {
	primary := newSink(t, deferAll)
	slow := newSink(t)
	rt := newRoutes(t, []delivery.Pool{pool("primary", primary.Addr()), pool("slow", slow.Addr())},
		delivery.Route{Domain: "*", Pool: "primary", Fallback: "slow"})
	e := newAgent(t, delivery.WithRoutes(rt))
	msg := newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test")
	if r := deliver(t, e.agent, msg)[0]; r.Outcome != sluice.OutcomeDeferred || slow.Count() != 0 {
		t.Fatalf("attempt 1: got %v %v, fallback has %d; want deferred by the primary", r.Outcome, r.Reply, slow.Count())
	}
	msg.Attempt = 2
	if r := deliver(t, e.agent, msg)[0]; r.Outcome != sluice.OutcomeDelivered || slow.Count() != 1 {
		t.Fatalf("attempt 2: got %v %v, fallback has %d; want delivered by the fallback", r.Outcome, r.Reply, slow.Count())
	}
	// Fresh mail still takes the primary path.
	deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "c@y.test"))
	if slow.Count() != 1 {
		t.Errorf("a first attempt went to the fallback")
	}
}

func TestPoolStrategies(t *testing.T) {
	refused := newSink(t)
	down := refused.Addr()
	refused.Close()
	a, b := newSink(t), newSink(t)
	failover := pool("failover", down, a.Addr(), b.Addr())
	spread := delivery.Pool{Name: "spread", Strategy: delivery.Spread,
		Hosts: []delivery.PoolHost{{Addr: a.Addr(), Weight: 1}, {Addr: b.Addr(), Weight: 3}}}
	for _, tt := range []struct {
		pool  delivery.Pool
		check func(na, nb int) bool
		want  string
	}{
		{failover, func(na, nb int) bool { return na == 40 && nb == 0 }, "all to the first host up"},
		{spread, func(na, nb int) bool { return na > 0 && nb > na }, "some to each, more to the heavier"},
	} {
		t.Run(tt.pool.Name, func(t *testing.T) {
			ca, cb := a.Count(), b.Count()
			e := newAgent(t, delivery.WithRoutes(newRoutes(t, []delivery.Pool{tt.pool}, delivery.Route{Domain: "*", Pool: tt.pool.Name})),
				delivery.WithShaping(delivery.Shaping{MaxPerConnection: 1}), delivery.WithDeadHostTime(0))
			sendN(t, e.agent, 40)
			if na, nb := a.Count()-ca, b.Count()-cb; !tt.check(na, nb) {
				t.Errorf("hosts got %d and %d of 40 messages, want %s", na, nb, tt.want)
			}
		})
	}
}

func TestTLSRequired(t *testing.T) {
	cfg, err := smtptest.NewTLSConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		sink []smtptest.Option
		opts []delivery.Option
		want sluice.Outcome
	}{
		{"offered", []smtptest.Option{smtptest.WithTLS(cfg)}, nil, sluice.OutcomeDelivered},
		{"not offered", nil, nil, sluice.OutcomeDeferred},
		// The certificate does not verify: no plain-text retry.
		{"handshake fails", []smtptest.Option{smtptest.WithTLS(cfg)},
			[]delivery.Option{delivery.WithTLS(&tls.Config{ServerName: "mx.test"})}, sluice.OutcomeDeferred},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := newSink(t, tt.sink...)
			p := pool("tls", sink.Addr())
			p.TLS = delivery.TLSRequired
			e := newAgent(t, append(tt.opts, delivery.WithRoutes(newRoutes(t, []delivery.Pool{p}, delivery.Route{Domain: "*", Pool: "tls"})))...)
			r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))[0]
			if r.Outcome != tt.want {
				t.Fatalf("got %v %v, want %v", r.Outcome, r.Reply, tt.want)
			}
			if tt.want == sluice.OutcomeDelivered {
				if !sink.Messages()[0].TLS {
					t.Error("delivered without TLS")
				}
				if v := e.logs.records(t, "delivery")[0]["tls_version"]; v != "TLS 1.3" {
					t.Errorf("log tls_version = %v, want TLS 1.3", v)
				}
			} else if sink.Count() != 0 {
				t.Error("a message went out in plain text")
			}
		})
	}
}

// mta is a go-smtp server for LMTP and AUTH tests. LMTP recipients whose
// local part is "full" get a 452 after the final dot; with users set,
// MAIL needs AUTH PLAIN.
type mta struct {
	users map[string]string
	mu    sync.Mutex
	got   []string // recipients of accepted messages
}

func startMTA(t *testing.T, m *mta, lmtp bool, tlsCfg *tls.Config) string {
	t.Helper()
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mtaSession{m: m}, nil }))
	s.LMTP, s.Domain, s.TLSConfig = lmtp, "mta.peer.test", tlsCfg
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(l) }()
	t.Cleanup(func() { s.Close(); <-done })
	return l.Addr().String()
}

type mtaSession struct {
	m      *mta
	authed bool
	to     []string
}

func (s *mtaSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *mtaSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if s.m.users[user] != pass || pass == "" {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		s.authed = true
		return nil
	}), nil
}
func (s *mtaSession) Mail(string, *smtp.MailOptions) error {
	if s.m.users != nil && !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	return nil
}
func (s *mtaSession) Rcpt(to string, _ *smtp.RcptOptions) error { s.to = append(s.to, to); return nil }
func (s *mtaSession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.got = append(s.m.got, s.to...)
	return nil
}
func (s *mtaSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	io.Copy(io.Discard, r)
	for _, to := range s.to {
		if strings.HasPrefix(to, "full@") {
			status.SetStatus(to, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"})
			continue
		}
		s.m.mu.Lock()
		s.m.got = append(s.m.got, to)
		s.m.mu.Unlock()
		status.SetStatus(to, nil)
	}
	return nil
}
func (s *mtaSession) Reset()        { s.to = nil }
func (s *mtaSession) Logout() error { return nil }

func TestLMTPPerRecipientReplies(t *testing.T) {
	m := &mta{}
	addr := startMTA(t, m, true, nil)
	p := pool("mailstore", addr)
	p.Transport = delivery.LMTP
	e := newAgent(t, delivery.WithRoutes(newRoutes(t, []delivery.Pool{p}, delivery.Route{Domain: "local.test", Pool: "mailstore"})))
	res := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "ok@local.test", "full@local.test", "also@local.test"))
	want := []struct {
		outcome sluice.Outcome
		code    int
	}{{sluice.OutcomeDelivered, 250}, {sluice.OutcomeDeferred, 452}, {sluice.OutcomeDelivered, 250}}
	for i, w := range want {
		if res[i].Outcome != w.outcome || res[i].Reply.Code != w.code {
			t.Errorf("recipient %d: got %v %v, want %v %d", i, res[i].Outcome, res[i].Reply, w.outcome, w.code)
		}
	}
	if got := strings.Join(m.got, ","); got != "ok@local.test,also@local.test" {
		t.Errorf("server stored %q", got)
	}
}

func TestPoolAuth(t *testing.T) {
	cfg, err := smtptest.NewTLSConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	m := &mta{users: map[string]string{"sluice": "s3cret"}}
	addr := startMTA(t, m, false, cfg)
	for _, tt := range []struct {
		pass string
		want sluice.Outcome
	}{{"s3cret", sluice.OutcomeDelivered}, {"wrong", sluice.OutcomeDeferred}} {
		p := pool("auth", addr)
		p.Username, p.Password = "sluice", tt.pass
		e := newAgent(t, delivery.WithRoutes(newRoutes(t, []delivery.Pool{p}, delivery.Route{Domain: "*", Pool: "auth"})))
		r := deliver(t, e.agent, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))[0]
		// A refused login defers: it is our configuration, not the mail.
		if r.Outcome != tt.want {
			t.Errorf("password %q: got %v %v, want %v", tt.pass, r.Outcome, r.Reply, tt.want)
		}
	}
	if len(m.got) != 1 {
		t.Errorf("server accepted %d messages, want 1", len(m.got))
	}
}
