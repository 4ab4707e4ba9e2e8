package smtp_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice/smtp"
)

// serve runs s on a new listener and returns its address and Serve's
// result; the caller stops s.
func serve(t *testing.T, s *smtp.Server) (string, <-chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	return l.Addr().String(), done
}

func newServer(t *testing.T, q smtp.Enqueuer, opts ...smtp.Option) *smtp.Server {
	t.Helper()
	s, err := smtp.New(q, append([]smtp.Option{smtp.WithHostname("mx.test")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func wantServed(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, smtp.ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestShutdownLetsTransactionFinish(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	q := &recorder{hook: func(ctx context.Context) { close(entered); <-release }}
	s := newServer(t, q)
	addr, done := serve(t, s)

	busy := dial(t, addr)
	busy.run(append(hello, transaction...))
	busy.send("Subject: hi\r\n\r\nhello\r\n.")
	<-entered

	idle := dial(t, addr)
	idle.run(hello)

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	// The idle client is sent away at once; the busy one is not.
	idle.expect("421 ")
	idle.expectClosed()
	wantServed(t, done)
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("dial after Shutdown succeeded")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a transaction in progress", err)
	default:
	}

	close(release)
	busy.expect("250 2.0.0 queued as ID1")
	busy.expect("421 ")
	busy.expectClosed()
	if err := <-shut; err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
}

func TestShutdownBoundedByContext(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	entered := make(chan struct{})
	q := &recorder{hook: func(ctx context.Context) {
		close(entered)
		select { // a queue that only gives up when told to
		case <-ctx.Done():
		case <-release:
		}
	}}
	s := newServer(t, q)
	addr, done := serve(t, s)
	c := dial(t, addr)
	c.run(append(hello, transaction...))
	c.send("Subject: hi\r\n\r\nhello\r\n.")
	<-entered

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Shutdown took %v, want about 100ms", elapsed)
	}
	wantServed(t, done)
	c.expectClosed()
	if msgs := q.messages(); len(msgs) != 0 {
		t.Errorf("%d messages queued after a forced close, want 0", len(msgs))
	}
}

func TestCloseIsIdempotentAndServeAfterClose(t *testing.T) {
	s := newServer(t, &recorder{})
	addr, done := serve(t, s)
	c := dial(t, addr)
	c.run(hello)
	if err := s.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	wantServed(t, done)
	c.expectClosed()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(l); !errors.Is(err, smtp.ErrServerClosed) {
		t.Errorf("Serve after Close = %v, want ErrServerClosed", err)
	}
	if err := s.ListenAndServe("127.0.0.1:0"); !errors.Is(err, smtp.ErrServerClosed) {
		t.Errorf("ListenAndServe after Close = %v, want ErrServerClosed", err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after Close = %v", err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	for range 3 {
		s, err := smtp.New(&recorder{}, smtp.WithHostname("mx.test"))
		if err != nil {
			t.Fatal(err)
		}
		addr, done := serve(t, s)
		for range 3 {
			c := dial(t, addr)
			c.run(append(hello, transaction...))
			c.run([]step{{"Subject: hi\r\n\r\nhello\r\n.", "250 2.0.0"}})
		}
		idle := dial(t, addr) // left open: Shutdown must close it
		idle.run(hello)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		cancel()
		wantServed(t, done)
		idle.nc.Close()
	}
	waitFor(t, "goroutines to return to the baseline", func() bool { return runtime.NumGoroutine() <= base })
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, addr := startServer(t, &recorder{}, smtp.WithRegisterer(reg), untrusted, smtp.WithLocalDomains("example.net"))
	c := dial(t, addr)
	c.run(append(hello, transaction...))
	c.run([]step{{"Subject: hi\r\n\r\nhello\r\n.", "250 2.0.0"}})

	if got := counter(t, reg, "sluice_smtp_connections_total", ""); got != 1 {
		t.Errorf("connections_total = %v, want 1", got)
	}
	if got := counter(t, reg, "sluice_smtp_sessions", ""); got != 1 {
		t.Errorf("sessions = %v, want 1", got)
	}
	if got := counter(t, reg, "sluice_smtp_messages_total", "queued"); got != 1 {
		t.Errorf(`messages_total{result="queued"} = %v, want 1`, got)
	}
	c.run([]step{{"QUIT", "221"}})
	c.expectClosed()
	waitFor(t, "sessions to drop to 0", func() bool { return counter(t, reg, "sluice_smtp_sessions", "") == 0 })

	// A second server on the same registry is a configuration error.
	if _, err := smtp.New(&recorder{}, smtp.WithRegisterer(reg)); err == nil || !strings.Contains(err.Error(), "register metrics") {
		t.Errorf("New with a used registry = %v, want a register error", err)
	}
}

// counter reads a metric from reg; label is the result label, if any.
func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	t.Fatalf("metric %s{%s} not found", name, label)
	return 0
}
