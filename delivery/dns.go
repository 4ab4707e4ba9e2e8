package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// errNoSuchDomain is returned by resolver.lookup for an NXDOMAIN answer.
var errNoSuchDomain = errors.New("no such domain")

// resolver asks DNS servers in turn, over UDP with a retry over TCP when
// the answer is truncated. It is safe for concurrent use.
type resolver struct {
	servers []string
	timeout time.Duration // per query to one server
	cache   *dnsCache     // nil: no caching
}

// lookup returns the answer records of type qtype for name, from the
// cache while they are fresh; an empty
// slice and no error means the name exists without such records. An
// NXDOMAIN answer returns errNoSuchDomain; any other failure (SERVFAIL,
// timeouts, unreachable servers) from every server returns the last error.
func (r *resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	fqdn, err := toASCII(name)
	if err != nil {
		return nil, err
	}
	if e, ok := r.cache.get(fqdn, qtype); ok {
		if e.nx {
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
			r.cache.put(fqdn, qtype, out, false, resp)
			return out, nil
		case resp.Rcode == dns.RcodeNameError:
			r.cache.put(fqdn, qtype, nil, true, resp)
			return nil, errNoSuchDomain
		default:
			lastErr = fmt.Errorf("%s %s via %s: %s", dns.TypeToString[qtype], name, srv, dns.RcodeToString[resp.Rcode])
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
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

// errIDN is returned for domains with U-labels: converting them to
// A-labels (RFC 5891) needs golang.org/x/text, which sluice does not
// depend on yet.
var errIDN = errors.New("internationalized domain names are not supported")

// toASCII returns name as a fully qualified domain for a query.
func toASCII(name string) (string, error) {
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			return "", fmt.Errorf("domain %q: %w", name, errIDN)
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
