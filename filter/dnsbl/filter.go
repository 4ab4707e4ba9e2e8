package dnsbl

import (
	"context"
	"strconv"
	"strings"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

var _ filter.Filter = (*Checker)(nil)

// Check is the [filter.Filter] form of the Checker, meant for
// [filter.StageConnect]: it looks up the client of m's envelope and
// rejects it (554 5.7.1) when its score reaches the reject score, refuses
// it for now (451 4.7.1) when the score reaches the tempfail score, and
// otherwise accepts it, with a header field naming the zones that list it
// (allowlists included) and the score. At StageConnect the acceptor adds
// that field to every message of the connection; at the later stages the
// cached answers make the lookup cheap.
//
// Check never returns an error: a list that does not answer counts as not
// listing (see [Checker.Lookup]).
func (c *Checker) Check(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	if m.Envelope == nil || !m.Envelope.Client.Addr.IsValid() {
		return filter.Verdict{}, nil
	}
	addr := m.Envelope.Client.Addr.Addr().Unmap()
	r := c.Lookup(ctx, addr)
	if len(r.Listings) == 0 {
		return filter.Verdict{}, nil
	}
	zones := strings.Join(r.Zones(), ", ")
	switch {
	case r.Score >= c.cfg.rejectScore:
		return filter.Verdict{Action: filter.Reject, Reply: sluice.NewReply(554, sluice.EnhancedCode{5, 7, 1},
			"Service unavailable; client [%s] blocked using %s", addr, zones)}, nil
	case c.cfg.tempfailScore > 0 && r.Score >= c.cfg.tempfailScore:
		return filter.Verdict{Action: filter.Tempfail, Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1},
			"Service unavailable; client [%s] listed by %s, try again later", addr, zones)}, nil
	}
	if c.cfg.header == "" {
		return filter.Verdict{}, nil
	}
	return filter.Verdict{Headers: []filter.Header{{Name: c.cfg.header, Value: headerValue(r)}}}, nil
}

// headerValue is "score=N zone=code[,code] ...".
func headerValue(r Result) string {
	var b strings.Builder
	b.WriteString("score=" + strconv.Itoa(r.Score))
	for _, l := range r.Listings {
		b.WriteString(" " + l.Zone + "=")
		for i, c := range l.Codes {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(c.String())
		}
	}
	return b.String()
}
