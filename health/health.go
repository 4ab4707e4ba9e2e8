package health

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Checker reports whether one part of the process is healthy: a nil error
// means healthy. Check must honour ctx, which carries the check timeout.
type Checker interface {
	Check(ctx context.Context) error
}

// CheckerFunc adapts a function to a [Checker].
type CheckerFunc func(ctx context.Context) error

// Check calls f(ctx).
func (f CheckerFunc) Check(ctx context.Context) error { return f(ctx) }

var _ Checker = CheckerFunc(nil)

// Role is what a failing readiness check takes away from the process,
// which grades its readiness.
type Role int

const (
	// Accepting checks are what taking mail needs (a writable spool, a
	// listener that answers, a queue under its watermark). One failing
	// makes the process not ready: /readyz answers 503.
	Accepting Role = iota
	// Delivering checks are what sending mail on needs (the resolver,
	// the next hops). One failing leaves the process ready, "delivering"
	// false: mail is accepted and waits in the queue.
	Delivering
	// Optional checks are dependencies the process works around (a filter
	// replica, a DNSBL). One failing leaves it ready but "degraded".
	Optional
)

// String returns "accepting", "delivering" or "optional".
func (r Role) String() string {
	switch r {
	case Accepting:
		return "accepting"
	case Delivering:
		return "delivering"
	case Optional:
		return "optional"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// Health holds the liveness and readiness checks of a process and serves
// them, with the process's metrics, over HTTP. Its methods are safe for
// concurrent use.
type Health struct {
	cfg       config
	draining  atomic.Bool
	lastReady atomicString // status and failing checks last served, for logging changes

	mu        sync.Mutex // guards liveness and readiness
	liveness  map[string]Checker
	readiness map[string]roleCheck
}

// atomicString is a string safe for concurrent Swap.
type atomicString struct{ v atomic.Value }

// Swap stores s and returns the previous value ("" at first).
func (a *atomicString) Swap(s string) string {
	old, _ := a.v.Swap(s).(string)
	return old
}

type roleCheck struct {
	role Role
	c    Checker
}

// New returns a Health with no checks: both /livez and /readyz answer 200
// until checks are added.
func New(opts ...Option) (*Health, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.registry == nil {
		cfg.registry = prometheus.NewRegistry()
		cfg.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	cfg.logger = cfg.logger.With("component", "health")
	return &Health{
		cfg:       cfg,
		liveness:  make(map[string]Checker),
		readiness: make(map[string]roleCheck),
	}, nil
}

// AddReadiness adds (or replaces) the readiness check called name, with
// the role [Accepting]: the process is ready only while it passes.
func (h *Health) AddReadiness(name string, c Checker) { h.AddCheck(name, Accepting, c) }

// AddCheck adds (or replaces) the readiness check called name, whose
// failure grades readiness as its role says.
func (h *Health) AddCheck(name string, role Role, c Checker) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.readiness[name] = roleCheck{role, c}
}

// Readiness is the graded readiness of the process, the body of /readyz.
type Readiness struct {
	// Status is "ready", "degraded" (ready, with an Optional or
	// Delivering check failing), "not ready" or "draining".
	Status     string `json:"status"`
	Accepting  bool   `json:"accepting"`
	Delivering bool   `json:"delivering"`
	// Failing names each failing check with its error.
	Failing map[string]string `json:"failing,omitempty"`
}

// Ready runs the readiness checks and grades the result. The process is
// ready (it should be sent mail) when Accepting is true and it is not
// draining.
func (h *Health) Ready(ctx context.Context) Readiness {
	if h.draining.Load() {
		return Readiness{Status: "draining"}
	}
	h.mu.Lock()
	checks := make(map[string]Checker, len(h.readiness))
	roles := make(map[string]Role, len(h.readiness))
	for name, rc := range h.readiness {
		checks[name], roles[name] = rc.c, rc.role
	}
	h.mu.Unlock()
	r := Readiness{Status: "ready", Accepting: true, Delivering: true}
	for name, err := range h.run(ctx, checks) {
		if r.Failing == nil {
			r.Failing = make(map[string]string)
		}
		r.Failing[name] = err.Error()
		switch roles[name] {
		case Accepting:
			r.Accepting = false
		case Delivering:
			r.Delivering = false
		}
	}
	switch {
	case !r.Accepting:
		r.Status = "not ready"
	case len(r.Failing) > 0:
		r.Status = "degraded"
	}
	return r
}

// AddLiveness adds (or replaces) the liveness check called name. A failed
// liveness check means the process should be restarted, so keep these to
// conditions a restart cures (a deadlocked loop, not a dead peer).
func (h *Health) AddLiveness(name string, c Checker) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.liveness[name] = c
}

// SetDraining sets or clears the lame-duck state: while draining, /readyz
// answers 503 "draining" whatever the checks say, so load balancers stop
// sending new work while the process finishes what it has.
func (h *Health) SetDraining(on bool) { h.draining.Store(on) }

// Registerer returns the registry served on /metrics, for other packages'
// WithPoolRegisterer options.
func (h *Health) Registerer() prometheus.Registerer { return h.cfg.registry }

// Handler returns the HTTP handler serving /livez, /readyz and /metrics.
// Mount it at the root of a server, or under a prefix with
// [http.StripPrefix].
func (h *Health) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		h.serveChecks(w, r, h.snapshot(h.liveness), "not alive")
	})
	mux.HandleFunc("GET /readyz", h.serveReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.cfg.registry, promhttp.HandlerOpts{
		Registry: h.cfg.registry,
		ErrorLog: slog.NewLogLogger(h.cfg.logger.Handler(), slog.LevelError),
	}))
	return mux
}

// status is the JSON body of a failed check.
type status struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks,omitempty"`
}

// serveReady answers /readyz: 200 while accepting mail, 503 otherwise,
// with the graded Readiness as JSON either way.
func (h *Health) serveReady(w http.ResponseWriter, r *http.Request) {
	rd := h.Ready(r.Context())
	code := http.StatusOK
	if !rd.Accepting {
		code = http.StatusServiceUnavailable
	}
	names := make([]string, 0, len(rd.Failing))
	for n := range rd.Failing {
		names = append(names, n)
	}
	sort.Strings(names)
	// Log changes only: a load balancer polls every few seconds.
	if key := rd.Status + " " + strings.Join(names, ","); h.lastReady.Swap(key) != key {
		h.cfg.logger.Warn("readiness changed", "status", rd.Status, "failing", names)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(rd)
}

func (h *Health) snapshot(m map[string]Checker) map[string]Checker {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := make(map[string]Checker, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (h *Health) serveChecks(w http.ResponseWriter, r *http.Request, checks map[string]Checker, failed string) {
	errs := h.run(r.Context(), checks)
	if len(errs) == 0 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, "ok")
		return
	}
	st := status{Status: failed, Checks: make(map[string]string, len(errs))}
	names := make([]string, 0, len(errs))
	for name, err := range errs {
		st.Checks[name] = err.Error()
		names = append(names, name)
	}
	sort.Strings(names)
	h.cfg.logger.Warn("health check failed", "status", failed, "checks", names)
	writeStatus(w, http.StatusServiceUnavailable, st)
}

// run calls every check concurrently, each under the check timeout, and
// returns the errors of the failed ones by name.
func (h *Health) run(ctx context.Context, checks map[string]Checker) map[string]error {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.timeout)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // guards errs
		errs = make(map[string]error)
	)
	for name, c := range checks {
		wg.Go(func() {
			err := runOne(ctx, c)
			if err != nil {
				mu.Lock()
				errs[name] = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errs
}

// runOne calls c, turning a panic into an error and a check that ignores
// its context into a timeout. The check's goroutine may outlive runOne in
// that case, but only as long as the check itself hangs.
func runOne(ctx context.Context, c Checker) error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("check panicked: %v", p)
			}
		}()
		done <- c.Check(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("check timed out: %w", context.Cause(ctx))
	}
}

func writeStatus(w http.ResponseWriter, code int, st status) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}
