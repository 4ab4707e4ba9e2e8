package queue

import (
	"cmp"
	"errors"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the queue's Prometheus collectors.
type metrics struct {
	q              *Queue
	enqueued       prometheus.Counter
	enqueueErrors  prometheus.Counter
	enqueueLatency prometheus.Histogram
	syncBatch      prometheus.Histogram
	syncLatency    prometheus.Histogram
	corrupt        prometheus.Counter
	attempts       *prometheus.CounterVec
	results        *prometheus.CounterVec

	depthDesc  *prometheus.Desc
	domainDesc *prometheus.Desc
	oldestDesc *prometheus.Desc
}

func newMetrics(q *Queue) *metrics {
	return &metrics{
		q: q,
		enqueued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_queue_enqueued_total", Help: "Messages made durable by Enqueue.",
		}),
		enqueueErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_queue_enqueue_errors_total", Help: "Enqueue calls that failed; nothing was acknowledged.",
		}),
		enqueueLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_queue_enqueue_duration_seconds",
			Help:    "Time from Enqueue to acknowledged (durable), body included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		syncBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_queue_fsync_batch_size",
			Help:    "Enqueue calls made durable by one fsync (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9),
		}),
		syncLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_queue_fsync_duration_seconds",
			Help:    "Time one fsync of the spool's write-ahead log took (group commit: one per sync, not per message).",
			Buckets: prometheus.ExponentialBuckets(0.0000625, 2, 14),
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_queue_corrupt_records_total", Help: "Records that failed their checksum and were quarantined or rebuilt.",
		}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_queue_attempts_total", Help: "Message delivery attempts started, by lane: fresh (first attempt) or retry.",
		}, []string{"lane"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_queue_recipient_attempts_total", Help: "Recipient delivery attempts by outcome.",
		}, []string{"result"}),
		depthDesc: prometheus.NewDesc("sluice_queue_messages",
			"Messages in the queue by state: pending (first attempt due), deferred, held, in_flight.", []string{"state"}, nil),
		domainDesc: prometheus.NewDesc("sluice_queue_domain_messages",
			"Messages in the queue with recipients at a domain (the deepest domains; the rest as other).", []string{"domain"}, nil),
		oldestDesc: prometheus.NewDesc("sluice_queue_domain_oldest_seconds",
			"Age of the oldest queued message with recipients at a domain (the deepest domains).", []string{"domain"}, nil),
	}
}

func (m *metrics) observeSync(n int, took time.Duration) {
	m.syncBatch.Observe(float64(n))
	m.syncLatency.Observe(took.Seconds())
}

func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.enqueued, m.enqueueErrors, m.enqueueLatency, m.syncBatch, m.syncLatency,
		m.corrupt, m.attempts, m.results, depthCollector{m}} {
		errs = append(errs, r.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return errors.Join(errors.New("queue: register metrics"), err)
	}
	return nil
}

// depthCollector reports the census at scrape time.
type depthCollector struct{ m *metrics }

func (c depthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.m.depthDesc
	ch <- c.m.domainDesc
	ch <- c.m.oldestDesc
}

func (c depthCollector) Collect(ch chan<- prometheus.Metric) {
	q := c.m.q
	st := q.Stats()
	for _, s := range []struct {
		name string
		n    int
	}{{"pending", st.Pending}, {"deferred", st.Deferred}, {"held", st.Held}, {"in_flight", st.InFlight}} {
		ch <- prometheus.MustNewConstMetric(c.m.depthDesc, prometheus.GaugeValue, float64(s.n), s.name)
	}
	for _, d := range st.Domains {
		ch <- prometheus.MustNewConstMetric(c.m.domainDesc, prometheus.GaugeValue, float64(d.Messages), d.Domain)
		if !d.Oldest.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.m.oldestDesc, prometheus.GaugeValue,
				q.cfg.now().Sub(d.Oldest).Seconds(), d.Domain)
		}
	}
	if st.OtherDomains > 0 {
		ch <- prometheus.MustNewConstMetric(c.m.domainDesc, prometheus.GaugeValue, float64(st.OtherDomains), "other")
	}
}

// topDomains returns the n domains with the most messages, deepest first,
// and the sum of the rest.
func topDomains(all map[string]int, n int) (top []DomainStats, other int) {
	for d, c := range all {
		top = append(top, DomainStats{Domain: d, Messages: c})
	}
	slices.SortFunc(top, func(a, b DomainStats) int {
		return cmp.Or(cmp.Compare(b.Messages, a.Messages), cmp.Compare(a.Domain, b.Domain))
	})
	if len(top) > n {
		for _, d := range top[n:] {
			other += d.Messages
		}
		top = top[:n]
	}
	return top, other
}
