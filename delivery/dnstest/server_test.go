package dnstest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemta/sluice/delivery/dnstest"
)

func newServer(t *testing.T, records ...string) *dnstest.Server {
	t.Helper()
	s, err := dnstest.NewServer(records...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func query(t *testing.T, net, addr, name string, qtype uint16) (*dns.Msg, error) {
	t.Helper()
	c := &dns.Client{Net: net, Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	r, _, err := c.Exchange(m, addr)
	return r, err
}

func TestAnswers(t *testing.T) {
	s := newServer(t,
		"example.com. 300 IN MX 10 mx1.example.com.",
		"example.com. 300 IN MX 20 mx2.example.com.",
		"mx1.example.com. 300 IN A 127.0.0.1",
		"Mixed.Example.com. 300 IN AAAA ::1",
	)
	tests := []struct {
		net       string
		name      string
		qtype     uint16
		wantRcode int
		wantN     int
	}{
		{"udp", "example.com", dns.TypeMX, dns.RcodeSuccess, 2},
		{"tcp", "example.com", dns.TypeMX, dns.RcodeSuccess, 2},
		{"udp", "EXAMPLE.com", dns.TypeMX, dns.RcodeSuccess, 2},
		{"udp", "mx1.example.com", dns.TypeA, dns.RcodeSuccess, 1},
		{"udp", "mixed.example.com", dns.TypeAAAA, dns.RcodeSuccess, 1},
		{"udp", "mx1.example.com", dns.TypeAAAA, dns.RcodeSuccess, 0}, // exists, no data
		{"udp", "nowhere.example.com", dns.TypeA, dns.RcodeNameError, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s/%s", tt.net, tt.name, dns.TypeToString[tt.qtype]), func(t *testing.T) {
			r, err := query(t, tt.net, s.Addr(), tt.name, tt.qtype)
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tt.wantRcode || len(r.Answer) != tt.wantN || !r.Authoritative {
				t.Errorf("got rcode %s, %d answers, aa %v; want %s, %d answers, aa",
					dns.RcodeToString[r.Rcode], len(r.Answer), r.Authoritative, dns.RcodeToString[tt.wantRcode], tt.wantN)
			}
		})
	}
	if got := s.Queries(); got != len(tests) {
		t.Errorf("Queries() = %d, want %d", got, len(tests))
	}
}

func TestAddRemoveRcode(t *testing.T) {
	s := newServer(t)
	if err := s.Add("a.test. 60 IN A 192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("not a record"); err == nil {
		t.Error("Add accepted a malformed record")
	}
	r, err := query(t, "udp", s.Addr(), "a.test", dns.TypeA)
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("after Add: %v, %v", r, err)
	}
	s.SetRcode("a.test", dns.RcodeServerFailure)
	if r, err := query(t, "udp", s.Addr(), "a.test", dns.TypeA); err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("after SetRcode: %v, %v", r, err)
	}
	s.SetRcode("a.test", dns.RcodeSuccess)
	s.Remove("a.test", dns.TypeA)
	if r, err := query(t, "udp", s.Addr(), "a.test", dns.TypeA); err != nil || r.Rcode != dns.RcodeNameError {
		t.Fatalf("after Remove: %v, %v", r, err)
	}
}

func TestTruncatesLargeUDPAnswers(t *testing.T) {
	s := newServer(t)
	for i := range 40 {
		if err := s.Add(fmt.Sprintf("big.test. 60 IN MX %d mx%d.a-rather-long-name.big.test.", i, i)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := query(t, "udp", s.Addr(), "big.test", dns.TypeMX)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated {
		t.Errorf("UDP answer with 40 MX records not truncated (%d answers)", len(r.Answer))
	}
	r, err = query(t, "tcp", s.Addr(), "big.test", dns.TypeMX)
	if err != nil {
		t.Fatal(err)
	}
	if r.Truncated || len(r.Answer) != 40 {
		t.Errorf("TCP answer: truncated %v, %d answers; want all 40", r.Truncated, len(r.Answer))
	}
}

func TestHang(t *testing.T) {
	s := newServer(t, "slow.test. 60 IN A 192.0.2.1")
	s.Hang("slow.test")
	c := &dns.Client{Net: "udp"}
	m := new(dns.Msg)
	m.SetQuestion("slow.test.", dns.TypeA)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := c.ExchangeContext(ctx, m, s.Addr()); err == nil {
		t.Fatal("hung name answered")
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("query failed after %v, before the deadline", d)
	}
	if err := s.Close(); err != nil { // must not wait for the hung query
		t.Fatal(err)
	}
}

func TestNegativeAnswersCarrySOA(t *testing.T) {
	s := newServer(t,
		"zone.test. 3600 IN SOA ns.zone.test. admin.zone.test. 1 3600 600 86400 120",
		"host.zone.test. 300 IN A 127.0.0.1",
		"other.test. 300 IN A 127.0.0.1",
	)
	tests := []struct {
		name    string
		qtype   uint16
		wantSOA bool
	}{
		{"missing.zone.test", dns.TypeA, true}, // NXDOMAIN under the zone
		{"host.zone.test", dns.TypeMX, true},   // NODATA under the zone
		{"host.zone.test", dns.TypeA, false},   // positive answer
		{"missing.other.test", dns.TypeA, false},
	}
	for _, tt := range tests {
		r, err := query(t, "udp", s.Addr(), tt.name, tt.qtype)
		if err != nil {
			t.Fatal(err)
		}
		var soa *dns.SOA
		for _, rr := range r.Ns {
			soa, _ = rr.(*dns.SOA)
		}
		if (soa != nil) != tt.wantSOA {
			t.Errorf("%s %s: SOA in authority = %v, want %v", tt.name, dns.TypeToString[tt.qtype], soa, tt.wantSOA)
		}
		if soa != nil && soa.Minttl != 120 {
			t.Errorf("%s: SOA minimum %d, want 120", tt.name, soa.Minttl)
		}
	}
}
