package smtp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemta/sluice"
)

// DNSBL is one DNS blocklist zone (RFC 5782) consulted when a client
// connects, and the weight a listing adds to the client's score.
type DNSBL struct {
	Zone   string // e.g. "zen.spamhaus.org"
	Weight int
}

// dnsblConfig is the screening set by WithDNSBL.
type dnsblConfig struct {
	zones     []DNSBL
	threshold int
	resolver  string // host:port
	timeout   time.Duration
}

// Bounds of the screening cache: results are kept for the TTL of the
// answer, within these bounds, and for at most this many clients.
const (
	dnsblMinTTL    = time.Minute
	dnsblMaxTTL    = time.Hour
	dnsblCacheSize = 100_000
)

// screen looks clients up in DNS blocklists and caches what it learns.
type screen struct {
	cfg dnsblConfig
	log *slog.Logger
	now func() time.Time

	mu    sync.Mutex // guards cache
	cache map[screenKey]screenResult
}

type screenKey struct {
	addr netip.Addr
	zone string
}

type screenResult struct {
	listed  bool
	expires time.Time
}

func newScreen(cfg dnsblConfig, log *slog.Logger) *screen {
	return &screen{cfg: cfg, log: log, now: time.Now, cache: make(map[screenKey]screenResult)}
}

// check returns the reply refusing addr if the weights of the zones that
// list it reach the threshold, else nil. Zones are queried in parallel
// within the timeout; a zone that fails to answer counts as not listing
// (a blocklist outage must not close the door to everyone).
func (s *screen) check(ctx context.Context, addr netip.Addr) *sluice.Reply {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
	defer cancel()
	listed := make([]bool, len(s.cfg.zones))
	var wg sync.WaitGroup
	for i, z := range s.cfg.zones {
		wg.Go(func() { listed[i] = s.listed(ctx, addr, z.Zone) })
	}
	wg.Wait()
	score := 0
	var by []string
	for i, z := range s.cfg.zones {
		if listed[i] {
			score += z.Weight
			by = append(by, z.Zone)
		}
	}
	if score < s.cfg.threshold || len(by) == 0 {
		return nil
	}
	return sluice.NewReply(554, sluice.EnhancedCode{5, 7, 1},
		"Service unavailable; client [%s] blocked using %s", addr, strings.Join(by, ", "))
}

// listed reports whether zone lists addr, from the cache or from DNS.
func (s *screen) listed(ctx context.Context, addr netip.Addr, zone string) bool {
	key := screenKey{addr, zone}
	now := s.now()
	s.mu.Lock()
	r, ok := s.cache[key]
	s.mu.Unlock()
	if ok && now.Before(r.expires) {
		return r.listed
	}
	listed, ttl, err := s.query(ctx, dnsblName(addr, zone))
	if err != nil {
		s.log.Warn("DNSBL lookup failed; client not screened by this zone",
			slog.String("zone", zone), slog.String("client", addr.String()), slog.Any("error", err))
		return false
	}
	s.mu.Lock()
	if len(s.cache) >= dnsblCacheSize {
		for k, v := range s.cache { // drop the expired, or else any half
			if !now.Before(v.expires) || len(s.cache) >= dnsblCacheSize/2 {
				delete(s.cache, k)
			}
		}
	}
	s.cache[key] = screenResult{listed, now.Add(min(max(ttl, dnsblMinTTL), dnsblMaxTTL))}
	s.mu.Unlock()
	return listed
}

// query asks the resolver for the A records of name. A listing is an
// address in 127.0.0.0/8 (RFC 5782 section 2.1); other answers, such as
// the 127.255.255.x error codes some lists return to refused resolvers,
// are not. NXDOMAIN is "not listed", cached for the SOA's negative TTL.
func (s *screen) query(ctx context.Context, name string) (bool, time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Timeout: s.cfg.timeout}
	in, _, err := c.ExchangeContext(ctx, m, s.cfg.resolver)
	if err != nil {
		return false, 0, err
	}
	switch in.Rcode {
	case dns.RcodeNameError:
		return false, negativeTTL(in), nil
	case dns.RcodeSuccess:
	default:
		return false, 0, fmt.Errorf("DNS %s", dns.RcodeToString[in.Rcode])
	}
	ttl := dnsblMaxTTL
	listed := false
	for _, rr := range in.Answer {
		a, ok := rr.(*dns.A)
		if !ok {
			continue
		}
		ttl = min(ttl, time.Duration(a.Hdr.Ttl)*time.Second)
		if ip, ok := netip.AddrFromSlice(a.A.To4()); ok && ip.Is4() && ip.As4()[0] == 127 && ip.As4()[1] != 255 {
			listed = true
		}
	}
	if len(in.Answer) == 0 {
		ttl = negativeTTL(in)
	}
	return listed, ttl, nil
}

func negativeTTL(m *dns.Msg) time.Duration {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Minttl, soa.Hdr.Ttl)) * time.Second
		}
	}
	return dnsblMinTTL
}

// dnsblName returns the name to look addr up under in zone: the octets
// reversed for IPv4, the nibbles reversed for IPv6 (RFC 5782 section 2.4).
func dnsblName(addr netip.Addr, zone string) string {
	addr = addr.Unmap()
	var parts []string
	if addr.Is4() {
		for _, b := range addr.As4() {
			parts = append(parts, fmt.Sprint(b))
		}
	} else {
		for _, b := range addr.As16() {
			parts = append(parts, fmt.Sprintf("%x", b>>4), fmt.Sprintf("%x", b&0xf))
		}
	}
	slices.Reverse(parts)
	return dns.Fqdn(strings.Join(parts, ".") + "." + strings.TrimSuffix(zone, "."))
}
