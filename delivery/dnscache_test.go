package delivery

import (
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestDNSCacheBounded(t *testing.T) {
	now := time.Unix(0, 0)
	c := newDNSCache(3, time.Minute, func() time.Time { return now })
	a := func(name string, ttl int) []dns.RR {
		rr, err := dns.NewRR(fmt.Sprintf("%s %d IN A 127.0.0.1", name, ttl))
		if err != nil {
			t.Fatal(err)
		}
		return []dns.RR{rr}
	}
	for i := range 10 {
		name := fmt.Sprintf("h%d.test.", i)
		c.put(name, dns.TypeA, a(name, 60), false, nil)
		if n := len(c.entries); n > 3 {
			t.Fatalf("after %d puts the cache holds %d entries, want at most 3", i+1, n)
		}
		if _, ok := c.get(name, dns.TypeA); !ok {
			t.Fatalf("entry %s missing right after put", name)
		}
	}
	// Expired entries are dropped before live ones.
	c = newDNSCache(2, time.Minute, func() time.Time { return now })
	c.put("short.test.", dns.TypeA, a("short.test.", 1), false, nil)
	c.put("long.test.", dns.TypeA, a("long.test.", 600), false, nil)
	now = now.Add(2 * time.Second)
	c.put("new.test.", dns.TypeA, a("new.test.", 60), false, nil)
	if _, ok := c.get("long.test.", dns.TypeA); !ok {
		t.Error("a live entry was evicted while an expired one could go")
	}
}

func TestDNSCacheNegativeTTLFromSOA(t *testing.T) {
	now := time.Unix(0, 0)
	c := newDNSCache(10, 10*time.Minute, func() time.Time { return now })
	soa, err := dns.NewRR("test. 120 IN SOA ns.test. admin.test. 1 3600 600 86400 30")
	if err != nil {
		t.Fatal(err)
	}
	resp := &dns.Msg{Ns: []dns.RR{soa}}
	c.put("gone.test.", dns.TypeMX, nil, true, resp)
	now = now.Add(29 * time.Second)
	if e, ok := c.get("GONE.test.", dns.TypeMX); !ok || !e.nx {
		t.Fatalf("NXDOMAIN not cached for the SOA MINIMUM (30s): %v %v", e, ok)
	}
	now = now.Add(2 * time.Second)
	if _, ok := c.get("gone.test.", dns.TypeMX); ok {
		t.Error("NXDOMAIN cached beyond min(SOA TTL, MINIMUM) = 30s")
	}
	// The option caps a long SOA negative TTL.
	c = newDNSCache(10, 10*time.Second, func() time.Time { return now })
	soa.(*dns.SOA).Minttl = 3600
	c.put("gone.test.", dns.TypeMX, nil, true, resp)
	now = now.Add(11 * time.Second)
	if _, ok := c.get("gone.test.", dns.TypeMX); ok {
		t.Error("negative entry outlived the WithNegativeTTL cap")
	}
}
