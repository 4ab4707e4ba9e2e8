package rspamd

import (
	"errors"
	"fmt"
	"time"
)

// Option configures a [Filter] in [New].
type Option func(*config)

type config struct {
	password string
	maxSize  int64
	timeout  time.Duration
	attempts int
}

// defaultConfig holds every default of the package, in one place.
func defaultConfig() config {
	return config{
		maxSize:  50 << 20, // rspamd's own max_message default
		timeout:  30 * time.Second,
		attempts: 2,
	}
}

func (c *config) validate() error {
	var errs []error
	if !headerValue(c.password) {
		errs = append(errs, errors.New("password contains a control character, which an HTTP header cannot carry"))
	}
	if c.maxSize <= 0 {
		errs = append(errs, fmt.Errorf("max size %d: must be positive", c.maxSize))
	}
	if c.timeout <= 0 {
		errs = append(errs, fmt.Errorf("timeout %v: must be positive", c.timeout))
	}
	if c.attempts < 1 {
		errs = append(errs, fmt.Errorf("attempts %d: must be at least 1", c.attempts))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rspamd: %w", err)
	}
	return nil
}

// WithPassword sets the Password header, for an rspamd worker or proxy
// that requires one.
// Default: none.
func WithPassword(p string) Option { return func(c *config) { c.password = p } }

// WithMaxSize sets the largest message sent to rspamd; larger ones are
// accepted untagged without a scan.
// Default: 50 MiB (rspamd's max_message).
func WithMaxSize(n int64) Option { return func(c *config) { c.maxSize = n } }

// WithTimeout bounds each Check, even when its context has no deadline.
// Default: 30s.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithAttempts sets how many replicas one Check may try when a replica
// cannot be reached (the connection fails before the message is sent).
// Default: 2.
func WithAttempts(n int) Option { return func(c *config) { c.attempts = n } }
