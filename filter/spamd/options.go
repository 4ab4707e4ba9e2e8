package spamd

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Option configures a [Filter] in [New].
type Option func(*config)

type config struct {
	command     Command
	rejectScore float64 // NaN: spamd's own verdict
	user        string
	maxSize     int64
	timeout     time.Duration
	attempts    int
}

// defaultConfig holds every default of the package, in one place.
func defaultConfig() config {
	return config{
		command:     Symbols,
		rejectScore: math.NaN(),
		maxSize:     512 << 10, // spamc's default is 500 KB
		timeout:     30 * time.Second,
		attempts:    2,
	}
}

func (c *config) validate() error {
	var errs []error
	if !c.command.valid() {
		errs = append(errs, fmt.Errorf("unknown command %v", c.command))
	}
	if strings.ContainsAny(c.user, "\r\n") {
		errs = append(errs, fmt.Errorf("user %q: contains a line break", c.user))
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
		return fmt.Errorf("spamd: %w", err)
	}
	return nil
}

// WithCommand sets the spamd command: [Symbols] (the rule names go into
// X-Spam-Status), [Report] (the report also goes into X-Spam-Report) or
// [Headers] (spamd's own X-Spam-* header fields are added as they are).
// Default: Symbols.
func WithCommand(cmd Command) Option { return func(c *config) { c.command = cmd } }

// WithRejectScore rejects messages scoring at least score, and only tags
// the others. WithRejectScore(math.Inf(1)) never rejects: every message
// is accepted and tagged.
// Default: reject what spamd calls spam (its required_score).
func WithRejectScore(score float64) Option { return func(c *config) { c.rejectScore = score } }

// WithUser sets the user whose preferences spamd applies (spamc -u).
// Default: none (spamd's default user).
func WithUser(name string) Option { return func(c *config) { c.user = name } }

// WithMaxSize sets the largest message sent to spamd; larger ones are
// accepted untagged without a scan, as spamc does.
// Default: 512 KiB.
func WithMaxSize(n int64) Option { return func(c *config) { c.maxSize = n } }

// WithTimeout bounds each Check, even when its context has no deadline.
// Default: 30s.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithAttempts sets how many replicas one Check may try when a replica
// cannot be reached (the connection fails before the message is sent).
// A replica that fails later is not retried: its answer may be coming.
// Default: 2.
func WithAttempts(n int) Option { return func(c *config) { c.attempts = n } }
