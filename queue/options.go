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
	logger      *slog.Logger
	registerer  prometheus.Registerer
	workers     int
	retryMin    time.Duration
	retryMax    time.Duration
	maxAge      time.Duration
	attemptTime time.Duration
	now         func() time.Time
}

// defaultConfig holds every default of the package, in one place.
func defaultConfig() config {
	return config{
		logger:      slog.New(slog.DiscardHandler),
		workers:     32,
		retryMin:    5 * time.Minute,
		retryMax:    time.Hour,
		maxAge:      5 * 24 * time.Hour,
		attemptTime: 10 * time.Minute,
		now:         time.Now,
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
// first retry comes after about min, each next one after twice the
// previous, never more than max apart; each delay is jittered by up to
// ±20% so retries do not arrive in waves. Default: 5m, 1h (as Postfix's
// minimal_backoff_time and maximal_backoff_time, rounded).
func WithRetry(min, max time.Duration) Option {
	return func(c *config) { c.retryMin, c.retryMax = min, max }
}

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
