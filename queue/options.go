package queue

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Option configures a [Queue] in [New].
type Option func(*config)

type config struct {
	logger        *slog.Logger
	registerer    prometheus.Registerer
	workers       int
	retryMin      time.Duration
	retryMax      time.Duration
	retryFactor   float64
	retryBudget   float64
	restartSpread time.Duration
	maxAge        time.Duration
	delayWarning  time.Duration
	attemptTime   time.Duration
	topDomains    int
	paceBacklog   int           // 0: the number of workers
	paceStall     time.Duration // see pace.go; not an option, tests change it
	store         Store
	now           func() time.Time
}

// defaultConfig holds every default of the package, in one place.
func defaultConfig() config {
	return config{
		logger:        slog.New(slog.DiscardHandler),
		workers:       32,
		retryMin:      5 * time.Minute,
		retryMax:      time.Hour,
		retryFactor:   2,
		retryBudget:   0.5,
		restartSpread: time.Minute,
		maxAge:        5 * 24 * time.Hour,
		attemptTime:   10 * time.Minute,
		topDomains:    100,
		paceStall:     200 * time.Millisecond,
		now:           time.Now,
	}
}

func (c *config) validate() error {
	var errs []error
	if c.logger == nil {
		errs = append(errs, errors.New("logger is nil"))
	}
	if c.workers < 1 {
		errs = append(errs, fmt.Errorf("workers %d: must be at least 1", c.workers))
	}
	if c.retryMin <= 0 || c.retryMax < c.retryMin {
		errs = append(errs, fmt.Errorf("retry %v..%v: need 0 < min <= max", c.retryMin, c.retryMax))
	}
	if c.retryFactor < 1 || c.retryFactor > 16 {
		errs = append(errs, fmt.Errorf("backoff factor %v: must be between 1 and 16", c.retryFactor))
	}
	if !(c.retryBudget > 0 && c.retryBudget <= 1) {
		errs = append(errs, fmt.Errorf("retry budget %v: must be above 0 and at most 1", c.retryBudget))
	}
	if c.restartSpread < 0 {
		errs = append(errs, fmt.Errorf("restart spread %v: must not be negative", c.restartSpread))
	}
	if c.delayWarning < 0 {
		errs = append(errs, fmt.Errorf("delay warning %v: must not be negative", c.delayWarning))
	}
	if c.paceBacklog < 0 {
		errs = append(errs, fmt.Errorf("pace backlog %d: must not be negative", c.paceBacklog))
	}
	if c.topDomains < 0 {
		errs = append(errs, fmt.Errorf("domain metrics %d: must not be negative", c.topDomains))
	}
	if c.maxAge <= 0 {
		errs = append(errs, fmt.Errorf("max age %v: must be positive", c.maxAge))
	}
	if c.attemptTime <= 0 {
		errs = append(errs, fmt.Errorf("attempt timeout %v: must be positive", c.attemptTime))
	}
	if c.now == nil {
		errs = append(errs, errors.New("clock is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// WithLogger sets the logger for queue events (enqueue failures,
// corruption, bounces). Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithRegisterer registers the queue's Prometheus metrics with r.
// Default: metrics are kept but not registered.
func WithRegisterer(r prometheus.Registerer) Option { return func(c *config) { c.registerer = r } }

// WithWorkers sets how many delivery attempts may run at once.
// Default: 32.
func WithWorkers(n int) Option { return func(c *config) { c.workers = n } }

// WithRetry sets the backoff between attempts of a deferred recipient: the
// first retry comes after about min, each next one after the previous
// times the backoff factor (WithBackoffFactor), never more than max apart;
// each delay is jittered by up to ±20% so retries do not arrive in waves.
// Default: 5m, 1h (as Postfix's minimal_backoff_time and
// maximal_backoff_time, rounded).
func WithRetry(min, max time.Duration) Option {
	return func(c *config) { c.retryMin, c.retryMax = min, max }
}

// WithBackoffFactor sets how much longer each retry waits than the one
// before, between 1 (a fixed interval) and 16. Default: 2.
func WithBackoffFactor(f float64) Option { return func(c *config) { c.retryFactor = f } }

// WithRetryBudget caps the share of the workers that retries of deferred
// mail may hold at once, between 0 (exclusive) and 1. The rest is kept for
// first attempts, so a backlog of deferred mail never delays fresh mail
// (seed 002's split). At least one worker is always allowed for retries.
// Default: 0.5.
func WithRetryBudget(share float64) Option { return func(c *config) { c.retryBudget = share } }

// WithRestartSpread sets the window over which retries that were already
// due when Serve started are spread, each at a fixed pseudo-random point,
// so a restart after an outage does not send every deferred message at
// once. Zero starts them as workers allow. Default: 1m.
func WithRestartSpread(d time.Duration) Option { return func(c *config) { c.restartSpread = d } }

// WithDelayWarning sets the age after which a recipient still deferred is
// reported to the sender once with a "delayed" notification, through the
// Deliverer's [DelayNotifier]. Zero sends none. Default: 0 (off, as
// Postfix's delay_warning_time).
func WithDelayWarning(d time.Duration) Option { return func(c *config) { c.delayWarning = d } }

// WithDomainMetrics sets how many recipient domains, the deepest first,
// get their own depth and oldest-age series in the queue's metrics; the
// rest are summed under domain="other". Default: 100.
func WithDomainMetrics(n int) Option { return func(c *config) { c.topDomains = n } }

// WithPaceBacklog sets how many messages may wait for their first
// attempt before [Queue.Pace] holds new mail back. Zero, the default,
// means as many as there are workers (WithWorkers): with every worker
// busy, one more round of attempts is waiting, and the rest would be
// mail arriving faster than it leaves.
func WithPaceBacklog(n int) Option { return func(c *config) { c.paceBacklog = n } }

// WithStore keeps the queue's records in s instead of the default pebble
// database in the spool directory's db/ subdirectory. The directory still
// holds the lock and quarantine/. The queue closes s when it closes.
// Default: pebble.
func WithStore(s Store) Option { return func(c *config) { c.store = s } }

// WithMaxAge sets how long a message may stay queued; a recipient still
// deferred after that is bounced with status 4.4.7. Default: 5 days
// (RFC 5321 section 4.5.4.1 suggests at least 4-5 days).
func WithMaxAge(d time.Duration) Option { return func(c *config) { c.maxAge = d } }

// WithAttemptTimeout bounds one delivery attempt of one message, however
// many hosts it tries. Default: 10m.
func WithAttemptTimeout(d time.Duration) Option { return func(c *config) { c.attemptTime = d } }

// WithClock sets the queue's source of the current time, for tests that
// check schedules and expiry without waiting. Timers still run in real
// time; only due-time arithmetic uses the clock. Default: time.Now.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }
