package delivery

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice"
)

// metrics are the agent's Prometheus collectors; nil when no Registerer
// was given.
type metrics struct {
	attempts    *prometheus.CounterVec
	duration    prometheus.Histogram
	connections *prometheus.CounterVec
	deadHosts   prometheus.Counter
	parked      prometheus.Counter
	rules       *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	if r == nil {
		return nil, nil
	}
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_delivery_attempts_total",
			Help: "Recipient delivery attempts by result (delivered, deferred, bounced).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_delivery_attempt_duration_seconds",
			Help:    "Duration of one delivery attempt to one destination (route lookup and SMTP sessions).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
	}
	m.connections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_delivery_connections_total",
		Help: "Sessions used for delivery: opened anew or reused from the connection cache.",
	}, []string{"kind"})
	m.deadHosts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_delivery_dead_hosts_total",
		Help: "Next-hop addresses marked dead (unreachable, silent or hung) and skipped for a while.",
	})
	m.parked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_delivery_destinations_parked_total",
		Help: "Destinations parked after repeated failures (their mail deferred without a session).",
	})
	m.rules = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_delivery_reply_rules_total",
		Help: "Next-hop replies that matched a reply rule, by the rule's action (backoff, suspend, bounce).",
	}, []string{"action"})
	for _, c := range []prometheus.Collector{m.attempts, m.duration, m.connections, m.deadHosts, m.parked, m.rules} {
		if err := r.Register(c); err != nil {
			return nil, fmt.Errorf("delivery: register metrics: %w", err)
		}
	}
	for _, o := range []sluice.Outcome{sluice.OutcomeDelivered, sluice.OutcomeDeferred, sluice.OutcomeBounced} {
		m.attempts.WithLabelValues(o.String())
	}
	for _, a := range []ReplyAction{ReplyBackoff, ReplySuspend, ReplyBounce} {
		m.rules.WithLabelValues(a.String())
	}
	m.connections.WithLabelValues("new")
	m.connections.WithLabelValues("reused")
	return m, nil
}

func (m *metrics) attempt(o sluice.Outcome) {
	if m != nil {
		m.attempts.WithLabelValues(o.String()).Inc()
	}
}

func (m *metrics) observe(d time.Duration) {
	if m != nil {
		m.duration.Observe(d.Seconds())
	}
}

func (m *metrics) connection(reused bool) {
	if m != nil {
		kind := "new"
		if reused {
			kind = "reused"
		}
		m.connections.WithLabelValues(kind).Inc()
	}
}

func (m *metrics) deadHost() {
	if m != nil {
		m.deadHosts.Inc()
	}
}

func (m *metrics) park() {
	if m != nil {
		m.parked.Inc()
	}
}

func (m *metrics) rule(a ReplyAction) {
	if m != nil {
		m.rules.WithLabelValues(a.String()).Inc()
	}
}
