package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/health"
	"github.com/sluicemta/sluice/queue"
)

// alertsConfig is [alerts]: watchers over N consecutive periods that log
// an alert, and post it to a webhook, when a value stays past its
// threshold, and a "resolved" notice when it is back (seed 004).
type alertsConfig struct {
	Interval         string            `toml:"interval"`
	Webhook          string            `toml:"webhook"`
	WebhookTokenFile string            `toml:"webhook_token_file"`
	Rules            []alertRuleConfig `toml:"rule"`
}

// alertRuleConfig is one [[alerts.rule]].
type alertRuleConfig struct {
	Name           string   `toml:"name"`
	Metric         string   `toml:"metric"`
	Threshold      *float64 `toml:"threshold"`
	Below          bool     `toml:"below"`
	Periods        *int     `toml:"periods"`
	ResolvePeriods *int     `toml:"resolve_periods"`
}

// alertMetrics are the values a rule can watch, with whether the usual
// alarm is a value below the threshold.
var alertMetrics = map[string]string{
	"queue_depth":        "messages queued",
	"queue_age":          "seconds since the oldest queued message was received",
	"domain_queue_depth": "messages queued per recipient domain (the deepest domains)",
	"domain_queue_age":   "seconds since the oldest message of each recipient domain was received",
	"open_files":         "open file descriptors as a fraction of the limit (RLIMIT_NOFILE)",
	"rss_bytes":          "resident memory of the process",
	"heap_bytes":         "Go heap in use",
	"disk_free":          "free fraction of the spool's file system",
	"disk_free_bytes":    "free bytes on the spool's file system",
	"dns_failures":       "DNS lookups no resolver answered, per interval",
}

// alertSettings is the checked [alerts].
type alertSettings struct {
	interval time.Duration
	webhook  string
	token    string
	rules    []alertRule
}

type alertRule struct {
	name, metric            string
	threshold               float64
	below                   bool
	periods, resolvePeriods int
}

// defaultAlertRules watch what needs no threshold of the operator's: file
// handles (seed 001) and spool space. Rules of [[alerts.rule]] with the
// same name replace them.
var defaultAlertRules = []alertRule{
	{name: "open-files", metric: "open_files", threshold: 0.8, periods: 3, resolvePeriods: 3},
	{name: "spool-disk", metric: "disk_free", threshold: 0.1, below: true, periods: 3, resolvePeriods: 3},
}

func (v *validator) alerts(c *alertsConfig) alertSettings {
	a := alertSettings{interval: v.duration("alerts.interval", c.Interval), webhook: c.Webhook}
	if c.Webhook != "" {
		if _, err := health.NewWebhook(c.Webhook); err != nil {
			v.fail("alerts.webhook", "%v", err)
		}
	}
	if c.WebhookTokenFile != "" {
		if c.Webhook == "" {
			v.fail("alerts.webhook_token_file", "set without alerts.webhook")
		}
		a.token = v.secret("alerts.webhook_token_file", c.WebhookTokenFile)
	}
	names := make(map[string]bool)
	for i, rc := range c.Rules {
		key := fmt.Sprintf("alerts.rule[%d]", i)
		r := alertRule{name: rc.Name, metric: rc.Metric, below: rc.Below, periods: 3, resolvePeriods: 3}
		switch {
		case rc.Name == "":
			v.fail(key+".name", "missing")
		case names[rc.Name]:
			v.fail(key+".name", "duplicate rule name %q", rc.Name)
		}
		names[rc.Name] = true
		if _, ok := alertMetrics[rc.Metric]; !ok {
			v.fail(key+".metric", "unknown metric %q (want one of queue_depth, queue_age, domain_queue_depth, domain_queue_age, open_files, rss_bytes, heap_bytes, disk_free, disk_free_bytes, dns_failures)", rc.Metric)
		}
		if rc.Threshold == nil {
			v.fail(key+".threshold", "missing")
		} else {
			r.threshold = *rc.Threshold
		}
		if rc.Periods != nil {
			r.periods = v.positive(key+".periods", rc.Periods)
		}
		if rc.ResolvePeriods != nil {
			r.resolvePeriods = v.positive(key+".resolve_periods", rc.ResolvePeriods)
		}
		a.rules = append(a.rules, r)
	}
	return a
}

// withDefaultRules returns rules and the default rules whose names rules
// does not use.
func withDefaultRules(rules []alertRule) []alertRule {
	out := append([]alertRule(nil), rules...)
	for _, d := range defaultAlertRules {
		if !slices.ContainsFunc(rules, func(r alertRule) bool { return r.name == d.name }) {
			out = append(out, d)
		}
	}
	return out
}

// newWatcher builds the watcher of the alert settings over the running
// queue.
func newWatcher(a alertSettings, q *queue.Queue, agent *delivery.Agent, spool string, log *slog.Logger, reg prometheus.Registerer) (*health.Watcher, error) {
	var rules []health.Rule
	for _, r := range withDefaultRules(a.rules) {
		hr := health.Rule{Name: r.name, Threshold: r.threshold, Below: r.below, Periods: r.periods, ResolvePeriods: r.resolvePeriods}
		switch r.metric {
		case "queue_depth":
			hr.Sample = health.QueueDepth(q.Depth)
		case "queue_age":
			hr.Sample = health.OldestAge(q.Oldest, time.Now)
		case "domain_queue_depth", "domain_queue_age":
			hr.Samples = domainSamples(q, r.metric == "domain_queue_age")
		case "open_files":
			hr.Sample = health.Ratio(health.OpenFiles(), health.FileLimit())
		case "rss_bytes":
			hr.Sample = health.RSSBytes()
		case "heap_bytes":
			hr.Sample = health.HeapBytes()
		case "disk_free":
			hr.Sample = health.DiskFreeRatio(spool)
		case "disk_free_bytes":
			hr.Sample = health.DiskFreeBytes(spool)
		case "dns_failures":
			hr.Sample = health.Delta(func(context.Context) (float64, error) { return float64(agent.DNSFailures()), nil })
		}
		rules = append(rules, hr)
	}
	opts := []health.WatcherOption{health.WithWatchLogger(log), health.WithWatchRegisterer(reg)}
	if a.interval > 0 {
		opts = append(opts, health.WithWatchInterval(a.interval))
	}
	if a.webhook != "" {
		var wopts []health.WebhookOption
		if a.token != "" {
			wopts = append(wopts, health.WithWebhookHeader("Authorization", "Bearer "+a.token))
		}
		wh, err := health.NewWebhook(a.webhook, wopts...)
		if err != nil {
			return nil, err
		}
		opts = append(opts, health.WithNotifier(wh))
	}
	return health.NewWatcher(rules, opts...)
}

// domainSamples samples the depth, or the age of the oldest message, of
// each of the deepest recipient domains.
func domainSamples(q *queue.Queue, age bool) health.Samples {
	return func(context.Context) (map[string]float64, error) {
		st := q.Stats()
		out := make(map[string]float64, len(st.Domains))
		for _, d := range st.Domains {
			if age {
				out[d.Domain] = time.Since(d.Oldest).Seconds()
			} else {
				out[d.Domain] = float64(d.Messages)
			}
		}
		return out, nil
	}
}
