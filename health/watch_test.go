package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice/health"
)

// hook is a loopback webhook receiver that records the alerts posted to
// it. fail is the number of requests still to answer with 503.
type hook struct {
	srv *httptest.Server

	mu       sync.Mutex // guards the fields below
	alerts   []health.Alert
	attempts int
	keys     []string // Idempotency-Key of every attempt
	fail     int
	status   int // answer to every request when not 0
}

func newHook(t *testing.T) *hook {
	h := &hook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.attempts++
		h.keys = append(h.keys, r.Header.Get("Idempotency-Key"))
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want a JSON POST", http.StatusBadRequest)
			return
		}
		if h.status != 0 {
			w.WriteHeader(h.status)
			return
		}
		if h.fail > 0 {
			h.fail--
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		var a health.Alert
		if err := json.NewDecoder(r.Body).Decode(&a); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.alerts = append(h.alerts, a)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) got() ([]health.Alert, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]health.Alert(nil), h.alerts...), h.attempts
}

func (h *hook) webhook(t *testing.T, opts ...health.WebhookOption) *health.Webhook {
	t.Helper()
	opts = append([]health.WebhookOption{
		health.WithWebhookClient(h.srv.Client()),
		health.WithWebhookBackoff(5*time.Millisecond, 20*time.Millisecond),
	}, opts...)
	wh, err := health.NewWebhook(h.srv.URL+"/alerts", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return wh
}

// depthWatcher watches a settable queue depth: over 100 for 3 periods.
func depthWatcher(t *testing.T, depth *atomic.Int64, opts ...health.WatcherOption) *health.Watcher {
	t.Helper()
	w, err := health.NewWatcher([]health.Rule{{
		Name:      "queue_depth",
		Sample:    health.QueueDepth(func() int { return int(depth.Load()) }),
		Threshold: 100,
		Periods:   3,
	}}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestQueueDepthFiresOnceAndResolves(t *testing.T) {
	h := newHook(t)
	var depth atomic.Int64
	w := depthWatcher(t, &depth, health.WithNotifier(h.webhook(t)))
	ctx := context.Background()
	for i, step := range []struct {
		depth  int64
		alerts int // alerts received by the webhook after this tick
	}{
		{500, 0}, {500, 0}, // two periods over: not yet
		{50, 0},                      // back under: the streak starts again
		{500, 0}, {500, 0}, {500, 1}, // three periods over: fires
		{900, 1}, {900, 1}, {900, 1}, {900, 1}, // still over: no repeat
		{10, 1}, {10, 1}, {900, 1}, // two under, then over: not resolved
		{10, 1}, {10, 1}, {10, 2}, {10, 2}, {0, 2}, // three under: resolved, once
	} {
		depth.Store(step.depth)
		w.Tick(ctx)
		if alerts, _ := h.got(); len(alerts) != step.alerts {
			t.Fatalf("tick %d (depth %d): webhook has %d alerts, want %d: %+v", i, step.depth, len(alerts), step.alerts, alerts)
		}
	}
	alerts, _ := h.got()
	fired, resolved := alerts[0], alerts[1]
	if fired.State != health.StateFiring || fired.Rule != "queue_depth" || fired.Value != 500 || fired.Threshold != 100 || fired.Periods != 3 {
		t.Errorf("firing alert %+v", fired)
	}
	if resolved.State != health.StateResolved || resolved.Value != 10 {
		t.Errorf("resolved alert %+v", resolved)
	}
	if fired.ID == "" || resolved.ID != fired.ID {
		t.Errorf("ids %q and %q: want one non-empty id for the firing and its resolution", fired.ID, resolved.ID)
	}
}

func TestWebhookFailingTwiceGetsOneAlert(t *testing.T) {
	h := newHook(t)
	h.fail = 2
	var depth atomic.Int64
	depth.Store(1000)
	w := depthWatcher(t, &depth, health.WithNotifier(h.webhook(t)))
	for range 6 {
		w.Tick(context.Background())
	}
	alerts, attempts := h.got()
	if len(alerts) != 1 || attempts != 3 {
		t.Fatalf("webhook got %d alerts in %d attempts, want 1 in 3", len(alerts), attempts)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range h.keys {
		if k != alerts[0].ID {
			t.Errorf("attempt with Idempotency-Key %q, want the alert id %q", k, alerts[0].ID)
		}
	}
}

func TestWebhookGivesUp(t *testing.T) {
	for _, tc := range []struct {
		status   int
		attempts int
	}{
		{http.StatusInternalServerError, 3}, // retried, up to the bound
		{http.StatusTooManyRequests, 3},
		{http.StatusNotFound, 1}, // a retry would not help
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			h := newHook(t)
			h.status = tc.status
			err := h.webhook(t, health.WithWebhookAttempts(3)).Notify(context.Background(), health.Alert{ID: "x"})
			if err == nil {
				t.Fatal("Notify succeeded")
			}
			if _, attempts := h.got(); attempts != tc.attempts {
				t.Fatalf("%d attempts, want %d", attempts, tc.attempts)
			}
		})
	}
}

func TestWebhookAttemptTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // hang until the client gives up
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	wh, err := health.NewWebhook(srv.URL, health.WithWebhookClient(srv.Client()),
		health.WithWebhookTimeout(100*time.Millisecond), health.WithWebhookAttempts(2),
		health.WithWebhookBackoff(10*time.Millisecond, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = wh.Notify(context.Background(), health.Alert{ID: "x"})
	if elapsed := time.Since(start); err == nil || elapsed > 5*time.Second {
		t.Fatalf("Notify to a hung webhook: %v after %v; want an error after about 210ms", err, elapsed)
	}
}

func TestKeyedSamples(t *testing.T) {
	var mu sync.Mutex
	depths := map[string]float64{"a.example": 50, "b.example": 500}
	var got []health.Alert
	w, err := health.NewWatcher([]health.Rule{{
		Name: "destination_depth",
		Samples: func(context.Context) (map[string]float64, error) {
			mu.Lock()
			defer mu.Unlock()
			return depths, nil
		},
		Threshold: 100, Periods: 2, ResolvePeriods: 1,
	}}, health.WithNotifier(health.NotifierFunc(func(_ context.Context, a health.Alert) error {
		got = append(got, a)
		return nil
	})))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w.Tick(ctx)
	w.Tick(ctx)
	if len(got) != 1 || got[0].Key != "b.example" || got[0].State != health.StateFiring {
		t.Fatalf("alerts %+v, want b.example firing", got)
	}
	mu.Lock()
	delete(depths, "b.example") // the destination drained
	depths["a.example"] = 200
	mu.Unlock()
	w.Tick(ctx)
	w.Tick(ctx)
	if len(got) != 3 || got[1].Key != "a.example" && got[2].Key != "a.example" {
		t.Fatalf("alerts %+v, want b.example resolved and a.example firing", got)
	}
	for _, a := range got[1:] {
		if want := map[string]string{"a.example": health.StateFiring, "b.example": health.StateResolved}[a.Key]; a.State != want {
			t.Errorf("%s: %s, want %s", a.Key, a.State, want)
		}
	}
}

func TestBelowRuleAndFailedSamples(t *testing.T) {
	var free atomic.Int64
	var broken atomic.Bool
	var got []health.Alert
	w, err := health.NewWatcher([]health.Rule{{
		Name: "disk_free",
		Sample: func(context.Context) (float64, error) {
			if broken.Load() {
				return 0, errors.New("statfs failed")
			}
			return float64(free.Load()), nil
		},
		Threshold: 1 << 30, Below: true, Periods: 2,
	}}, health.WithNotifier(health.NotifierFunc(func(_ context.Context, a health.Alert) error {
		got = append(got, a)
		return nil
	})))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	free.Store(10 << 30)
	w.Tick(ctx)
	free.Store(1 << 20)
	w.Tick(ctx)
	broken.Store(true) // a failed sample neither extends nor breaks the streak
	w.Tick(ctx)
	broken.Store(false)
	if len(got) != 0 {
		t.Fatalf("alerts %+v before two periods under", got)
	}
	w.Tick(ctx)
	if len(got) != 1 || got[0].State != health.StateFiring || !got[0].Below {
		t.Fatalf("alerts %+v, want one firing", got)
	}
}

func TestRunTicksUntilCancelled(t *testing.T) {
	h := newHook(t)
	var depth atomic.Int64
	depth.Store(1000)
	w := depthWatcher(t, &depth, health.WithNotifier(h.webhook(t)), health.WithWatchInterval(5*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for alerts, _ := h.got(); len(alerts) == 0; alerts, _ = h.got() {
		if time.Now().After(deadline) {
			t.Fatal("no alert from Run within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if alerts, _ := h.got(); len(alerts) != 1 {
		t.Fatalf("%d alerts, want 1", len(alerts))
	}
}

func TestSources(t *testing.T) {
	ctx := context.Background()
	sample := func(name string, s health.Sample) float64 {
		t.Helper()
		v, err := s(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return v
	}
	before := sample("OpenFiles", health.OpenFiles())
	dir := t.TempDir()
	for i := range 10 {
		f, err := os.Create(filepath.Join(dir, string(rune('a'+i))))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	if after := sample("OpenFiles", health.OpenFiles()); after < before+10 {
		t.Errorf("OpenFiles %v after opening 10 files, was %v", after, before)
	}
	if r := sample("fd ratio", health.Ratio(health.OpenFiles(), health.FileLimit())); r <= 0 || r >= 1 {
		t.Errorf("open files / RLIMIT_NOFILE = %v, want within (0, 1)", r)
	}
	if v := sample("RSSBytes", health.RSSBytes()); v < 1<<20 {
		t.Errorf("RSS %v bytes, want at least 1 MiB", v)
	}
	if v := sample("HeapBytes", health.HeapBytes()); v <= 0 {
		t.Errorf("heap %v bytes", v)
	}
	if v := sample("DiskFreeBytes", health.DiskFreeBytes(dir)); v <= 0 {
		t.Errorf("disk free %v bytes", v)
	}
	if v := sample("DiskFreeRatio", health.DiskFreeRatio(dir)); v <= 0 || v > 1 {
		t.Errorf("disk free ratio %v", v)
	}
	if _, err := health.DiskFreeBytes(filepath.Join(dir, "missing"))(ctx); err == nil {
		t.Error("DiskFreeBytes of a missing path succeeded")
	}
	now := time.Now()
	if v := sample("OldestAge", health.OldestAge(func() time.Time { return now.Add(-90 * time.Second) }, func() time.Time { return now })); v != 90 {
		t.Errorf("OldestAge %v, want 90", v)
	}
	if v := sample("OldestAge empty", health.OldestAge(func() time.Time { return time.Time{} }, time.Now)); v != 0 {
		t.Errorf("OldestAge of an empty queue %v, want 0", v)
	}
	var failures atomic.Int64
	delta := health.Delta(func(context.Context) (float64, error) { return float64(failures.Load()), nil })
	for _, step := range []struct{ add, want int64 }{{3, 3}, {0, 0}, {5, 5}} {
		failures.Add(step.add)
		if v := sample("Delta", delta); v != float64(step.want) {
			t.Errorf("Delta %v after adding %d, want %d", v, step.add, step.want)
		}
	}
}

func TestNewWatcherRejects(t *testing.T) {
	s := health.Const(1)
	for _, tc := range []struct {
		name  string
		rules []health.Rule
		opts  []health.WatcherOption
	}{
		{"no name", []health.Rule{{Sample: s}}, nil},
		{"no sample", []health.Rule{{Name: "x"}}, nil},
		{"both samples", []health.Rule{{Name: "x", Sample: s, Samples: func(context.Context) (map[string]float64, error) { return nil, nil }}}, nil},
		{"negative periods", []health.Rule{{Name: "x", Sample: s, Periods: -1}}, nil},
		{"duplicate name", []health.Rule{{Name: "x", Sample: s}, {Name: "x", Sample: s}}, nil},
		{"zero interval", nil, []health.WatcherOption{health.WithWatchInterval(0)}},
		{"nil notifier", nil, []health.WatcherOption{health.WithNotifier(nil)}},
		{"nil logger", nil, []health.WatcherOption{health.WithWatchLogger(nil)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := health.NewWatcher(tc.rules, tc.opts...); err == nil {
				t.Fatal("NewWatcher succeeded")
			}
		})
	}
	for _, u := range []string{"", "ftp://x/", "http://", "://"} {
		if _, err := health.NewWebhook(u); err == nil {
			t.Errorf("NewWebhook(%q) succeeded", u)
		}
	}
	if _, err := health.NewWebhook("http://127.0.0.1/", health.WithWebhookAttempts(0)); err == nil {
		t.Error("NewWebhook with 0 attempts succeeded")
	}
}

func TestWatchMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	var depth atomic.Int64
	depth.Store(500)
	failing := health.NotifierFunc(func(context.Context, health.Alert) error { return errors.New("pager down") })
	w := depthWatcher(t, &depth, health.WithWatchRegisterer(reg), health.WithNotifier(failing))
	for range 3 {
		w.Tick(context.Background())
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"sluice_watch_value", map[string]string{"rule": "queue_depth"}, 500},
		{"sluice_watch_firing", map[string]string{"rule": "queue_depth", "key": ""}, 1},
		{"sluice_watch_alerts_total", map[string]string{"rule": "queue_depth", "state": "firing"}, 1},
		{"sluice_watch_alerts_total", map[string]string{"rule": "queue_depth", "state": "resolved"}, 0},
		{"sluice_watch_alerts_undelivered_total", map[string]string{"rule": "queue_depth"}, 1},
		{"sluice_watch_sample_errors_total", map[string]string{"rule": "queue_depth"}, 0},
	} {
		if got, ok := metricValue(t, reg, tc.name, tc.labels); !ok || got != tc.want {
			t.Errorf("%s%v = %v (found %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
	if _, err := health.NewWatcher(nil, health.WithWatchRegisterer(reg)); err == nil {
		t.Error("a second Watcher registered the same metrics")
	}
}

// metricValue returns the value of the gauge or counter name with labels
// in reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// A webhook URL's path and query, where chat services put the secret,
// never appear in an error (and so in the log).
func TestWebhookErrorsHideTheURLSecret(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "gone", http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	const secret = "T000/B000/s3cretToken"
	for _, u := range []string{srv.URL + "/hooks/" + secret + "?key=" + secret, "http://127.0.0.1:1/hooks/" + secret} {
		wh, err := health.NewWebhook(u, health.WithWebhookAttempts(1))
		if err != nil {
			t.Fatal(err)
		}
		err = wh.Notify(context.Background(), health.Alert{ID: "x", Rule: "r", State: health.StateFiring})
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("Notify to %s: error %v, want one without the secret", u, err)
		}
	}
}
