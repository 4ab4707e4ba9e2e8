package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Sample returns the current value of a watched quantity: a queue depth,
// an age in seconds, a number of bytes or a ratio.
type Sample func(ctx context.Context) (float64, error)

// Samples returns one value per key, such as the queue depth of each
// destination. A key missing from a sample counts as back under the
// threshold.
type Samples func(ctx context.Context) (map[string]float64, error)

// Rule is a threshold on a sampled value. It fires when the value is over
// the threshold (under it, with Below) for Periods consecutive samples,
// and resolves when it has been back for ResolvePeriods consecutive
// samples: the hysteresis keeps a value that hovers at the threshold from
// raising an alert each period.
type Rule struct {
	// Name names the rule in alerts and logs, e.g. "queue_depth".
	Name string
	// Sample gives the value; exactly one of Sample and Samples is set.
	Sample Sample
	// Samples gives one value per key; each key fires and resolves on its
	// own.
	Samples Samples
	// Threshold is the limit of the value.
	Threshold float64
	// Below makes the rule fire when the value is under Threshold rather
	// than over it (free disk space, say).
	Below bool
	// Periods is the number of consecutive samples past the threshold
	// that fire the alert; 0 means 1.
	Periods int
	// ResolvePeriods is the number of consecutive samples back within the
	// threshold that resolve it; 0 means Periods.
	ResolvePeriods int
}

func (r Rule) validate() error {
	switch {
	case r.Name == "":
		return errors.New("health: rule without a name")
	case (r.Sample == nil) == (r.Samples == nil):
		return fmt.Errorf("health: rule %s: set exactly one of Sample and Samples", r.Name)
	case r.Periods < 0 || r.ResolvePeriods < 0:
		return fmt.Errorf("health: rule %s: negative periods", r.Name)
	}
	return nil
}

// past reports whether v is past the threshold: over it, or under it for
// a Below rule.
func (r Rule) past(v float64) bool {
	if r.Below {
		return v < r.Threshold
	}
	return v > r.Threshold
}

// Watcher samples its rules at an interval and raises an [Alert] when one
// fires and another when it resolves: one alert per firing, never one per
// period. Alerts are logged and sent to every [Notifier], such as a
// [Webhook]. Run it with [Watcher.Run], or call [Watcher.Tick] on a
// schedule of your own.
//
// Ready-made samples cover what the operators of the incident stories
// did not watch: [QueueDepth] and [OldestAge] (from the caller's queue),
// [OpenFiles] against [FileLimit] (RLIMIT_NOFILE), [HeapBytes] and
// [RSSBytes] against a budget ([Ratio], [Const]), [DiskFreeBytes] and
// [DiskFreeRatio] of the spool, and [Delta] of a counter such as resolver
// failures.
type Watcher struct {
	rules   []Rule
	cfg     watchConfig
	metrics *watchMetrics

	mu    sync.Mutex // guards state, and serialises ticks
	state map[stateKey]*ruleState
}

type stateKey struct {
	rule int
	key  string
}

// ruleState is the streak of one rule (and key).
type ruleState struct {
	firing bool
	streak int       // consecutive samples that count towards the change of state
	since  time.Time // first sample of the streak that fired
	id     string    // of the firing alert, repeated in its resolution
}

// NewWatcher returns a Watcher of rules. It fails on a rule without a
// name or a sample, on two rules with one name and on invalid options.
func NewWatcher(rules []Rule, opts ...WatcherOption) (*Watcher, error) {
	cfg := defaultWatchConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	seen := make(map[string]bool)
	for _, r := range rules {
		if err := r.validate(); err != nil {
			return nil, err
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("health: two rules named %s", r.Name)
		}
		seen[r.Name] = true
	}
	m, err := newWatchMetrics(cfg.registerer, rules)
	if err != nil {
		return nil, err
	}
	return &Watcher{
		rules:   slices.Clone(rules),
		cfg:     cfg,
		metrics: m,
		state:   make(map[stateKey]*ruleState),
	}, nil
}

// Run calls [Watcher.Tick] every interval until ctx is done, then returns
// ctx's error. A tick that raises alerts lasts until they are delivered or
// the notifiers give up (see [WithWebhookAttempts]); the next tick waits.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			w.Tick(ctx)
		}
	}
}

// Tick samples every rule once, updates their streaks, and logs and
// delivers the alerts raised; it returns them. Each sample runs under the
// sample timeout; a sample that fails is logged and leaves its rule's
// streak as it was. Ticks do not overlap: a concurrent call waits.
func (w *Watcher) Tick(ctx context.Context) []Alert {
	w.mu.Lock()
	defer w.mu.Unlock()
	var alerts []Alert
	for i, r := range w.rules {
		values, err := w.sample(ctx, r)
		if err != nil {
			w.metrics.sampleFailed(r)
			w.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "watch: sample failed",
				slog.String("rule", r.Name), slog.Any("error", err))
			continue
		}
		w.metrics.sampled(r, values)
		raised := w.updateLocked(i, values)
		for _, a := range raised {
			w.metrics.raised(r, a)
		}
		alerts = append(alerts, raised...)
	}
	for _, a := range alerts {
		w.deliver(ctx, a)
	}
	return alerts
}

// sample returns the values of r, keyed by "" for a single Sample.
func (w *Watcher) sample(ctx context.Context, r Rule) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.sampleTimeout)
	defer cancel()
	if r.Sample != nil {
		v, err := r.Sample(ctx)
		if err != nil {
			return nil, err
		}
		return map[string]float64{"": v}, nil
	}
	return r.Samples(ctx)
}

// updateLocked advances the streaks of rule i with values, and returns
// the alerts raised. Keys seen before but missing now count as within the
// threshold.
func (w *Watcher) updateLocked(i int, values map[string]float64) []Alert {
	r := w.rules[i]
	values = maps.Clone(values)
	if values == nil {
		values = make(map[string]float64)
	}
	for k := range w.state {
		if k.rule == i {
			if _, ok := values[k.key]; !ok {
				values[k.key] = r.Threshold // neither over nor under: back within
			}
		}
	}
	now := w.cfg.now()
	var alerts []Alert
	for _, key := range slices.Sorted(maps.Keys(values)) {
		v := values[key]
		sk := stateKey{i, key}
		st := w.state[sk]
		if st == nil {
			if !r.past(v) {
				continue // nothing to track
			}
			st = &ruleState{}
			w.state[sk] = st
		}
		if a, ok := w.step(r, key, st, v, now); ok {
			alerts = append(alerts, a)
		}
		if !st.firing && st.streak == 0 {
			delete(w.state, sk)
		}
	}
	return alerts
}

// step advances one streak with the value v sampled at now, and returns
// the alert raised if the rule changes state.
func (w *Watcher) step(r Rule, key string, st *ruleState, v float64, now time.Time) (Alert, bool) {
	fire, resolve := max(r.Periods, 1), r.ResolvePeriods
	if resolve == 0 {
		resolve = fire
	}
	if r.past(v) == st.firing { // the state holds: the streak of change ends
		st.streak = 0
		return Alert{}, false
	}
	if st.streak == 0 && !st.firing {
		st.since = now
	}
	st.streak++
	if !st.firing && st.streak >= fire {
		st.firing, st.streak = true, 0
		st.id = r.Name
		if key != "" {
			st.id += "/" + key
		}
		st.id += "@" + strconv.FormatInt(st.since.UnixMilli(), 10)
		return w.alert(r, key, st, v, now, fire), true
	}
	if st.firing && st.streak >= resolve {
		st.firing, st.streak = false, 0
		return w.alert(r, key, st, v, now, resolve), true
	}
	return Alert{}, false
}

func (w *Watcher) alert(r Rule, key string, st *ruleState, v float64, now time.Time, periods int) Alert {
	a := Alert{
		ID: st.id, Rule: r.Name, Key: key, State: StateFiring,
		Value: v, Threshold: r.Threshold, Below: r.Below, Periods: periods,
		Since: st.since, At: now,
	}
	if !st.firing {
		a.State = StateResolved
	}
	a.Summary = a.summary()
	return a
}

// deliver logs a and hands it to every notifier, each under the notify
// timeout.
func (w *Watcher) deliver(ctx context.Context, a Alert) {
	level := slog.LevelWarn
	if a.State == StateResolved {
		level = slog.LevelInfo
	}
	w.cfg.logger.LogAttrs(ctx, level, "alert "+a.State+": "+a.Summary, a.attrs()...)
	for _, n := range w.cfg.notifiers {
		nctx, cancel := context.WithTimeout(ctx, w.cfg.notifyTimeout)
		err := n.Notify(nctx, a)
		cancel()
		if err != nil {
			w.metrics.notifyFailed(a)
			w.cfg.logger.LogAttrs(ctx, slog.LevelError, "alert not delivered",
				append(a.attrs(), slog.Any("error", err))...)
		}
	}
}
