package spamd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/health"
)

// Pool is the set of spamd replicas a [Filter] talks to; [health.Pool]
// implements it. Pick returns the address of a healthy replica other than
// those excluded ("host:port" or "unix:/path"); Done reports the outcome
// of the exchange with it.
type Pool interface {
	Pick(exclude ...string) (string, error)
	Done(addr string, err error)
}

var _ Pool = (*health.Pool)(nil)

// Filter checks messages with spamd. It is safe for concurrent use.
type Filter struct {
	pool Pool
	cfg  config
}

var _ filter.Filter = (*Filter)(nil)

// New returns a Filter that sends messages to the replicas of pool.
func New(pool Pool, opts ...Option) (*Filter, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if pool == nil {
		return nil, errors.New("spamd: nil pool")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Filter{pool: pool, cfg: cfg}, nil
}

// Result is spamd's answer about one message.
type Result struct {
	Spam     bool     // spamd's verdict: Score >= Required
	Score    float64  // the message's score
	Required float64  // spamd's required_score
	Symbols  []string // the rules that hit (SYMBOLS only)
	Report   string   // the report (REPORT only)
	Headers  []filter.Header
}

// Check scans m with spamd and returns a verdict: Reject with 550 5.7.1
// for spam at or over the reject score, otherwise Accept; both carry the
// X-Spam-* header fields. An error means no replica answered: the chain's
// failure policy decides.
func (f *Filter) Check(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	if m.Size > f.cfg.maxSize {
		return filter.Verdict{}, nil
	}
	res, err := f.Scan(ctx, m)
	if err != nil {
		return filter.Verdict{}, err
	}
	return f.verdict(res), nil
}

// Scan sends m to a spamd replica and returns its answer, trying another
// replica when one cannot be reached, up to the attempts set by
// [WithAttempts].
func (f *Filter) Scan(ctx context.Context, m *filter.Message) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.timeout)
	defer cancel()
	res, err := health.Try(ctx, f.pool, f.cfg.attempts, unreachable, func(addr string) (*Result, error) {
		return f.exchange(ctx, addr, m)
	})
	if err != nil {
		return nil, fmt.Errorf("spamd %w", err)
	}
	return res, nil
}

// unreachable reports whether err says the replica could not be reached,
// so that another one may be tried.
func unreachable(err error) bool {
	_, ok := errors.AsType[*dialError](err)
	return ok
}

func (f *Filter) verdict(res *Result) filter.Verdict {
	reject := res.Spam
	if !math.IsNaN(f.cfg.rejectScore) {
		reject = res.Score >= f.cfg.rejectScore
	}
	v := filter.Verdict{Headers: f.headers(res)}
	if reject {
		v.Action = filter.Reject
		v.Reply = sluice.NewReply(550, sluice.EnhancedCode{5, 7, 1},
			"message rejected as spam (score %s, required %s)", score(res.Score), score(res.Required))
	}
	return v
}

// headers returns the X-Spam-* fields for res: spamd's own with HEADERS,
// SpamAssassin's usual three otherwise.
func (f *Filter) headers(res *Result) []filter.Header {
	flag := "NO"
	if res.Spam {
		flag = "YES"
	}
	hs := []filter.Header{{Name: "X-Spam-Flag", Value: flag}, {Name: "X-Spam-Score", Value: score(res.Score)}}
	if f.cfg.command == Headers {
		for _, h := range res.Headers {
			if !strings.EqualFold(h.Name, "X-Spam-Flag") && !strings.EqualFold(h.Name, "X-Spam-Score") {
				hs = append(hs, h)
			}
		}
		return hs
	}
	yes := "No"
	if res.Spam {
		yes = "Yes"
	}
	status := fmt.Sprintf("%s, score=%s required=%s", yes, score(res.Score), score(res.Required))
	if len(res.Symbols) > 0 {
		status += " tests=" + strings.Join(res.Symbols, ",")
	}
	hs = append(hs, filter.Header{Name: "X-Spam-Status", Value: status})
	if res.Report != "" {
		hs = append(hs, filter.Header{Name: "X-Spam-Report", Value: strings.Join(strings.Fields(res.Report), " ")})
	}
	return hs
}

func score(s float64) string { return strconv.FormatFloat(s, 'f', 1, 64) }
