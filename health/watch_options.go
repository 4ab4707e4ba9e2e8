package health

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WatcherOption configures a [Watcher] in [NewWatcher].
type WatcherOption func(*watchConfig)

type watchConfig struct {
	interval      time.Duration
	sampleTimeout time.Duration
	notifyTimeout time.Duration
	notifiers     []Notifier
	logger        *slog.Logger
	now           func() time.Time
	registerer    prometheus.Registerer
}

// defaultWatchConfig holds every default of the Watcher, in one place.
func defaultWatchConfig() watchConfig {
	return watchConfig{
		interval:      30 * time.Second,
		sampleTimeout: 5 * time.Second,
		notifyTimeout: time.Minute,
		logger:        slog.New(slog.DiscardHandler),
		now:           time.Now,
	}
}

func (c *watchConfig) validate() error {
	var errs []error
	if c.interval <= 0 {
		errs = append(errs, fmt.Errorf("watch interval %v: must be positive", c.interval))
	}
	if c.sampleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("sample timeout %v: must be positive", c.sampleTimeout))
	}
	if c.notifyTimeout <= 0 {
		errs = append(errs, fmt.Errorf("notify timeout %v: must be positive", c.notifyTimeout))
	}
	for _, n := range c.notifiers {
		if n == nil {
			errs = append(errs, errors.New("nil notifier"))
		}
	}
	if c.logger == nil {
		errs = append(errs, errors.New("watch logger is nil"))
	}
	if c.now == nil {
		errs = append(errs, errors.New("watch clock is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	return nil
}

// WithWatchInterval sets how often [Watcher.Run] samples the rules: the
// period that [Rule.Periods] counts.
// Default: 30s.
func WithWatchInterval(d time.Duration) WatcherOption {
	return func(c *watchConfig) { c.interval = d }
}

// WithSampleTimeout bounds each sample: one that takes longer fails.
// Default: 5s.
func WithSampleTimeout(d time.Duration) WatcherOption {
	return func(c *watchConfig) { c.sampleTimeout = d }
}

// WithNotifier adds a notifier that every alert is sent to, besides the
// log. It may be given more than once.
// Default: none (alerts are only logged).
func WithNotifier(n Notifier) WatcherOption {
	return func(c *watchConfig) { c.notifiers = append(c.notifiers, n) }
}

// WithNotifyTimeout bounds the delivery of one alert to one notifier,
// retries included.
// Default: 1m.
func WithNotifyTimeout(d time.Duration) WatcherOption {
	return func(c *watchConfig) { c.notifyTimeout = d }
}

// WithWatchLogger sets the logger that alerts and failed samples and
// deliveries are logged to.
// Default: a logger that discards everything.
func WithWatchLogger(l *slog.Logger) WatcherOption {
	return func(c *watchConfig) { c.logger = l }
}

// WithWatchClock sets the clock that stamps alerts.
// Default: time.Now.
func WithWatchClock(now func() time.Time) WatcherOption {
	return func(c *watchConfig) { c.now = now }
}

// WithWatchRegisterer registers the Watcher's metrics with r:
// sluice_watch_value{rule} (rules with a single Sample),
// sluice_watch_firing{rule,key}, sluice_watch_sample_errors_total{rule},
// sluice_watch_alerts_total{rule,state} and
// sluice_watch_alerts_undelivered_total{rule}. Use [Health.Registerer] to
// serve them on /metrics.
// Default: no metrics.
func WithWatchRegisterer(r prometheus.Registerer) WatcherOption {
	return func(c *watchConfig) { c.registerer = r }
}
