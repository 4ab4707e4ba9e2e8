package health

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// poolMetrics are the metric vectors of every Pool on one registry; pools
// share them, told apart by the pool label.
type poolMetrics struct {
	up          *prometheus.GaugeVec
	outstanding *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	requests    *prometheus.CounterVec
}

func newPoolMetrics(reg prometheus.Registerer) (*poolMetrics, error) {
	labels := []string{"pool", "endpoint"}
	m := &poolMetrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_pool_endpoint_up",
			Help: "Whether the pool endpoint is in rotation (1) or ejected (0).",
		}, labels),
		outstanding: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_pool_endpoint_outstanding",
			Help: "Requests picked for the pool endpoint and not yet done.",
		}, labels),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_pool_transitions_total",
			Help: "Transitions of the pool endpoint to the state up or down.",
		}, append(labels, "state")),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_pool_requests_total",
			Help: "Requests done on the pool endpoint, by result (ok, error, canceled).",
		}, append(labels, "result")),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.up, err = register(reg, m.up)
	if err == nil {
		m.outstanding, err = register(reg, m.outstanding)
	}
	if err == nil {
		m.transitions, err = register(reg, m.transitions)
	}
	if err == nil {
		m.requests, err = register(reg, m.requests)
	}
	return m, err
}

// register registers c, or returns the collector of the same description
// already registered (by another pool on the same registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

func (m *poolMetrics) transition(pool, addr string, up bool) {
	state, v := "down", 0.0
	if up {
		state, v = "up", 1
	}
	m.up.WithLabelValues(pool, addr).Set(v)
	m.transitions.WithLabelValues(pool, addr, state).Inc()
}

func (m *poolMetrics) request(pool, addr string, err error) {
	result := "ok"
	switch {
	case errors.Is(err, context.Canceled):
		result = "canceled"
	case err != nil:
		result = "error"
	}
	m.requests.WithLabelValues(pool, addr, result).Inc()
}

// forget deletes the series of one pool.
func (m *poolMetrics) forget(pool string) {
	l := prometheus.Labels{"pool": pool}
	m.up.DeletePartialMatch(l)
	m.outstanding.DeletePartialMatch(l)
	m.transitions.DeletePartialMatch(l)
	m.requests.DeletePartialMatch(l)
}
