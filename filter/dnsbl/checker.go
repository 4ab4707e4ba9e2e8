package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Checker looks clients up in weighted DNS lists and caches the answers
// for their TTL. It is safe for concurrent use.
type Checker struct {
	resolver string
	zones    []Zone
	names    []string // the distinct zone names, in order
	cfg      config

	mu    sync.Mutex // guards cache
	cache map[cacheKey]cacheEntry
}

type cacheKey struct {
	addr netip.Addr
	zone string // lower case, no trailing dot
}

type cacheEntry struct {
	codes   []netip.Addr // the A records of the answer; none for NXDOMAIN
	expires time.Time
}

// Listing is a zone that lists a client, with the codes it answered that
// count (see [Zone.Codes]).
type Listing struct {
	Zone   string
	Weight int
	Codes  []netip.Addr
}

// Result is what the lists say of a client.
type Result struct {
	// Score is the sum of the weights of the Listings.
	Score int
	// Listings are the zones that list the client, in the order of the
	// Checker's zones.
	Listings []Listing
	// Failed are the zone names that did not answer in time or answered
	// with an error; they count as not listing.
	Failed []string
}

// Zones returns the names of the zones that list the client.
func (r Result) Zones() []string {
	names := make([]string, 0, len(r.Listings))
	for _, l := range r.Listings {
		if !slices.Contains(names, l.Zone) {
			names = append(names, l.Zone)
		}
	}
	return names
}

// New returns a Checker that asks resolver ("host:port", a recursive
// resolver or the lists' own servers) about zones. It fails on a bad
// address, no zones, an invalid zone or invalid options.
func New(resolver string, zones []Zone, opts ...Option) (*Checker, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(resolver); err != nil {
		return nil, fmt.Errorf("dnsbl: resolver %q: want host:port", resolver)
	}
	if len(zones) == 0 {
		return nil, errors.New("dnsbl: no zones")
	}
	c := &Checker{resolver: resolver, cfg: cfg, cache: make(map[cacheKey]cacheEntry)}
	for _, z := range zones {
		if err := z.validate(); err != nil {
			return nil, err
		}
		z.Name = normZone(z.Name)
		z.Codes = slices.Clone(z.Codes)
		c.zones = append(c.zones, z)
		if !slices.Contains(c.names, z.Name) {
			c.names = append(c.names, z.Name)
		}
	}
	return c, nil
}

// Lookup asks every zone about addr, in parallel and within the lookup
// timeout, from the cache where it can. A zone that fails to answer
// counts as not listing and is named in Result.Failed: an outage of a
// list must not close the door to everyone.
func (c *Checker) Lookup(ctx context.Context, addr netip.Addr) Result {
	addr = addr.Unmap()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.timeout)
	defer cancel()
	codes := make([][]netip.Addr, len(c.names))
	errs := make([]error, len(c.names))
	var wg sync.WaitGroup
	for i, name := range c.names {
		wg.Go(func() { codes[i], errs[i] = c.codes(ctx, addr, name) })
	}
	wg.Wait()
	var r Result
	for i, name := range c.names {
		if errs[i] != nil {
			r.Failed = append(r.Failed, name)
			c.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "DNS list lookup failed; client not screened by this zone",
				slog.String("zone", name), slog.String("client", addr.String()), slog.Any("error", errs[i]))
		}
	}
	for _, z := range c.zones {
		i := slices.Index(c.names, z.Name)
		if hits := z.lists(codes[i]); len(hits) > 0 {
			r.Score += z.Weight
			r.Listings = append(r.Listings, Listing{Zone: z.Name, Weight: z.Weight, Codes: hits})
		}
	}
	return r
}

// codes returns the A records zone answers for addr, from the cache or
// from DNS.
func (c *Checker) codes(ctx context.Context, addr netip.Addr, zone string) ([]netip.Addr, error) {
	key := cacheKey{addr, zone}
	now := c.cfg.now()
	c.mu.Lock()
	e, ok := c.cache[key]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.codes, nil
	}
	codes, ttl, err := c.query(ctx, QueryName(addr, zone))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cache) >= c.cfg.cacheSize {
		for k, v := range c.cache { // drop the expired, or else any half
			if !now.Before(v.expires) || len(c.cache) >= c.cfg.cacheSize/2 {
				delete(c.cache, k)
			}
		}
	}
	c.cache[key] = cacheEntry{codes, now.Add(min(max(ttl, c.cfg.minTTL), c.cfg.maxTTL))}
	return codes, nil
}

// query asks the resolver for the A records of name, over TCP if the UDP
// answer is truncated. NXDOMAIN is no records, for the SOA's negative TTL
// (RFC 2308 section 5).
func (c *Checker) query(ctx context.Context, name string) ([]netip.Addr, time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	client := &dns.Client{Timeout: c.cfg.timeout}
	in, _, err := client.ExchangeContext(ctx, m, c.resolver)
	if err == nil && in.Truncated {
		client.Net = "tcp"
		in, _, err = client.ExchangeContext(ctx, m, c.resolver)
	}
	if err != nil {
		return nil, 0, err
	}
	switch in.Rcode {
	case dns.RcodeNameError:
		return nil, negativeTTL(in, c.cfg.minTTL), nil
	case dns.RcodeSuccess:
	default:
		return nil, 0, fmt.Errorf("DNS %s", dns.RcodeToString[in.Rcode])
	}
	ttl := c.cfg.maxTTL
	var codes []netip.Addr
	for _, rr := range in.Answer {
		a, ok := rr.(*dns.A)
		if !ok {
			continue
		}
		ttl = min(ttl, time.Duration(a.Hdr.Ttl)*time.Second)
		if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
			codes = append(codes, ip)
		}
	}
	if len(codes) == 0 {
		ttl = negativeTTL(in, c.cfg.minTTL)
	}
	return codes, ttl, nil
}

// negativeTTL is the TTL of a negative answer: the smaller of the SOA's
// TTL and its minimum field, or def without a SOA.
func negativeTTL(m *dns.Msg, def time.Duration) time.Duration {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Minttl, soa.Hdr.Ttl)) * time.Second
		}
	}
	return def
}

func normZone(z string) string { return strings.ToLower(strings.TrimSuffix(z, ".")) }
