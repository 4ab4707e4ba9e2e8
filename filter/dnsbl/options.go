package dnsbl

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Option configures a [Checker].
type Option func(*config)

type config struct {
	timeout        time.Duration
	minTTL, maxTTL time.Duration
	cacheSize      int
	rejectScore    int
	tempfailScore  int
	header         string
	logger         *slog.Logger
	now            func() time.Time
}

// defaultConfig holds every default of the package, in one place.
func defaultConfig() config {
	return config{
		timeout:     2 * time.Second,
		minTTL:      time.Minute,
		maxTTL:      time.Hour,
		cacheSize:   100_000,
		rejectScore: 1,
		header:      "X-Sluice-DNSBL",
		logger:      slog.New(slog.DiscardHandler),
		now:         time.Now,
	}
}

func (c *config) validate() error {
	var errs []error
	if c.timeout <= 0 {
		errs = append(errs, fmt.Errorf("timeout %v must be positive", c.timeout))
	}
	if c.minTTL < 0 || c.maxTTL < c.minTTL {
		errs = append(errs, fmt.Errorf("cache TTL bounds %v and %v: want 0 <= min <= max", c.minTTL, c.maxTTL))
	}
	if c.cacheSize < 1 {
		errs = append(errs, fmt.Errorf("cache size %d must be at least 1", c.cacheSize))
	}
	if c.rejectScore < 1 {
		errs = append(errs, fmt.Errorf("reject score %d must be at least 1", c.rejectScore))
	}
	if c.tempfailScore < 0 || c.tempfailScore > 0 && c.tempfailScore >= c.rejectScore {
		errs = append(errs, fmt.Errorf("tempfail score %d: want 0 (off) or from 1 to below the reject score %d", c.tempfailScore, c.rejectScore))
	}
	if c.header != "" && !validFieldName(c.header) {
		errs = append(errs, fmt.Errorf("header name %q is not a field name", c.header))
	}
	if c.logger == nil {
		errs = append(errs, errors.New("logger is nil"))
	}
	if c.now == nil {
		errs = append(errs, errors.New("clock is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dnsbl: %w", err)
	}
	return nil
}

// WithTimeout bounds one [Checker.Lookup], all zones together.
// Default: 2s.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithCacheTTL bounds how long an answer is cached: its TTL (or, for a
// negative answer, its SOA's negative TTL), raised to min and capped at
// max.
// Default: 1m and 1h.
func WithCacheTTL(min, max time.Duration) Option {
	return func(c *config) { c.minTTL, c.maxTTL = min, max }
}

// WithCacheSize bounds the cache, in answers (one client in one zone);
// when it is full, expired answers are dropped, or else half of them.
// Default: 100000.
func WithCacheSize(n int) Option { return func(c *config) { c.cacheSize = n } }

// WithRejectScore sets the score at which [Checker.Check] rejects a
// client (554 5.7.1).
// Default: 1.
func WithRejectScore(n int) Option { return func(c *config) { c.rejectScore = n } }

// WithTempfailScore sets the score at which [Checker.Check] refuses a
// client for now (451 4.7.1), below the reject score; 0 turns it off.
// Default: 0.
func WithTempfailScore(n int) Option { return func(c *config) { c.tempfailScore = n } }

// WithHeader sets the name of the header field [Checker.Check] adds to
// the messages of a listed client it lets through; "" adds none.
// Default: "X-Sluice-DNSBL".
func WithHeader(name string) Option { return func(c *config) { c.header = name } }

// WithLogger sets the logger for failed lookups.
// Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithClock sets the clock of the cache.
// Default: time.Now.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// validFieldName reports whether name is an RFC 5322 section 3.6.8 field
// name: printable ASCII except colon.
func validFieldName(name string) bool {
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return name != ""
}
