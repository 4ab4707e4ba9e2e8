package health

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Option configures a [Health] in [New].
type Option func(*config)

type config struct {
	registry *prometheus.Registry // nil: New makes one
	timeout  time.Duration
	logger   *slog.Logger
}

// defaultConfig holds every default of the package, in one place.
func defaultConfig() config {
	return config{
		timeout: 2 * time.Second,
		logger:  slog.New(slog.DiscardHandler),
	}
}

func (c *config) validate() error {
	var errs []error
	if c.timeout <= 0 {
		errs = append(errs, fmt.Errorf("check timeout %v: must be positive", c.timeout))
	}
	if c.logger == nil {
		errs = append(errs, errors.New("logger is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	return nil
}

// WithRegistry sets the registry served on /metrics and returned by
// [Health.Registerer]. Collectors already registered with r are served as
// they are.
// Default: a new registry with the Go runtime and process collectors.
func WithRegistry(r *prometheus.Registry) Option { return func(c *config) { c.registry = r } }

// WithCheckTimeout bounds each request's checks: a check still running
// after d counts as failed.
// Default: 2s.
func WithCheckTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithLogger sets the logger for failed checks.
// Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }
