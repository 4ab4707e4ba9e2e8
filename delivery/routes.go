package delivery

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/sluicemta/sluice"
)

// Transport is the protocol a [Pool] speaks.
type Transport int

const (
	// SMTP (RFC 5321), the default.
	SMTP Transport = iota
	// LMTP (RFC 2033): one reply per recipient after the final ".".
	LMTP
)

// TLSPolicy decides whether a session must be encrypted.
type TLSPolicy int

const (
	// TLSOpportunistic uses STARTTLS when the next hop offers it and goes
	// on in plain text when it does not or when the handshake fails
	// (RFC 7435). The default.
	TLSOpportunistic TLSPolicy = iota
	// TLSRequired defers the mail (trying the next host first) when the
	// next hop does not offer STARTTLS or the handshake fails.
	TLSRequired
	// TLSNone never sends STARTTLS.
	TLSNone
)

// Strategy is how a [Pool] picks among its hosts.
type Strategy int

const (
	// Failover tries the hosts in the order given: the first one takes
	// all the mail while it is up. The default.
	Failover Strategy = iota
	// Spread tries the hosts in a random order drawn by weight on every
	// attempt, so the load is spread over all of them (seed 003).
	Spread
)

// Egress is how mail leaves: the source address to bind and the name to
// give in EHLO. Zero fields mean the agent's defaults (any address, the
// hostname of [WithHostname]).
type Egress struct {
	// SourceIP is the local address to bind, such as a non-blocked IP
	// for one consumer ISP (seed 003).
	SourceIP netip.Addr
	// Helo is the EHLO name; it should match the source IP's PTR record.
	Helo string
}

// PoolHost is one host of a [Pool].
type PoolHost struct {
	// Addr is "host:port"; the host may be a name, resolved on every
	// attempt.
	Addr string
	// Weight is the host's share of the mail with the Spread strategy; 0
	// means 1.
	Weight int
}

// Pool is a set of relays ("smarthosts") or LMTP servers that a route
// sends mail to.
type Pool struct {
	// Name identifies the pool in routes and in the delivery log.
	Name string
	// Hosts are the pool's relays or LMTP servers.
	Hosts []PoolHost
	// Strategy is how the hosts are picked: Failover or Spread.
	Strategy Strategy
	// Transport is SMTP or LMTP.
	Transport Transport
	// TLS is the TLS policy of sessions with the pool's hosts.
	TLS TLSPolicy
	// Username and Password, when Username is set, authenticate with AUTH
	// PLAIN (RFC 4954) after STARTTLS; the agent never sends them over an
	// unencrypted connection.
	Username, Password string
	// Egress is the source address and EHLO name of the pool's sessions;
	// it overrides the route's.
	Egress Egress
	// ProbeInterval, when positive, has each host probed by speaking the
	// pool's protocol (220 greeting, EHLO or LHLO, QUIT) at this interval
	// (seed 000: an open port is not a working relay). A host the probes
	// mark down (after three failures, up after two successes) is tried
	// after the healthy ones, so mail flows to the healthy hosts without
	// first waiting for a dead one's timeouts. Zero means no probes: only
	// real sessions tell, through the dead-host memory.
	ProbeInterval time.Duration
}

// Route sends the recipients whose domain matches Domain (and, if set,
// whose message's sender domain matches Sender) to a next hop. Patterns
// are "example.com" (that domain only), ".example.com" (its subdomains,
// not itself) or "*" (everything); matching ignores case.
type Route struct {
	// Domain is the recipient domain pattern.
	Domain string
	// Sender is the sender domain pattern; "" matches every sender, the
	// null sender included.
	Sender string
	// Pool is the name of the pool to send to; "" sends to the domain's
	// MX hosts.
	Pool string
	// TLS is the TLS policy of MX sessions (a pool has its own).
	TLS TLSPolicy
	// Egress is the source address and EHLO name for this route.
	Egress Egress
	// Fallback is the name of a pool that takes the recipients of this
	// route that were already deferred on an earlier attempt (seed 002's
	// split), so the primary path keeps serving fresh mail; "" keeps
	// them on the primary path.
	Fallback string
}

// Routes is an immutable routes table: the routes, tried in order (the
// first match wins), and the pools they name. A recipient no route matches
// goes to its domain's MX hosts. Build one with [NewRoutes].
type Routes struct {
	routes []Route
	pools  map[string]*Pool
}

// NewRoutes checks and copies pools and routes into a table.
func NewRoutes(pools []Pool, routes []Route) (*Routes, error) {
	rt := &Routes{pools: make(map[string]*Pool, len(pools))}
	var errs []error
	for i, p := range pools {
		if err := checkPool(&p); err != nil {
			errs = append(errs, fmt.Errorf("pool %d %q: %w", i, p.Name, err))
			continue
		}
		if _, dup := rt.pools[p.Name]; dup {
			errs = append(errs, fmt.Errorf("pool %d: duplicate name %q", i, p.Name))
			continue
		}
		p.Hosts = append([]PoolHost(nil), p.Hosts...)
		rt.pools[p.Name] = &p
	}
	for i, r := range routes {
		if err := rt.checkRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("route %d (%s): %w", i, r.Domain, err))
			continue
		}
		r.Domain, r.Sender = strings.ToLower(r.Domain), strings.ToLower(r.Sender)
		rt.routes = append(rt.routes, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("delivery: routes: %w", err)
	}
	return rt, nil
}

func checkPool(p *Pool) error {
	if p.Name == "" {
		return errors.New("empty name")
	}
	if len(p.Hosts) == 0 {
		return errors.New("no hosts")
	}
	for _, h := range p.Hosts {
		if _, err := splitHostPort(h.Addr); err != nil {
			return err
		}
		if h.Weight < 0 {
			return fmt.Errorf("host %s: negative weight", h.Addr)
		}
	}
	if p.Strategy != Failover && p.Strategy != Spread {
		return fmt.Errorf("unknown strategy %d", p.Strategy)
	}
	if p.Transport != SMTP && p.Transport != LMTP {
		return fmt.Errorf("unknown transport %d", p.Transport)
	}
	if p.Username != "" && p.TLS == TLSNone {
		return errors.New("AUTH needs TLS: the policy must not be none")
	}
	if p.ProbeInterval < 0 {
		return fmt.Errorf("negative probe interval %v", p.ProbeInterval)
	}
	return checkEgress(p.Egress)
}

func (rt *Routes) checkRoute(r Route) error {
	if err := checkPattern(r.Domain); err != nil {
		return fmt.Errorf("domain: %w", err)
	}
	if r.Sender != "" {
		if err := checkPattern(r.Sender); err != nil {
			return fmt.Errorf("sender: %w", err)
		}
	}
	for _, name := range []string{r.Pool, r.Fallback} {
		if _, ok := rt.pools[name]; name != "" && !ok {
			return fmt.Errorf("unknown pool %q", name)
		}
	}
	if r.TLS < TLSOpportunistic || r.TLS > TLSNone {
		return fmt.Errorf("unknown TLS policy %d", r.TLS)
	}
	return checkEgress(r.Egress)
}

func checkPattern(p string) error {
	if p == "*" {
		return nil
	}
	if err := sluice.CheckDomain(strings.TrimPrefix(p, "."), false); err != nil {
		return fmt.Errorf("bad pattern %q: %w", p, err)
	}
	return nil
}

func checkEgress(e Egress) error {
	if e.Helo != "" {
		if err := sluice.CheckDomain(e.Helo, false); err != nil {
			return fmt.Errorf("bad HELO name %q: %w", e.Helo, err)
		}
	}
	return nil
}

// matchDomain reports whether domain (lower case) matches pattern.
func matchDomain(pattern, domain string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "."):
		return strings.HasSuffix(domain, pattern)
	}
	return pattern == domain
}

// lookup returns the route for a recipient domain and a sender domain, or
// nil when no route matches (MX delivery).
func (rt *Routes) lookup(rcptDomain, senderDomain string) *Route {
	if rt == nil {
		return nil
	}
	rcptDomain, senderDomain = strings.ToLower(rcptDomain), strings.ToLower(senderDomain)
	for i := range rt.routes {
		r := &rt.routes[i]
		if matchDomain(r.Domain, rcptDomain) && (r.Sender == "" || matchDomain(r.Sender, senderDomain)) {
			return r
		}
	}
	return nil
}

// withSmarthost returns a table that ends with a "*" route to the relay
// at hostport.
func (rt *Routes) withSmarthost(hostport string) *Routes {
	out := &Routes{pools: map[string]*Pool{}}
	if rt != nil {
		out.routes = append(out.routes, rt.routes...)
		for k, v := range rt.pools {
			out.pools[k] = v
		}
	}
	name := "smarthost"
	for out.pools[name] != nil {
		name += "_"
	}
	out.pools[name] = &Pool{Name: name, Hosts: []PoolHost{{Addr: hostport}}}
	out.routes = append(out.routes, Route{Domain: "*", Pool: name})
	return out
}

// order returns the pool's hosts in the order to try them now.
func (p *Pool) order() []PoolHost {
	hosts := append([]PoolHost(nil), p.Hosts...)
	if p.Strategy != Spread {
		return hosts
	}
	// Weighted sampling without replacement.
	out := make([]PoolHost, 0, len(hosts))
	for len(hosts) > 0 {
		total := 0
		for _, h := range hosts {
			total += max(h.Weight, 1)
		}
		n := rand.IntN(total)
		i := 0
		for ; i < len(hosts)-1; i++ {
			n -= max(hosts[i].Weight, 1)
			if n < 0 {
				break
			}
		}
		out = append(out, hosts[i])
		hosts = append(hosts[:i], hosts[i+1:]...)
	}
	return out
}

// needsDNS reports whether some pool host is given by name.
func (rt *Routes) needsDNS() bool {
	if rt == nil {
		return false
	}
	for _, p := range rt.pools {
		for _, h := range p.Hosts {
			host, _, _ := net.SplitHostPort(h.Addr)
			if net.ParseIP(host) == nil {
				return true
			}
		}
	}
	return false
}

// coversAll reports whether a route sends every recipient to a pool, so
// that no recipient is delivered by MX.
func (rt *Routes) coversAll() bool {
	if rt == nil {
		return false
	}
	for _, r := range rt.routes {
		if r.Domain == "*" && r.Sender == "" && r.Pool != "" {
			return true
		}
	}
	return false
}
