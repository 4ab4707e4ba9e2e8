package smtp

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of a transaction, the values of the result label of
// sluice_smtp_messages_total.
const (
	resultQueued    = "queued"    // 250 after Enqueue
	resultDiscarded = "discarded" // 250 but dropped by a filter
	resultRejected  = "rejected"  // 5xx to DATA
	resultDeferred  = "deferred"  // 4xx to DATA
)

// Reasons a connection was refused, the values of the reason label of
// sluice_smtp_refused_connections_total.
const (
	reasonConnections = "connections" // the server's connection cap
	reasonClient      = "client"      // the client's connection cap or rate
	reasonGate        = "gate"        // the health gate
	reasonDNSBL       = "dnsbl"       // listed by DNS blocklists
	reasonFilter      = "filter"      // refused by a connect-stage filter
)

// metrics are the server's Prometheus collectors; nil when no Registerer
// was given, and every method is then a no-op.
type metrics struct {
	connections prometheus.Counter
	sessions    prometheus.Gauge
	messages    *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	paced       prometheus.Counter
	pacedSecs   prometheus.Counter
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	if r == nil {
		return nil, nil
	}
	m := &metrics{
		connections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_smtp_connections_total",
			Help: "SMTP connections accepted.",
		}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_smtp_sessions",
			Help: "SMTP connections open now.",
		}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_smtp_messages_total",
			Help: "Messages received by result (queued, discarded, rejected, deferred).",
		}, []string{"result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_smtp_refused_connections_total",
			Help: "Connections refused at the door by reason (connections, client, gate).",
		}, []string{"reason"}),
		paced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_smtp_paced_total",
			Help: "MAIL commands held back because mail arrived faster than the queue delivered it.",
		}),
		pacedSecs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_smtp_paced_seconds_total",
			Help: "Time MAIL commands were held back because mail arrived faster than the queue delivered it.",
		}),
	}
	for _, c := range []prometheus.Collector{m.connections, m.sessions, m.messages, m.refusals, m.paced, m.pacedSecs} {
		if err := r.Register(c); err != nil {
			return nil, fmt.Errorf("smtp: register metrics: %w", err)
		}
	}
	for _, res := range []string{resultQueued, resultDiscarded, resultRejected, resultDeferred} {
		m.messages.WithLabelValues(res)
	}
	for _, r := range []string{reasonConnections, reasonClient, reasonGate} {
		m.refusals.WithLabelValues(r)
	}
	return m, nil
}

func (m *metrics) connOpened() {
	if m != nil {
		m.connections.Inc()
		m.sessions.Inc()
	}
}

func (m *metrics) connClosed() {
	if m != nil {
		m.sessions.Dec()
	}
}

func (m *metrics) message(result string) {
	if m != nil {
		m.messages.WithLabelValues(result).Inc()
	}
}

func (m *metrics) pacedFor(d time.Duration) {
	if m != nil {
		m.paced.Inc()
		m.pacedSecs.Add(d.Seconds())
	}
}

func (m *metrics) refused(reason string) {
	if m != nil {
		m.refusals.WithLabelValues(reason).Inc()
	}
}
