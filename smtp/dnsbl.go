package smtp

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter/dnsbl"
)

// DNSBL is one DNS blocklist zone (RFC 5782) consulted when a client
// connects, and the weight a listing adds to the client's score. For
// allowlists, return-code filters and the filter form, use package
// filter/dnsbl.
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

// screen refuses clients that DNS blocklists list, with a dnsbl.Checker
// (which caches the answers for their TTL, from 1 minute to 1 hour).
type screen struct {
	checker   *dnsbl.Checker
	threshold int
}

func newScreen(cfg dnsblConfig, log *slog.Logger) (*screen, error) {
	zones := make([]dnsbl.Zone, len(cfg.zones))
	for i, z := range cfg.zones {
		zones[i] = dnsbl.Zone{Name: z.Zone, Weight: z.Weight}
	}
	c, err := dnsbl.New(cfg.resolver, zones, dnsbl.WithTimeout(cfg.timeout), dnsbl.WithLogger(log))
	if err != nil {
		return nil, err
	}
	return &screen{checker: c, threshold: cfg.threshold}, nil
}

// check returns the reply refusing addr if the weights of the zones that
// list it reach the threshold, else nil. A zone that fails to answer
// counts as not listing (a blocklist outage must not close the door to
// everyone).
func (s *screen) check(ctx context.Context, addr netip.Addr) *sluice.Reply {
	r := s.checker.Lookup(ctx, addr)
	if r.Score < s.threshold || len(r.Listings) == 0 {
		return nil
	}
	return sluice.NewReply(554, sluice.EnhancedCode{5, 7, 1},
		"Service unavailable; client [%s] blocked using %s", addr.Unmap(), strings.Join(r.Zones(), ", "))
}
