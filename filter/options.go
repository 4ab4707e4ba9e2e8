package filter

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Option configures a [Chain].
type Option func(*config)

// FilterOption configures one filter of a [Chain], in [WithFilter].
type FilterOption func(*stage)

type config struct {
	stages     []stage
	logger     *slog.Logger
	registerer prometheus.Registerer
	now        func() time.Time
}

// stage is one filter of the chain with its limits and policies, as
// configured.
type stage struct {
	name        string
	f           Filter
	timeout     time.Duration
	onError     Policy
	onTimeout   Policy
	at          Stage
	group       string
	concurrency int
	breaker     Breaker
}

// Breaker configures the circuit breaker of a filter: after Failures
// errors or timeouts within Window the breaker opens and the filter is not
// called for Cooldown (its [OnError] policy applies at once); then one
// call is let through as a probe: success closes the breaker, failure
// opens it again for another Cooldown. Failures 0 disables the breaker; a
// zero Window or Cooldown means 30s.
type Breaker struct {
	Failures int
	Window   time.Duration
	Cooldown time.Duration
}

// defaultBreakerTime is the Window and Cooldown of a Breaker that leaves
// them zero.
const defaultBreakerTime = 30 * time.Second

func defaultConfig() config {
	return config{logger: slog.New(slog.DiscardHandler), now: time.Now}
}

func defaultStage(name string, f Filter) stage {
	return stage{
		name:      name,
		f:         f,
		timeout:   10 * time.Second,
		onError:   PolicyTempfail,
		onTimeout: PolicyTempfail,
		breaker:   Breaker{Failures: 5},
	}
}

// WithFilter appends the filter f under name to the chain. Filters run in
// the order they were added (filters of one [Group] run at the same time);
// names must be unique and are used in logs, replies, metrics and the
// X-Sluice-Filter header.
// Default: no filters (a chain that accepts everything).
func WithFilter(name string, f Filter, opts ...FilterOption) Option {
	return func(c *config) {
		s := defaultStage(name, f)
		for _, o := range opts {
			o(&s)
		}
		c.stages = append(c.stages, s)
	}
}

// WithLogger sets the logger for filter failures, timeouts and breaker
// changes. Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithRegisterer registers the chain's metrics with r:
// sluice_filter_calls_total{filter,result},
// sluice_filter_breaker_state{filter} (0 closed, 1 half-open, 2 open) and
// sluice_filter_breaker_opened_total{filter}.
// Default: nil (no metrics).
func WithRegisterer(r prometheus.Registerer) Option { return func(c *config) { c.registerer = r } }

// WithClock sets the clock the circuit breakers read.
// Default: time.Now.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// AtStage sets the point of the SMTP transaction where the filter runs,
// or StagePostQueue to run it after acceptance.
// Default: StageData (end of DATA, with the whole message).
func AtStage(st Stage) FilterOption { return func(s *stage) { s.at = st } }

// Timeout sets how long the chain waits for the filter, including the
// wait for a free slot under its [Concurrency] cap. A filter that has not
// returned by then is abandoned and its [OnTimeout] policy applies.
// Default: 10s.
func Timeout(d time.Duration) FilterOption { return func(s *stage) { s.timeout = d } }

// OnError sets what an error (or a panic) of the filter, or an open
// circuit breaker, means for the message. Default: PolicyTempfail.
func OnError(p Policy) FilterOption { return func(s *stage) { s.onError = p } }

// OnTimeout sets what a timeout of the filter means for the message.
// Default: PolicyTempfail.
func OnTimeout(p Policy) FilterOption { return func(s *stage) { s.onTimeout = p } }

// Group puts the filter in the named group of its stage. The filters of a
// group do not depend on each other and run at the same time; the group
// runs at the place of its first filter. Their verdicts combine in the
// order the filters were added, as if they had run one after the other:
// headers keep that order, and the first verdict other than Accept in
// that order decides (the others still running are then abandoned).
// Default: "" (the filter runs alone, in order).
func Group(name string) FilterOption { return func(s *stage) { s.group = name } }

// Concurrency caps the calls of the filter in progress at once (across
// all messages). A call over the cap waits for a slot within the filter's
// timeout, after which its [OnTimeout] policy applies. A call the chain
// abandoned keeps its slot until the filter really returns, so a hung
// backend cannot be flooded. Default: 0 (no cap).
func Concurrency(n int) FilterOption { return func(s *stage) { s.concurrency = n } }

// WithBreaker sets the filter's circuit breaker (see [Breaker]);
// Breaker{} turns it off.
// Default: Failures 5, Window 30s, Cooldown 30s.
func WithBreaker(b Breaker) FilterOption { return func(s *stage) { s.breaker = b } }
