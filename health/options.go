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

// ProbeOption configures a [Probe] in [NewProbe], or every probe of a
// [Pool] through [WithProbeOptions].
type ProbeOption func(*probeConfig)

type probeConfig struct {
	interval time.Duration
	deadline time.Duration
	rise     int
	fall     int
	logger   *slog.Logger
	onChange func(addr string, up bool, err error)
}

// defaultProbeConfig holds the defaults of a Probe. They follow HAProxy's
// health checks (inter 2s, rise 2, fall 3) with a deadline short enough
// that a hung peer is found within one interval.
func defaultProbeConfig() probeConfig {
	return probeConfig{
		interval: 2 * time.Second,
		deadline: time.Second,
		rise:     2,
		fall:     3,
		logger:   slog.New(slog.DiscardHandler),
	}
}

func (c *probeConfig) validate() error {
	var errs []error
	if c.interval <= 0 {
		errs = append(errs, fmt.Errorf("interval %v: must be positive", c.interval))
	}
	if c.deadline <= 0 {
		errs = append(errs, fmt.Errorf("deadline %v: must be positive", c.deadline))
	}
	if c.rise < 1 {
		errs = append(errs, fmt.Errorf("rise %d: must be at least 1", c.rise))
	}
	if c.fall < 1 {
		errs = append(errs, fmt.Errorf("fall %d: must be at least 1", c.fall))
	}
	if c.logger == nil {
		errs = append(errs, errors.New("logger is nil"))
	}
	return errors.Join(errs...)
}

// WithProbeInterval sets the time from the end of one check to the start of
// the next.
// Default: 2s.
func WithProbeInterval(d time.Duration) ProbeOption { return func(c *probeConfig) { c.interval = d } }

// WithProbeDeadline bounds each check: one that has not passed by then failed.
// Default: 1s.
func WithProbeDeadline(d time.Duration) ProbeOption { return func(c *probeConfig) { c.deadline = d } }

// WithRise sets how many consecutive successful checks bring a down
// endpoint back up.
// Default: 2.
func WithRise(n int) ProbeOption { return func(c *probeConfig) { c.rise = n } }

// WithFall sets how many consecutive failed checks take an up endpoint
// down.
// Default: 3.
func WithFall(n int) ProbeOption { return func(c *probeConfig) { c.fall = n } }

// WithProbeLogger sets the logger for transitions: a warning when the
// endpoint goes down (with the error), an info line when it comes back.
// Default: a logger that discards everything.
func WithProbeLogger(l *slog.Logger) ProbeOption { return func(c *probeConfig) { c.logger = l } }

// WithProbeOnChange sets a function called on every transition, in order, with
// the error that took the endpoint down (nil when it comes up). It is
// called with the Probe's lock held: it must be quick and must not call
// the Probe's methods.
// Default: none.
func WithProbeOnChange(f func(addr string, up bool, err error)) ProbeOption {
	return func(c *probeConfig) { c.onChange = f }
}

// PoolOption configures a [Pool] in [NewPool].
type PoolOption func(*poolConfig)

type poolConfig struct {
	strategy   Strategy
	ejectAfter int
	probeOpts  []ProbeOption
	noFirst    bool // skip the first check in NewPool
	logger     *slog.Logger
	registerer prometheus.Registerer
}

// defaultPoolConfig holds the defaults of a Pool.
func defaultPoolConfig() poolConfig {
	return poolConfig{
		strategy:   LeastOutstanding,
		ejectAfter: 3,
		logger:     slog.New(slog.DiscardHandler),
	}
}

func (c *poolConfig) validate() error {
	var errs []error
	if !c.strategy.valid() {
		errs = append(errs, fmt.Errorf("unknown strategy %v", c.strategy))
	}
	if c.ejectAfter < 1 {
		errs = append(errs, fmt.Errorf("eject after %d errors: must be at least 1", c.ejectAfter))
	}
	if c.logger == nil {
		errs = append(errs, errors.New("logger is nil"))
	}
	// The probes' own options are checked by NewProbe.
	return errors.Join(errs...)
}

// WithStrategy sets how the pool chooses among healthy endpoints.
// Default: LeastOutstanding.
func WithStrategy(s Strategy) PoolOption { return func(c *poolConfig) { c.strategy = s } }

// WithEjectAfter sets how many consecutive request errors reported with
// [Pool.Done] eject an endpoint before its probe notices.
// Default: 3.
func WithEjectAfter(n int) PoolOption { return func(c *poolConfig) { c.ejectAfter = n } }

// WithProbeOptions sets the options of every endpoint's [Probe]: interval,
// deadline, rise, fall. A [WithProbeOnChange] callback given here is called
// after the pool has updated its own state.
// Default: the defaults of [NewProbe].
func WithProbeOptions(opts ...ProbeOption) PoolOption {
	return func(c *poolConfig) { c.probeOpts = append(c.probeOpts, opts...) }
}

// WithPoolLogger sets the logger for endpoint transitions, each logged
// with the pool's name and the endpoint's address.
// Default: a logger that discards everything.
func WithPoolLogger(l *slog.Logger) PoolOption { return func(c *poolConfig) { c.logger = l } }

// WithPoolRegisterer sets where the pool's metrics are registered. Pools may
// share a registerer; they are told apart by the pool label.
// Default: none (the metrics are kept but not exported).
func WithPoolRegisterer(r prometheus.Registerer) PoolOption {
	return func(c *poolConfig) { c.registerer = r }
}

// probeConfig returns the probe settings of the pool's options.
func (c *poolConfig) probeConfig() probeConfig {
	pc := defaultProbeConfig()
	for _, o := range c.probeOpts {
		o(&pc)
	}
	return pc
}

// WithFirstCheck sets whether [NewPool] checks every endpoint once before
// it returns and starts the failing ones down. Turn it off to start every
// endpoint up, for example when the probes cannot reach endpoints that
// real traffic can.
// Default: true.
func WithFirstCheck(on bool) PoolOption { return func(c *poolConfig) { c.noFirst = !on } }
