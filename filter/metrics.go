package filter

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the chain's Prometheus collectors; nil when no Registerer
// was given (every method is then a no-op).
type metrics struct {
	calls  *prometheus.CounterVec
	state  *prometheus.GaugeVec
	opened *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer, names []string) (*metrics, error) {
	if r == nil {
		return nil, nil
	}
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_filter_calls_total",
			Help: "Filter calls by filter and result (accept, reject, tempfail, discard, quarantine, error, timeout, open).",
		}, []string{"filter", "result"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_filter_breaker_state",
			Help: "Circuit breaker state of each filter: 0 closed, 1 half-open, 2 open.",
		}, []string{"filter"}),
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_filter_breaker_opened_total",
			Help: "Times each filter's circuit breaker opened after failures.",
		}, []string{"filter"}),
	}
	for _, c := range []prometheus.Collector{m.calls, m.state, m.opened} {
		if err := r.Register(c); err != nil {
			return nil, fmt.Errorf("filter: register metrics: %w", err)
		}
	}
	for _, n := range names {
		m.state.WithLabelValues(n).Set(0)
		m.opened.WithLabelValues(n)
	}
	return m, nil
}

func (m *metrics) call(name, result string) {
	if m != nil {
		m.calls.WithLabelValues(name, result).Inc()
	}
}

func (m *metrics) breaker(name string, to breakerState, opened bool) {
	if m == nil {
		return
	}
	m.state.WithLabelValues(name).Set(float64(to))
	if opened {
		m.opened.WithLabelValues(name).Inc()
	}
}
