package filter

import (
	"log/slog"
	"time"
)

// Option configures a [Chain].
type Option func(*config)

// FilterOption configures one filter of a [Chain], in [WithFilter].
type FilterOption func(*stage)

type config struct {
	stages []stage
	logger *slog.Logger
}

// stage is one filter of the chain with its limits and policies.
type stage struct {
	name      string
	f         Filter
	timeout   time.Duration
	onError   Policy
	onTimeout Policy
	at        Stage
}

func defaultConfig() config {
	return config{logger: slog.New(slog.DiscardHandler)}
}

func defaultStage(name string, f Filter) stage {
	return stage{
		name:      name,
		f:         f,
		timeout:   10 * time.Second,
		onError:   PolicyTempfail,
		onTimeout: PolicyTempfail,
	}
}

// WithFilter appends the filter f under name to the chain. Filters run in
// the order they were added; names must be unique and are used in logs,
// replies and the X-Sluice-Filter header.
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

// WithLogger sets the logger for filter failures and timeouts.
// Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// AtStage sets the point of the SMTP transaction where the filter runs.
// Default: StageData (end of DATA, with the whole message).
func AtStage(st Stage) FilterOption { return func(s *stage) { s.at = st } }

// Timeout sets how long the chain waits for the filter. A filter that has
// not returned by then is abandoned and its [OnTimeout] policy applies.
// Default: 10s.
func Timeout(d time.Duration) FilterOption { return func(s *stage) { s.timeout = d } }

// OnError sets what an error (or a panic) of the filter means for the
// message. Default: PolicyTempfail.
func OnError(p Policy) FilterOption { return func(s *stage) { s.onError = p } }

// OnTimeout sets what a timeout of the filter means for the message.
// Default: PolicyTempfail.
func OnTimeout(p Policy) FilterOption { return func(s *stage) { s.onTimeout = p } }
