package health

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice/internal/blackhole"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

func newHealth(t *testing.T, opts ...Option) (*Health, *httptest.Server) {
	t.Helper()
	h, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.Handler())
	t.Cleanup(srv.Close)
	return h, srv
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// flag is a check whose result the test sets.
type flag struct {
	mu  sync.Mutex
	err error
}

func (f *flag) set(err error) { f.mu.Lock(); f.err = err; f.mu.Unlock() }
func (f *flag) Check(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func TestReadyzIsGraded(t *testing.T) {
	h, srv := newHealth(t)
	queue, dns, filter := &flag{}, &flag{}, &flag{}
	h.AddReadiness("queue", queue)
	h.AddCheck("dns", Delivering, dns)
	h.AddCheck("spamd", Optional, filter)

	down := errors.New("down")
	steps := []struct {
		name               string
		queue, dns, filter error
		draining           bool
		code               int
		want               Readiness
	}{
		{"healthy", nil, nil, nil, false, 200, Readiness{Status: "ready", Accepting: true, Delivering: true}},
		{"a filter replica down", nil, nil, down, false, 200,
			Readiness{Status: "degraded", Accepting: true, Delivering: true, Failing: map[string]string{"spamd": "down"}}},
		{"the resolver down too", nil, down, down, false, 200,
			Readiness{Status: "degraded", Accepting: true, Delivering: false, Failing: map[string]string{"spamd": "down", "dns": "down"}}},
		{"the spool not writable", errors.New("spool not writable"), nil, nil, false, 503,
			Readiness{Status: "not ready", Accepting: false, Delivering: true, Failing: map[string]string{"queue": "spool not writable"}}},
		{"recovered", nil, nil, nil, false, 200, Readiness{Status: "ready", Accepting: true, Delivering: true}},
		{"draining", nil, nil, nil, true, 503, Readiness{Status: "draining"}},
		{"draining ends", nil, nil, nil, false, 200, Readiness{Status: "ready", Accepting: true, Delivering: true}},
	}
	for _, s := range steps {
		queue.set(s.queue)
		dns.set(s.dns)
		filter.set(s.filter)
		h.SetDraining(s.draining)
		code, body := get(t, srv.URL+"/readyz")
		if code != s.code {
			t.Fatalf("%s: /readyz = %d %q, want %d", s.name, code, body, s.code)
		}
		var got Readiness
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("%s: body %q: %v", s.name, body, err)
		}
		if !reflect.DeepEqual(got, s.want) {
			t.Errorf("%s: got %+v, want %+v", s.name, got, s.want)
		}
	}
}

func TestLivezSeparateFromReadiness(t *testing.T) {
	h, srv := newHealth(t)
	h.AddReadiness("queue", CheckerFunc(func(context.Context) error { return errors.New("down") }))
	h.SetDraining(true)
	if code, body := get(t, srv.URL+"/livez"); code != 200 || body != "ok\n" {
		t.Errorf("/livez = %d %q, want 200 ok", code, body)
	}
	h.AddLiveness("loop", CheckerFunc(func(context.Context) error { return errors.New("stuck") }))
	code, body := get(t, srv.URL+"/livez")
	if code != 503 || !strings.Contains(body, `"loop":"stuck"`) {
		t.Errorf("/livez = %d %q, want 503 naming loop", code, body)
	}
}

func TestCheckTimeout(t *testing.T) {
	h, srv := newHealth(t, WithCheckTimeout(100*time.Millisecond))
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	// This check ignores its context: the handler must still answer.
	h.AddReadiness("hung", CheckerFunc(func(context.Context) error { <-release; return nil }))
	start := time.Now()
	code, body := get(t, srv.URL+"/readyz")
	if code != 503 || !strings.Contains(body, "timed out") {
		t.Errorf("/readyz = %d %q, want 503 timed out", code, body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("/readyz took %v with a 100ms check timeout", d)
	}
}

func TestMetricsExposeRegisteredCounter(t *testing.T) {
	h, srv := newHealth(t)
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_test_events_total", Help: "Test events."})
	if err := h.Registerer().Register(c); err != nil {
		t.Fatal(err)
	}
	c.Add(3)
	code, body := get(t, srv.URL+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{"sluice_test_events_total 3", "go_goroutines", "process_"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestWithRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, srv := newHealth(t, WithRegistry(reg))
	if h.Registerer() != prometheus.Registerer(reg) {
		t.Error("Registerer() is not the registry given")
	}
	if _, body := get(t, srv.URL+"/metrics"); strings.Contains(body, "go_goroutines") {
		t.Error("a caller's registry got the default collectors")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, opt := range []Option{WithCheckTimeout(0), WithLogger(nil)} {
		if _, err := New(opt); err == nil || !strings.HasPrefix(err.Error(), "health: ") {
			t.Errorf("New with bad option: err = %v, want a health: error", err)
		}
	}
}

func TestSMTPProbeHealthy(t *testing.T) {
	sink, err := smtptest.NewSink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := SMTPProbe(sink.Addr(), 5*time.Second).Check(ctx); err != nil {
		t.Errorf("probe of a working server: %v", err)
	}
}

func TestSMTPProbeUnhealthy(t *testing.T) {
	tests := []struct {
		name string
		addr string
	}{
		{"accepts but never greets", blackhole.Start(t, "127.0.0.1:0")},
		{"greets but closes before EHLO", scriptedServer(t, "220 half.example ESMTP\r\n")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const timeout = 300 * time.Millisecond
			start := time.Now()
			err := SMTPProbe(tc.addr, timeout).Check(context.Background())
			if err == nil {
				t.Fatal("probe reported healthy")
			}
			if d := time.Since(start); d > timeout+2*time.Second {
				t.Errorf("probe took %v, timeout %v", d, timeout)
			}
		})
	}
}

func TestSMTPProbeRejectsBadGreeting(t *testing.T) {
	addr := scriptedServer(t, "554 5.3.2 not accepting mail\r\n")
	err := SMTPProbe(addr, 5*time.Second).Check(context.Background())
	if err == nil || !strings.Contains(err.Error(), "554") {
		t.Errorf("probe of a 554 greeting: err = %v, want one quoting 554", err)
	}
}

// scriptedServer greets each connection with greeting and closes it.
func scriptedServer(t *testing.T, greeting string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, greeting)
			c.Close()
		}
	})
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().String()
}
