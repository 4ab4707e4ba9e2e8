package health

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// watchMetrics are a Watcher's Prometheus collectors; nil when no
// Registerer was given, and every method is then a no-op.
type watchMetrics struct {
	value        *prometheus.GaugeVec   // rule
	firing       *prometheus.GaugeVec   // rule, key
	sampleErrors *prometheus.CounterVec // rule
	alerts       *prometheus.CounterVec // rule, state
	undelivered  *prometheus.CounterVec // rule
}

func newWatchMetrics(r prometheus.Registerer, rules []Rule) (*watchMetrics, error) {
	if r == nil {
		return nil, nil
	}
	m := &watchMetrics{
		value: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_watch_value",
			Help: "Last value sampled by a watch rule with a single sample.",
		}, []string{"rule"}),
		firing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_watch_firing",
			Help: "1 while a watch rule (and key, for per-key samples) is firing.",
		}, []string{"rule", "key"}),
		sampleErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_watch_sample_errors_total",
			Help: "Samples of a watch rule that failed.",
		}, []string{"rule"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_watch_alerts_total",
			Help: "Alerts raised by state (firing, resolved).",
		}, []string{"rule", "state"}),
		undelivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_watch_alerts_undelivered_total",
			Help: "Alerts a notifier failed to deliver.",
		}, []string{"rule"}),
	}
	for _, c := range []prometheus.Collector{m.value, m.firing, m.sampleErrors, m.alerts, m.undelivered} {
		if err := r.Register(c); err != nil {
			return nil, fmt.Errorf("health: register watch metrics: %w", err)
		}
	}
	for _, rule := range rules {
		m.sampleErrors.WithLabelValues(rule.Name)
		m.alerts.WithLabelValues(rule.Name, StateFiring)
		m.alerts.WithLabelValues(rule.Name, StateResolved)
		m.undelivered.WithLabelValues(rule.Name)
		if rule.Sample != nil {
			m.firing.WithLabelValues(rule.Name, "")
		}
	}
	return m, nil
}

func (m *watchMetrics) sampled(r Rule, values map[string]float64) {
	if m == nil || r.Sample == nil {
		return
	}
	m.value.WithLabelValues(r.Name).Set(values[""])
}

func (m *watchMetrics) sampleFailed(r Rule) {
	if m != nil {
		m.sampleErrors.WithLabelValues(r.Name).Inc()
	}
}

// raised counts a and sets the firing gauge; the gauge of a resolved key
// of a per-key rule is deleted, so that the keys do not pile up.
func (m *watchMetrics) raised(r Rule, a Alert) {
	if m == nil {
		return
	}
	m.alerts.WithLabelValues(a.Rule, a.State).Inc()
	switch {
	case a.State == StateFiring:
		m.firing.WithLabelValues(a.Rule, a.Key).Set(1)
	case r.Sample != nil:
		m.firing.WithLabelValues(a.Rule, a.Key).Set(0)
	default:
		m.firing.DeleteLabelValues(a.Rule, a.Key)
	}
}

func (m *watchMetrics) notifyFailed(a Alert) {
	if m != nil {
		m.undelivered.WithLabelValues(a.Rule).Inc()
	}
}
