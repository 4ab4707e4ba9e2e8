package dnsbl_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery/dnstest"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/dnsbl"
	"github.com/sluicemta/sluice/smtp"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

// TestQueryName uses the examples of RFC 5782 sections 2.1 and 2.4.
func TestQueryName(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.99", "99.2.0.192.bl.test."},
		{"::ffff:192.0.2.99", "99.2.0.192.bl.test."},
		{"2001:db8:1:2:3:4:567:89ab", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test."},
	} {
		if got := dnsbl.QueryName(netip.MustParseAddr(tc.addr), "bl.test."); got != tc.want {
			t.Errorf("QueryName(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.2", "127.0.0.2"},
		{"127.0.0.2-127.0.0.11", "127.0.0.2-127.0.0.11"},
		{" 127.0.0.2 - 127.0.0.11 ", "127.0.0.2-127.0.0.11"},
		{"127.0.10.7/24", "127.0.10.0-127.0.10.255"},
		{"127.0.0.4/32", "127.0.0.4"},
		{"127.0.0.11-127.0.0.2", ""}, // reversed
		{"::1", ""},
		{"127.0.0.0/8x", ""},
		{"", ""},
	} {
		r, err := dnsbl.ParseRange(tc.in)
		got := ""
		if err == nil {
			got = r.String()
		}
		if got != tc.want {
			t.Errorf("ParseRange(%q) = %q (%v), want %q", tc.in, got, err, tc.want)
		}
	}
}

// lists serves a blocklist bl.test, a zen-like list with code classes and
// an allowlist wl.test on loopback.
func lists(t *testing.T) *dnstest.Server {
	t.Helper()
	s, err := dnstest.NewServer(
		"bl.test. 300 IN SOA ns.bl.test. host.bl.test. 1 3600 600 86400 120",
		"zen.test. 300 IN SOA ns.zen.test. host.zen.test. 1 3600 600 86400 120",
		"wl.test. 300 IN SOA ns.wl.test. host.wl.test. 1 3600 600 86400 120",
		"2.2.0.192.bl.test. 300 IN A 127.0.0.2", // 192.0.2.2: on bl and zen (SBL)
		"2.2.0.192.zen.test. 300 IN A 127.0.0.2",
		"3.2.0.192.zen.test. 300 IN A 127.0.0.10",     // 192.0.2.3: zen PBL only
		"4.2.0.192.zen.test. 300 IN A 127.0.0.200",    // a code neither class counts
		"5.2.0.192.bl.test. 300 IN A 127.255.255.254", // an error code, not a listing
		"6.2.0.192.bl.test. 300 IN A 127.0.0.2",       // 192.0.2.6: listed, but
		"6.2.0.192.wl.test. 300 IN A 127.0.10.2",      // vouched for by the allowlist
		"7.2.0.192.zen.test. 300 IN A 127.0.0.2",      // 192.0.2.7: two codes, both classes
		"7.2.0.192.zen.test. 300 IN A 127.0.0.11",     //
		"1.0.0.127.bl.test. 300 IN A 127.0.0.2",       // loopback, for the acceptor test
		"b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test. 300 IN A 127.0.0.3",
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func zones(t *testing.T) []dnsbl.Zone {
	t.Helper()
	rng := func(s string) dnsbl.Range {
		r, err := dnsbl.ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	return []dnsbl.Zone{
		{Name: "bl.test", Weight: 2},
		{Name: "zen.test", Weight: 3, Codes: []dnsbl.Range{rng("127.0.0.2-127.0.0.9")}},
		{Name: "zen.test", Weight: 1, Codes: []dnsbl.Range{rng("127.0.0.10-127.0.0.11")}},
		{Name: "wl.test.", Weight: -4, Codes: []dnsbl.Range{rng("127.0.0.0/16")}},
	}
}

func newChecker(t *testing.T, s *dnstest.Server, opts ...dnsbl.Option) *dnsbl.Checker {
	t.Helper()
	c, err := dnsbl.New(s.Addr(), zones(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLookupScores(t *testing.T) {
	c := newChecker(t, lists(t))
	for _, tc := range []struct {
		addr  string
		score int
		zones []string
	}{
		{"192.0.2.2", 5, []string{"bl.test", "zen.test"}},
		{"192.0.2.3", 1, []string{"zen.test"}},
		{"192.0.2.4", 0, []string{}},
		{"192.0.2.5", 0, []string{}},
		{"192.0.2.6", -2, []string{"bl.test", "wl.test"}},
		{"192.0.2.7", 4, []string{"zen.test"}}, // both classes count
		{"192.0.2.9", 0, []string{}},           // NXDOMAIN everywhere
		{"::ffff:192.0.2.2", 5, []string{"bl.test", "zen.test"}},
		{"2001:db8:1:2:3:4:567:89ab", 2, []string{"bl.test"}},
	} {
		r := c.Lookup(context.Background(), netip.MustParseAddr(tc.addr))
		if r.Score != tc.score || !reflect.DeepEqual(r.Zones(), tc.zones) || len(r.Failed) != 0 {
			t.Errorf("Lookup(%s) = score %d zones %v failed %v, want %d %v none", tc.addr, r.Score, r.Zones(), r.Failed, tc.score, tc.zones)
		}
	}
	r := c.Lookup(context.Background(), netip.MustParseAddr("192.0.2.7"))
	if len(r.Listings) != 2 || fmt.Sprint(r.Listings[0].Codes) != "[127.0.0.2]" || fmt.Sprint(r.Listings[1].Codes) != "[127.0.0.11]" {
		t.Errorf("listings of 192.0.2.7: %+v, want zen.test 127.0.0.2 then 127.0.0.11", r.Listings)
	}
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestCacheFollowsTTL(t *testing.T) {
	s := lists(t)
	clk := &clock{t: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
	c, err := dnsbl.New(s.Addr(), []dnsbl.Zone{{Name: "bl.test", Weight: 1}},
		dnsbl.WithClock(clk.now), dnsbl.WithCacheTTL(0, 200*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	listed, clean := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.9")
	ctx := context.Background()
	queries := func(addr netip.Addr) int {
		before := s.Queries()
		c.Lookup(ctx, addr)
		return s.Queries() - before
	}
	for _, step := range []struct {
		advance time.Duration
		addr    netip.Addr
		want    int
		why     string
	}{
		{0, listed, 1, "first lookup"},
		{0, clean, 1, "first lookup of a clean client"},
		{100 * time.Second, listed, 0, "within the TTL"},
		{0, clean, 0, "within the negative TTL (120s)"},
		{30 * time.Second, clean, 1, "negative TTL over"},
		{60 * time.Second, listed, 0, "190s: within the capped TTL"},
		{20 * time.Second, listed, 1, "210s: past the 200s cap, though the record says 300s"},
	} {
		clk.add(step.advance)
		if got := queries(step.addr); got != step.want {
			t.Errorf("%s: %d queries, want %d", step.why, got, step.want)
		}
	}
}

func TestFailingZones(t *testing.T) {
	s := lists(t)
	s.Hang("2.2.0.192.bl.test.")
	s.SetRcode("2.2.0.192.zen.test.", dns.RcodeServerFailure)
	c := newChecker(t, s, dnsbl.WithTimeout(300*time.Millisecond))
	start := time.Now()
	r := c.Lookup(context.Background(), netip.MustParseAddr("192.0.2.2"))
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("Lookup with a hung zone took %v, want about 300ms", elapsed)
	}
	if r.Score != 0 || !reflect.DeepEqual(r.Failed, []string{"bl.test", "zen.test"}) {
		t.Fatalf("Lookup = %+v, want score 0 and bl.test, zen.test failed", r)
	}
	// Failures are not cached: the list is asked again.
	s.SetRcode("2.2.0.192.zen.test.", dns.RcodeSuccess)
	if r := c.Lookup(context.Background(), netip.MustParseAddr("192.0.2.2")); r.Score != 3 {
		t.Fatalf("Lookup after zen.test recovered: score %d, want 3", r.Score)
	}
}

func message(addr string) *filter.Message {
	return &filter.Message{Envelope: &sluice.Envelope{Client: sluice.ClientInfo{Addr: netip.MustParseAddrPort(addr)}}}
}

func TestCheckVerdicts(t *testing.T) {
	c := newChecker(t, lists(t), dnsbl.WithRejectScore(5), dnsbl.WithTempfailScore(4))
	chain, err := filter.New(filter.WithFilter("dnsbl", c, filter.AtStage(filter.StageConnect)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		client string
		action filter.Action
		reply  string
		header string
	}{
		{"192.0.2.2:1", filter.Reject, "554 5.7.1 Service unavailable; client [192.0.2.2] blocked using bl.test, zen.test", ""},
		{"192.0.2.7:1", filter.Tempfail, "451 4.7.1 Service unavailable; client [192.0.2.7] listed by zen.test, try again later", ""},
		{"192.0.2.3:1", filter.Accept, "", "score=1 zen.test=127.0.0.10"},
		{"192.0.2.6:1", filter.Accept, "", "score=-2 bl.test=127.0.0.2 wl.test=127.0.10.2"},
		{"192.0.2.9:1", filter.Accept, "", ""},
		{"[::ffff:192.0.2.2]:1", filter.Reject, "554 5.7.1 Service unavailable; client [192.0.2.2] blocked using bl.test, zen.test", ""},
	} {
		t.Run(tc.client, func(t *testing.T) {
			v := chain.RunStage(context.Background(), filter.StageConnect, message(tc.client))
			if v.Action != tc.action {
				t.Fatalf("action %v, want %v", v.Action, tc.action)
			}
			if got := replyText(v.Reply); tc.reply != "" && got != tc.reply {
				t.Errorf("reply %q, want %q", got, tc.reply)
			}
			var got string
			for _, h := range v.Headers {
				if h.Name == "X-Sluice-DNSBL" {
					got = h.Value
				}
			}
			if got != tc.header {
				t.Errorf("header %q, want %q", got, tc.header)
			}
		})
	}
}

func replyText(r *sluice.Reply) string {
	if r == nil {
		return ""
	}
	return r.Error()
}

// TestInAcceptor runs the filter at the connect stage of sluice's
// acceptor: the loopback client is on bl.test (weight 2). Below the
// reject score its message is queued with the header; at it, the client
// gets 554 instead of a greeting.
func TestInAcceptor(t *testing.T) {
	s := lists(t)
	serve := func(reject int) (string, *smtptest.Queue) {
		c := newChecker(t, s, dnsbl.WithRejectScore(reject))
		chain, err := filter.New(filter.WithFilter("dnsbl", c, filter.AtStage(filter.StageConnect)))
		if err != nil {
			t.Fatal(err)
		}
		q := &smtptest.Queue{}
		srv, err := smtp.New(q, smtp.WithHostname("mx.test"), smtp.WithLocalDomains("example.net"), smtp.WithFilters(chain))
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(l) }()
		t.Cleanup(func() {
			srv.Close()
			<-done
		})
		return l.Addr().String(), q
	}

	addr, q := serve(3)
	c, err := gosmtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("alice@example.org", []string{"bob@example.net"}, strings.NewReader("Subject: hi\r\n\r\nhello\r\n")); err != nil {
		t.Fatalf("SendMail: %v", err)
	}
	msgs := q.Messages()
	if len(msgs) != 1 || !strings.Contains(msgs[0].Body, "\r\nX-Sluice-DNSBL: score=2 bl.test=127.0.0.2\r\n") {
		t.Fatalf("queued %+v, want one message with the X-Sluice-DNSBL header", msgs)
	}

	addr, _ = serve(2)
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	greeting, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(greeting), "554 5.7.1 ") || !strings.Contains(string(greeting), "blocked using bl.test") {
		t.Fatalf("greeting %q, want 554 5.7.1 naming bl.test", greeting)
	}
}

func TestNewRejects(t *testing.T) {
	ok := []dnsbl.Zone{{Name: "bl.test", Weight: 1}}
	for _, tc := range []struct {
		name     string
		resolver string
		zones    []dnsbl.Zone
		opts     []dnsbl.Option
	}{
		{"resolver without port", "127.0.0.1", ok, nil},
		{"no zones", "127.0.0.1:53", nil, nil},
		{"bad zone", "127.0.0.1:53", []dnsbl.Zone{{Name: "bl_test", Weight: 1}}, nil},
		{"zero weight", "127.0.0.1:53", []dnsbl.Zone{{Name: "bl.test"}}, nil},
		{"IPv6 code", "127.0.0.1:53", []dnsbl.Zone{{Name: "bl.test", Weight: 1, Codes: []dnsbl.Range{{First: netip.MustParseAddr("::1"), Last: netip.MustParseAddr("::1")}}}}, nil},
		{"zero timeout", "127.0.0.1:53", ok, []dnsbl.Option{dnsbl.WithTimeout(0)}},
		{"TTL bounds reversed", "127.0.0.1:53", ok, []dnsbl.Option{dnsbl.WithCacheTTL(time.Hour, time.Minute)}},
		{"zero cache", "127.0.0.1:53", ok, []dnsbl.Option{dnsbl.WithCacheSize(0)}},
		{"reject score 0", "127.0.0.1:53", ok, []dnsbl.Option{dnsbl.WithRejectScore(0)}},
		{"tempfail at reject", "127.0.0.1:53", ok, []dnsbl.Option{dnsbl.WithRejectScore(3), dnsbl.WithTempfailScore(3)}},
		{"bad header", "127.0.0.1:53", ok, []dnsbl.Option{dnsbl.WithHeader("X DNSBL")}},
		{"nil logger", "127.0.0.1:53", ok, []dnsbl.Option{dnsbl.WithLogger(nil)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := dnsbl.New(tc.resolver, tc.zones, tc.opts...); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}
