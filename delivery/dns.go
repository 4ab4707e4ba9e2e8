package delivery

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"
)

// errNoSuchDomain is returned by resolver.lookup for an NXDOMAIN answer.
var errNoSuchDomain = errors.New("no such domain")

// Bounds of the DNS cache's lifetimes.
const (
	maxCacheTTL    = time.Hour       // positive and negative answers
	defaultNegTTL  = 5 * time.Minute // negative answer without an SOA
	maxNegativeTTL = time.Hour       // RFC 2308 section 5 suggests at most 3h
)

// resolver asks DNS servers in turn, over UDP with a retry over TCP when
// the answer is truncated, and caches answers for their TTL. It is safe
// for concurrent use.
type resolver struct {
	servers  []string
	timeout  time.Duration // per query to one server
	cache    *dnsCache     // nil: no caching
	failures atomic.Uint64 // lookups no server answered (NXDOMAIN is an answer)
}

// lookup returns the answer records of type qtype for name; an empty
// slice and no error means the name exists without such records (NODATA).
// An NXDOMAIN answer returns errNoSuchDomain; any other failure (SERVFAIL,
// timeouts, unreachable servers) from every server returns the last
// error, and is not cached.
func (r *resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	fqdn, err := toASCII(name)
	if err != nil {
		return nil, err
	}
	key := cacheKey{strings.ToLower(fqdn), qtype}
	if e, ok := r.cache.get(key); ok {
		if e.nxdomain {
			return nil, errNoSuchDomain
		}
		return e.rrs, nil
	}
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.SetEdns0(1232, false)
	lastErr := errors.New("no resolvers")
	for _, srv := range r.servers {
		resp, err := r.exchange(ctx, m, srv)
		switch {
		case err != nil:
			lastErr = fmt.Errorf("%s %s via %s: %w", dns.TypeToString[qtype], name, srv, err)
		case resp.Rcode == dns.RcodeSuccess:
			var out []dns.RR
			for _, rr := range resp.Answer {
				if rr.Header().Rrtype == qtype {
					out = append(out, rr)
				}
			}
			r.cache.put(key, cacheEntry{rrs: out}, answerTTL(resp, out))
			return out, nil
		case resp.Rcode == dns.RcodeNameError:
			r.cache.put(key, cacheEntry{nxdomain: true}, negativeTTL(resp))
			return nil, errNoSuchDomain
		default:
			lastErr = fmt.Errorf("%s %s via %s: %s", dns.TypeToString[qtype], name, srv, dns.RcodeToString[resp.Rcode])
		}
		if ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() == nil { // a lookup cut short says nothing about the resolvers
		r.failures.Add(1)
	}
	return nil, lastErr
}

// answerTTL is how long a successful answer may be cached: the smallest
// TTL of the records used, or the negative TTL for NODATA.
func answerTTL(resp *dns.Msg, rrs []dns.RR) time.Duration {
	if len(rrs) == 0 {
		return negativeTTL(resp)
	}
	ttl := uint32(1<<32 - 1)
	for _, rr := range resp.Answer { // CNAMEs on the way count too
		ttl = min(ttl, rr.Header().Ttl)
	}
	return min(time.Duration(ttl)*time.Second, maxCacheTTL)
}

// negativeTTL is how long NXDOMAIN or NODATA may be cached: per RFC 2308
// section 5, the smaller of the SOA record's TTL and its MINIMUM field,
// from the authority section.
func negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second, maxNegativeTTL)
		}
	}
	return defaultNegTTL
}

func (r *resolver) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	resp, _, err := (&dns.Client{Net: "udp"}).ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		resp, _, err = (&dns.Client{Net: "tcp"}).ExchangeContext(ctx, m, server)
	}
	return resp, err
}

// errIDN is returned for domains whose U-labels cannot be converted to
// A-labels.
var errIDN = errors.New("bad internationalized domain name")

// toASCII returns name as a fully qualified domain for a query, with
// U-labels converted to A-labels (RFC 5891).
func toASCII(name string) (string, error) {
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			a, err := idna.Lookup.ToASCII(name)
			if err != nil {
				return "", fmt.Errorf("domain %q: %w: %v", name, errIDN, err)
			}
			return dns.Fqdn(a), nil
		}
	}
	return dns.Fqdn(name), nil
}

// systemResolvers returns the nameservers of /etc/resolv.conf as host:port.
func systemResolvers() ([]string, error) {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(cc.Servers))
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	if len(out) == 0 {
		return nil, errors.New("no nameserver lines")
	}
	return out, nil
}

type cacheKey struct {
	name  string // lower case, fully qualified
	qtype uint16
}

type cacheEntry struct {
	rrs      []dns.RR // shared: callers must not modify them
	nxdomain bool
	expires  time.Time
	key      cacheKey
}

// dnsCache is a bounded LRU cache of DNS answers, each kept until its TTL
// runs out. A nil *dnsCache caches nothing.
type dnsCache struct {
	now func() time.Time
	max int

	mu      sync.Mutex // guards entries and lru
	entries map[cacheKey]*list.Element
	lru     *list.List // of *cacheEntry, most recently used first
}

func newDNSCache(size int, now func() time.Time) *dnsCache {
	if size <= 0 {
		return nil
	}
	return &dnsCache{now: now, max: size, entries: make(map[cacheKey]*list.Element), lru: list.New()}
}

func (c *dnsCache) get(k cacheKey) (cacheEntry, bool) {
	if c == nil {
		return cacheEntry{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if !ok {
		return cacheEntry{}, false
	}
	e := el.Value.(*cacheEntry)
	if !c.now().Before(e.expires) {
		c.lru.Remove(el)
		delete(c.entries, k)
		return cacheEntry{}, false
	}
	c.lru.MoveToFront(el)
	return *e, true
}

func (c *dnsCache) put(k cacheKey, e cacheEntry, ttl time.Duration) {
	if c == nil || ttl <= 0 {
		return
	}
	e.expires, e.key = c.now().Add(ttl), k
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		el.Value = &e
		c.lru.MoveToFront(el)
		return
	}
	c.entries[k] = c.lru.PushFront(&e)
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*cacheEntry).key)
	}
}

func (c *dnsCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
