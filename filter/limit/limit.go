package limit

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

// Filter is the account limit filter. Create one with [New].
type Filter struct {
	cfg config

	mu       sync.Mutex // guards accounts and ids
	accounts *lru[*account]
	ids      *lru[struct{}] // queue ids counted at the post-queue stage
}

var _ filter.Filter = (*Filter)(nil)

// account is the state of one sending account.
type account struct {
	limiter *rate.Limiter // nil: no rate limit
	day     string        // UTC date of count, "2006-01-02"
	count   int           // messages counted on day
}

// Option configures a [Filter].
type Option func(*config)

type config struct {
	rate        rate.Limit
	burst       int
	daily       int
	maxAccounts int
	now         func() time.Time
}

func defaultConfig() config {
	return config{rate: rate.Inf, maxAccounts: 100_000, now: time.Now}
}

// WithRate limits each account to perSecond messages per second with
// bursts of up to burst messages.
// Default: no rate limit.
func WithRate(perSecond float64, burst int) Option {
	return func(c *config) { c.rate, c.burst = rate.Limit(perSecond), burst }
}

// WithDaily limits each account to n messages per UTC day; 0 means no
// quota. Default: 0.
func WithDaily(n int) Option { return func(c *config) { c.daily = n } }

// WithMaxAccounts bounds the accounts (and post-queue ids) tracked at
// once; the least recently seen is forgotten first. Default: 100000.
func WithMaxAccounts(n int) Option { return func(c *config) { c.maxAccounts = n } }

// WithClock sets the clock of the rate and the day. Default: time.Now.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// New returns a limit filter. It fails on a non-positive rate or burst,
// a negative quota, fewer than one tracked account, or no limit at all.
func New(opts ...Option) (*Filter, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cfg.rate != rate.Inf && (cfg.rate <= 0 || cfg.burst < 1):
		return nil, errors.New("limit: rate and burst must be positive")
	case cfg.daily < 0:
		return nil, errors.New("limit: daily quota must not be negative")
	case cfg.maxAccounts < 1:
		return nil, errors.New("limit: max accounts must be at least 1")
	case cfg.now == nil:
		return nil, errors.New("limit: nil clock")
	case cfg.rate == rate.Inf && cfg.daily == 0:
		return nil, errors.New("limit: neither a rate nor a daily quota set")
	}
	return &Filter{cfg: cfg, accounts: newLRU[*account](cfg.maxAccounts), ids: newLRU[struct{}](cfg.maxAccounts)}, nil
}

// Check counts m against its account's limits.
func (f *Filter) Check(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	name := filter.Account(m.Envelope)
	if name == "" {
		return filter.Verdict{}, nil
	}
	post := m.Stage == filter.StagePostQueue
	now := f.cfg.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if post && m.Envelope.ID != "" {
		if _, counted := f.ids.get(m.Envelope.ID); counted {
			return filter.Verdict{}, nil
		}
	}
	a, ok := f.accounts.get(name)
	if !ok {
		a = &account{}
		if f.cfg.rate != rate.Inf {
			a.limiter = rate.NewLimiter(f.cfg.rate, f.cfg.burst)
		}
		f.accounts.put(name, a)
	}
	day := now.UTC().Format(time.DateOnly)
	if a.day != day {
		a.day, a.count = day, 0
	}
	if f.cfg.daily > 0 && a.count >= f.cfg.daily {
		if post {
			return over(filter.Reject, 550, sluice.EnhancedCode{5, 7, 1}, "daily quota of %d messages", f.cfg.daily), nil
		}
		return over(filter.Tempfail, 451, sluice.EnhancedCode{4, 7, 1}, "daily quota of %d messages", f.cfg.daily), nil
	}
	if a.limiter != nil && !a.limiter.AllowN(now, 1) {
		return over(filter.Tempfail, 451, sluice.EnhancedCode{4, 7, 1}, "rate of %g messages a second", float64(f.cfg.rate)), nil
	}
	a.count++
	if post && m.Envelope.ID != "" {
		f.ids.put(m.Envelope.ID, struct{}{})
	}
	return filter.Verdict{}, nil
}

// over is the verdict for an account over one of its limits.
func over(action filter.Action, code int, e sluice.EnhancedCode, what string, arg any) filter.Verdict {
	r := sluice.NewReply(code, e, "over account limit: "+what, arg)
	return filter.Verdict{Action: action, Reply: r}
}

// lru is a map bounded to max entries that forgets the least recently
// used one. Not safe for concurrent use.
type lru[V any] struct {
	max   int
	order *list.List // of *entry[V], most recent first
	items map[string]*list.Element
}

type entry[V any] struct {
	key string
	val V
}

func newLRU[V any](max int) *lru[V] {
	return &lru[V]{max: max, order: list.New(), items: make(map[string]*list.Element)}
}

func (l *lru[V]) get(key string) (V, bool) {
	e, ok := l.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	l.order.MoveToFront(e)
	return e.Value.(*entry[V]).val, true
}

func (l *lru[V]) put(key string, val V) {
	if e, ok := l.items[key]; ok {
		e.Value.(*entry[V]).val = val
		l.order.MoveToFront(e)
		return
	}
	l.items[key] = l.order.PushFront(&entry[V]{key, val})
	if l.order.Len() > l.max {
		last := l.order.Back()
		l.order.Remove(last)
		delete(l.items, last.Value.(*entry[V]).key)
	}
}

// Len returns the number of accounts tracked now.
func (f *Filter) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.accounts.order.Len()
}
