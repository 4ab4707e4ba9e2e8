package dnsbl

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/sluicemta/sluice"
)

// Zone is one DNS list (RFC 5782) and what its listings are worth.
type Zone struct {
	// Name is the zone queried, e.g. "zen.spamhaus.org".
	Name string
	// Weight is added to a client's score when the zone lists it:
	// positive for a blocklist (DNSBL), negative for an allowlist (DNSWL)
	// that vouches for the client. It cannot be 0.
	Weight int
	// Codes are the answers that count as a listing: a client is listed
	// when any A record of the answer falls in one of them. Empty means
	// any address in 127.0.0.0/8 except 127.255.0.0/16, where lists such
	// as Spamhaus return error codes (a refused public resolver, say).
	//
	// Several Zones may share one Name with different Codes and Weights
	// (zen.spamhaus.org's 127.0.0.2 worth more than its 127.0.0.10, say):
	// the name is queried once.
	Codes []Range
}

// Range is an inclusive range of IPv4 answer codes.
type Range struct {
	First, Last netip.Addr
}

// ParseRange parses a code range: one address ("127.0.0.2"), two joined
// by a hyphen ("127.0.0.2-127.0.0.11") or a prefix ("127.0.10.0/24").
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return Range{}, fmt.Errorf("dnsbl: code range %q: want an IPv4 prefix", s)
		}
		p = p.Masked()
		last := p.Addr().As4()
		for i := p.Bits(); i < 32; i++ {
			last[i/8] |= 1 << (7 - i%8)
		}
		return Range{p.Addr(), netip.AddrFrom4(last)}, nil
	}
	first, last, ok := strings.Cut(s, "-")
	if !ok {
		last = first
	}
	a, err1 := netip.ParseAddr(strings.TrimSpace(first))
	b, err2 := netip.ParseAddr(strings.TrimSpace(last))
	r := Range{a, b}
	if err1 != nil || err2 != nil || r.validate() != nil {
		return Range{}, fmt.Errorf("dnsbl: code range %q: want IPv4 addresses A or A-B with A <= B", s)
	}
	return r, nil
}

// Contains reports whether code is in r.
func (r Range) Contains(code netip.Addr) bool {
	return r.First.Compare(code) <= 0 && code.Compare(r.Last) <= 0
}

// String returns "A" or "A-B".
func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

func (r Range) validate() error {
	if !r.First.Is4() || !r.Last.Is4() || r.Last.Less(r.First) {
		return fmt.Errorf("dnsbl: code range %v-%v: want IPv4 addresses, first <= last", r.First, r.Last)
	}
	return nil
}

func (z Zone) validate() error {
	if err := sluice.CheckDomain(strings.TrimSuffix(z.Name, "."), false); err != nil {
		return fmt.Errorf("dnsbl: zone %q: %w", z.Name, err)
	}
	if z.Weight == 0 {
		return fmt.Errorf("dnsbl: zone %s: weight must not be 0", z.Name)
	}
	for _, r := range z.Codes {
		if err := r.validate(); err != nil {
			return fmt.Errorf("dnsbl: zone %s: %w", z.Name, err)
		}
	}
	return nil
}

// lists reports whether an answer with these codes is a listing, and the
// codes that count.
func (z Zone) lists(codes []netip.Addr) []netip.Addr {
	var hits []netip.Addr
	for _, c := range codes {
		if z.counts(c) {
			hits = append(hits, c)
		}
	}
	return hits
}

func (z Zone) counts(code netip.Addr) bool {
	if len(z.Codes) == 0 {
		b := code.As4()
		return code.Is4() && b[0] == 127 && b[1] != 255
	}
	return slices.ContainsFunc(z.Codes, func(r Range) bool { return r.Contains(code) })
}

// QueryName returns the name to look addr up under in zone: the octets
// reversed for IPv4, the nibbles reversed for IPv6 (RFC 5782 section 2.4),
// fully qualified.
func QueryName(addr netip.Addr, zone string) string {
	addr = addr.Unmap()
	var parts []string
	if addr.Is4() {
		for _, b := range addr.As4() {
			parts = append(parts, strconv.Itoa(int(b)))
		}
	} else {
		const hex = "0123456789abcdef"
		for _, b := range addr.As16() {
			parts = append(parts, string(hex[b>>4]), string(hex[b&0xf]))
		}
	}
	slices.Reverse(parts)
	return dns.Fqdn(strings.Join(parts, ".") + "." + strings.TrimSuffix(zone, "."))
}
