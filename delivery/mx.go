package delivery

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/sluicemta/sluice"
)

// hop is one address to try for a destination.
type hop struct {
	name string         // host name (MX target, smarthost name or literal)
	addr netip.AddrPort // where to connect
	pref int            // hops of equal pref are interchangeable
}

func (h hop) String() string { return fmt.Sprintf("%s[%s]", h.name, h.addr) }

// mxHost is one MX target with its preference.
type mxHost struct {
	name string
	pref uint16
}

// mxRoute returns the addresses to try for domain, in order, looked up
// now (routes are never remembered), and the domain's MX site: its sorted
// MX host names. A non-nil error is a *sluice.Reply that applies to every
// recipient of the domain.
func (a *Agent) mxRoute(ctx context.Context, domain string) ([]hop, string, error) {
	if strings.HasPrefix(domain, "[") {
		hops, err := a.literalRoute(domain)
		return hops, domain, err
	}
	hosts, implicit, err := a.lookupMX(ctx, domain)
	if err != nil {
		return nil, "", err
	}
	site := siteOf(hosts)
	hops, err := a.resolveHosts(ctx, hosts, a.cfg.port)
	if len(hops) > 0 {
		return hops, site, nil
	}
	switch {
	case implicit && errors.Is(err, errNoSuchDomain):
		return nil, "", sluice.NewReply(550, sluice.EnhancedCode{5, 1, 2}, "domain %s has no MX or address records", domain)
	case err != nil:
		return nil, "", sluice.NewReply(451, sluice.EnhancedCode{4, 4, 3}, "DNS lookup for %s failed: %v", domain, err)
	default:
		return nil, "", sluice.NewReply(451, sluice.EnhancedCode{4, 4, 4}, "no address found for the mail hosts of %s", domain)
	}
}

// siteOf names the set of MX hosts, whatever their order: domains hosted
// by one provider share a site and so their limits.
func siteOf(hosts []mxHost) string {
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = strings.ToLower(h.name)
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

func (a *Agent) literalRoute(domain string) ([]hop, error) {
	inner := strings.TrimPrefix(strings.TrimSuffix(strings.TrimPrefix(domain, "["), "]"), "IPv6:")
	ip, err := netip.ParseAddr(inner)
	if err != nil {
		return nil, sluice.NewReply(553, sluice.EnhancedCode{5, 1, 2}, "bad address literal %s", domain)
	}
	return []hop{{name: domain, addr: netip.AddrPortFrom(ip, uint16(a.cfg.port))}}, nil
}

// lookupMX returns the MX hosts of domain in the order to try them, or the
// domain itself when it has no MX records (RFC 5321 section 5.1).
func (a *Agent) lookupMX(ctx context.Context, domain string) (hosts []mxHost, implicit bool, err error) {
	rrs, err := a.dns.lookup(ctx, domain, dns.TypeMX)
	switch {
	case errors.Is(err, errIDN):
		return nil, false, sluice.NewReply(553, sluice.EnhancedCode{5, 1, 2}, "cannot route to %s: %v", domain, err)
	case errors.Is(err, errNoSuchDomain):
		return nil, false, sluice.NewReply(550, sluice.EnhancedCode{5, 1, 2}, "domain %s does not exist", domain)
	case err != nil:
		return nil, false, sluice.NewReply(451, sluice.EnhancedCode{4, 4, 3}, "DNS lookup for %s failed: %v", domain, err)
	case len(rrs) == 0:
		return []mxHost{{name: domain}}, true, nil
	}
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		if mx.Mx == "." {
			continue
		}
		hosts = append(hosts, mxHost{name: strings.TrimSuffix(mx.Mx, "."), pref: mx.Preference})
	}
	if len(hosts) == 0 { // RFC 7505: the domain accepts no mail
		return nil, false, sluice.NewReply(556, sluice.EnhancedCode{5, 1, 10}, "domain %s does not accept mail (null MX)", domain)
	}
	rand.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
	sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].pref < hosts[j].pref })
	return hosts, false, nil
}

// resolveHosts returns up to maxHosts addresses of hosts, in order, IPv4
// before IPv6 for each host. The error is the last lookup failure, if any.
func (a *Agent) resolveHosts(ctx context.Context, hosts []mxHost, port int) ([]hop, error) {
	var hops []hop
	var lastErr error
	for _, h := range hosts {
		if len(hops) >= a.cfg.maxHosts || ctx.Err() != nil {
			break
		}
		addrs, err := a.resolveAddrs(ctx, h.name)
		if err != nil {
			lastErr = err
		}
		for _, ip := range addrs {
			hops = append(hops, hop{name: h.name, addr: netip.AddrPortFrom(ip, uint16(port)), pref: int(h.pref)})
		}
	}
	if len(hops) > a.cfg.maxHosts {
		hops = hops[:a.cfg.maxHosts]
	}
	return hops, lastErr
}

// resolveAddrs looks up the A and AAAA records of name. It returns
// errNoSuchDomain only if both lookups found nothing and one said NXDOMAIN
// or both said "no data".
func (a *Agent) resolveAddrs(ctx context.Context, name string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{ip}, nil
	}
	var addrs []netip.Addr
	var errs []error
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := a.dns.lookup(ctx, name, qtype)
		if err != nil {
			errs = append(errs, err)
			if errors.Is(err, errNoSuchDomain) {
				break // no point asking for AAAA
			}
			continue
		}
		for _, rr := range rrs {
			var ip net.IP
			switch rr := rr.(type) {
			case *dns.A:
				ip = rr.A
			case *dns.AAAA:
				ip = rr.AAAA
			}
			if a, ok := netip.AddrFromSlice(ip); ok {
				addrs = append(addrs, a.Unmap())
			}
		}
	}
	switch {
	case len(addrs) > 0:
		return addrs, nil
	case len(errs) == 0:
		return nil, errNoSuchDomain // exists, but no addresses
	}
	for _, err := range errs {
		if !errors.Is(err, errNoSuchDomain) {
			return nil, err
		}
	}
	return nil, errNoSuchDomain
}

// poolRoute returns the addresses of the pool's hosts in the order of its
// strategy.
func (a *Agent) poolRoute(ctx context.Context, p *Pool) ([]hop, error) {
	var hops []hop
	var lastErr error
	hosts := p.order()
	for i, h := range hosts {
		pref := i // failover: an order, not a choice
		if p.Strategy == Spread {
			pref = 0
		}
		if p.ProbeInterval > 0 && a.probes.down(p, h.Addr) {
			pref += len(hosts) // after every healthy host, in the same order
		}
		host, portStr, _ := net.SplitHostPort(h.Addr) // validated by NewRoutes
		port, _ := strconv.Atoi(portStr)
		addrs, err := a.resolveAddrs(ctx, host)
		if err != nil {
			lastErr = err
		}
		for _, ip := range addrs {
			hops = append(hops, hop{name: host, addr: netip.AddrPortFrom(ip, uint16(port)), pref: pref})
		}
	}
	if len(hops) > 0 {
		// Hosts the probes mark down go last, the order otherwise kept.
		slices.SortStableFunc(hops, func(x, y hop) int { return x.pref - y.pref })
		return hops, nil
	}
	return nil, sluice.NewReply(451, sluice.EnhancedCode{4, 4, 3}, "cannot resolve the hosts of pool %s: %v", p.Name, lastErr)
}
