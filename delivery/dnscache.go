package delivery

import (
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// dnsCache keeps DNS answers for their TTL (RFC 1035 section 3.2.1) and
// "no such domain" / "no data" answers for the negative TTL of RFC 2308
// section 5: the SOA of the authority section (the smaller of its TTL and
// MINIMUM), capped by negTTL, or negTTL when the answer has no SOA.
// Failures (SERVFAIL, timeouts) are never cached, so a resolver outage
// ends as soon as the resolver answers again. It holds at most max
// entries. It is safe for concurrent use.
type dnsCache struct {
	max    int
	negTTL time.Duration
	now    func() time.Time

	mu      sync.Mutex // guards entries
	entries map[cacheKey]cacheEntry
}

type cacheKey struct {
	name  string // lower-case, fully qualified
	qtype uint16
}

type cacheEntry struct {
	rrs     []dns.RR // nil for a negative entry
	nx      bool     // NXDOMAIN (otherwise a negative entry is NODATA)
	expires time.Time
}

func newDNSCache(max int, negTTL time.Duration, now func() time.Time) *dnsCache {
	return &dnsCache{max: max, negTTL: negTTL, now: now, entries: make(map[cacheKey]cacheEntry)}
}

// get returns a live entry for name and qtype.
func (c *dnsCache) get(name string, qtype uint16) (cacheEntry, bool) {
	if c == nil {
		return cacheEntry{}, false
	}
	k := cacheKey{strings.ToLower(name), qtype}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok {
		return cacheEntry{}, false
	}
	if !c.now().Before(e.expires) {
		delete(c.entries, k)
		return cacheEntry{}, false
	}
	return e, true
}

// put stores a successful answer (rrs may be empty: NODATA) or, with nx,
// an NXDOMAIN answer. resp is the whole response, read for the SOA of a
// negative answer.
func (c *dnsCache) put(name string, qtype uint16, rrs []dns.RR, nx bool, resp *dns.Msg) {
	if c == nil {
		return
	}
	var ttl time.Duration
	if len(rrs) > 0 && !nx {
		ttl = minTTL(rrs)
	} else {
		ttl = c.negativeTTL(resp)
	}
	if ttl <= 0 {
		return
	}
	k := cacheKey{strings.ToLower(name), qtype}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		c.evictLocked(now)
	}
	c.entries[k] = cacheEntry{rrs: rrs, nx: nx, expires: now.Add(ttl)}
}

// evictLocked makes room for one entry: it drops every expired entry, and
// if none had expired, one arbitrary entry (map order is random, so no
// caller can pin the cache with names of its choosing).
func (c *dnsCache) evictLocked(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	if len(c.entries) < c.max {
		return
	}
	for k := range c.entries {
		delete(c.entries, k)
		return
	}
}

func (c *dnsCache) negativeTTL(resp *dns.Msg) time.Duration {
	if resp == nil {
		return c.negTTL
	}
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			ttl := time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
			return min(ttl, c.negTTL)
		}
	}
	return c.negTTL
}

func minTTL(rrs []dns.RR) time.Duration {
	ttl := rrs[0].Header().Ttl
	for _, rr := range rrs[1:] {
		ttl = min(ttl, rr.Header().Ttl)
	}
	return time.Duration(ttl) * time.Second
}
