package queue_test

// Enqueue benchmarks: concurrent writers into a fresh spool, no Serve
// running (delivery paused), reporting throughput, acknowledgement latency
// and how many enqueues share one fsync (group commit).
//
// They are benchmarks, not timed tests: `go test ./queue` does not run
// them. Suggested command (each cell enqueues 2000 messages, three runs;
// quote the medians):
//
//	go test -run '^$' -bench BenchmarkEnqueue -benchtime 2000x -count 3 ./queue
//
// Metrics per cell, besides ns/op and MB/s (which count the body only):
//
//	msg/s          acknowledged messages per second, all writers together
//	p50-ms, p99-ms Enqueue call to acknowledgement (durable), per message
//	msgs/fsync     mean of sluice_queue_fsync_batch_size: enqueues made
//	               durable by one shared fsync
//	fsync-µs       mean of sluice_queue_fsync_duration_seconds
//
// Bodies are random base64 (incompressible, like attachments), a different
// window of a pool for each message; each message has one recipient at one
// of 50 domains.
//
// The scale run (1,000,000 messages, RSS, restart time, list latency) is a
// separate program: go run ./bench/queuescale -h.

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

func BenchmarkEnqueue(b *testing.B) {
	for _, size := range []int{4 << 10, 100 << 10} {
		bodies := newBenchBodies(size)
		for _, writers := range []int{1, 8, 32, 128} {
			b.Run(fmt.Sprintf("body=%dKiB/writers=%d", size>>10, writers), func(b *testing.B) {
				benchEnqueue(b, writers, bodies)
			})
		}
	}
}

// benchEnqueue enqueues b.N messages with exactly writers goroutines into
// a fresh queue.
func benchEnqueue(b *testing.B, writers int, bodies *benchBodies) {
	dir, err := os.MkdirTemp(b.TempDir(), "spool")
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	q, err := queue.New(dir, queue.WithRegisterer(reg))
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		// Each call of the benchmark function gets its own spool; remove
		// it now rather than at the end of the sub-benchmark, so the
		// 100 KiB cells do not pile up gigabytes in the temp dir.
		b.StopTimer()
		q.Close()
		os.RemoveAll(dir)
	}()

	ctx := context.Background()
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	b.SetBytes(int64(bodies.size))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N || failed.Load() != nil {
					return
				}
				env, body := benchEnvelope(i), bodies.get(i)
				t0 := time.Now()
				_, err := q.Enqueue(ctx, env, bytes.NewReader(body))
				lat[i] = time.Since(t0)
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if errp := failed.Load(); errp != nil {
		b.Fatalf("enqueue: %v", *errp)
	}

	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msg/s")
	b.ReportMetric(benchMS(benchPercentile(lat, 0.50)), "p50-ms")
	b.ReportMetric(benchMS(benchPercentile(lat, 0.99)), "p99-ms")
	// Gather before Close: closing makes one more (single-caller) sync.
	sum, count := benchHistogram(b, reg, "sluice_queue_fsync_batch_size")
	if count > 0 {
		b.ReportMetric(sum/count, "msgs/fsync")
	}
	if sum, count := benchHistogram(b, reg, "sluice_queue_fsync_duration_seconds"); count > 0 {
		b.ReportMetric(sum/count*1e6, "fsync-µs")
	}
}

// benchEnvelope is message i's envelope: one recipient, at one of 50
// domains, as the scale program uses.
func benchEnvelope(i int) *sluice.Envelope {
	return &sluice.Envelope{
		From:       "sender@example.org",
		Recipients: []sluice.Recipient{{Address: fmt.Sprintf("rcpt-%d@d%d.example.com", i%1000, i%50)}},
		Received:   time.Now(),
	}
}

// benchBodies hands out message bodies of one size: windows at
// different offsets of a pool of random base64 lines, so that no two
// messages share content the store could compress away (as with real
// attachments; a repeated text would make flushes and compactions
// unrealistically cheap).
type benchBodies struct {
	size int
	pool []byte
}

func newBenchBodies(size int) *benchBodies {
	var buf bytes.Buffer
	rng := rand.New(rand.NewPCG(1, 2))
	raw := make([]byte, 57)
	for buf.Len() < 8<<20+size {
		for i := range raw {
			raw[i] = byte(rng.Uint32())
		}
		buf.WriteString(base64.StdEncoding.EncodeToString(raw))
		buf.WriteString("\r\n")
	}
	return &benchBodies{size: size, pool: buf.Bytes()}
}

// get returns message i's body.
func (b *benchBodies) get(i int) []byte {
	off := int(uint64(i) * 0x9E3779B97F4A7C15 % uint64(len(b.pool)-b.size))
	return b.pool[off : off+b.size]
}

// benchPercentile returns the p-quantile of sorted (nearest rank).
func benchPercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func benchMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchHistogram returns the sample sum and count of the histogram name in reg.
func benchHistogram(b *testing.B, reg *prometheus.Registry, name string) (sum, count float64) {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				sum += h.GetSampleSum()
				count += float64(h.GetSampleCount())
			}
		}
	}
	return sum, count
}
