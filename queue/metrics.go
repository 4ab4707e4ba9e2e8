package queue

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the queue's Prometheus collectors.
type metrics struct {
	depth          prometheus.GaugeFunc
	enqueued       prometheus.Counter
	enqueueErrors  prometheus.Counter
	enqueueLatency prometheus.Histogram
	corrupt        prometheus.Counter
	attempts       *prometheus.CounterVec
}

func newMetrics(q *Queue) *metrics {
	return &metrics{
		depth: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_queue_messages", Help: "Messages in the queue.",
		}, func() float64 { return float64(q.Depth()) }),
		enqueued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_queue_enqueued_total", Help: "Messages made durable by Enqueue.",
		}),
		enqueueErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_queue_enqueue_errors_total", Help: "Enqueue calls that failed; nothing was queued.",
		}),
		enqueueLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_queue_enqueue_duration_seconds",
			Help:    "Time from Enqueue to durable, body included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_queue_corrupt_records_total", Help: "Records that failed their checksum and were quarantined.",
		}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_queue_recipient_attempts_total", Help: "Recipient delivery attempts by outcome.",
		}, []string{"result"}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.depth, m.enqueued, m.enqueueErrors, m.enqueueLatency, m.corrupt, m.attempts} {
		errs = append(errs, r.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return errors.Join(errors.New("queue: register metrics"), err)
	}
	return nil
}
