package delivery_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/delivery/dnstest"
	"github.com/sluicemta/sluice/internal/blackhole"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

// BenchmarkBlackholedMX measures the throughput to a domain with two MX
// hosts of equal preference: "healthy" with both hosts up, "blackholed"
// with one that accepts TCP connections and never says a word. Each
// sub-benchmark reports msg/s; the parent logs their ratio. Seed 001: a
// hung host must cost a deadline once, then be skipped by every
// destination that uses it, so the ratio should stay at or above 0.8.
// Each run starts from a cold agent (no dead-host memory, no cached
// connections), so the black hole's first greeting timeouts (200ms, as an
// operator would set for such a network) are part of the measured time.
func BenchmarkBlackholedMX(b *testing.B) {
	var healthy, holed float64
	b.Run("healthy", func(b *testing.B) { healthy = benchRun(b, false) })
	b.Run("blackholed", func(b *testing.B) { holed = benchRun(b, true) })
	if healthy > 0 {
		b.Logf("blackholed/healthy throughput ratio: %.2f (%.0f / %.0f msg/s)", holed/healthy, holed, healthy)
	}
}

// benchRun delivers b.N messages with 8 workers and returns messages per
// second.
func benchRun(b *testing.B, holed bool) float64 {
	b.Helper()
	b.StopTimer()
	sinks := make([]*smtptest.Sink, 2)
	for i := range sinks {
		s, err := smtptest.NewSink()
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		sinks[i] = s
	}
	second := sinks[1].Addr()
	if holed {
		second = blackhole.Start(b, "127.0.0.1:0")
	}
	srv, err := dnstest.NewServer(
		"bench.test. 60 IN MX 10 a.bench.test.",
		"bench.test. 60 IN MX 10 b.bench.test.",
		"a.bench.test. 60 IN A 192.0.2.1",
		"b.bench.test. 60 IN A 192.0.2.2",
	)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	d := &dialer{redirect: map[string]string{"192.0.2.1:25": sinks[0].Addr(), "192.0.2.2:25": second}}
	a, err := delivery.New(discardDSN{},
		delivery.WithHostname("bench.test"),
		delivery.WithResolvers(srv.Addr()),
		delivery.WithDialer(d.dial),
		delivery.WithTimeouts(delivery.Timeouts{Connect: 200 * time.Millisecond, Greeting: 200 * time.Millisecond}),
		delivery.WithShaping(delivery.Shaping{Concurrency: 8, InitialConcurrency: 8}),
		delivery.WithLogger(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()

	const workers = 8
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	body := "Subject: bench\r\n\r\nhello\r\n"
	b.StartTimer()
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				msg := newMessage(body, "a@x.test", "b@bench.test")
				if r := a.Deliver(ctx, msg)[0]; r.Outcome != sluice.OutcomeDelivered {
					failed.Add(1)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d messages not delivered", n, b.N)
	}
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "msg/s")
	return rate
}
