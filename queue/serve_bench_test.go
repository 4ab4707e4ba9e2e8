package queue_test

// Serve benchmarks: the scheduler's cost per delivered message, end to
// end through Enqueue, the due index, Serve and a trivial Deliverer that
// reads each body and accepts every recipient.
//
// The figure that matters is cpu-µs/msg: the process's CPU time (user and
// system, from getrusage) per delivered message, which a shared, noisy
// machine distorts less than msg/s. Suggested command (quote medians):
//
//	go test -run '^$' -bench BenchmarkServe -benchtime 5000x -count 5 ./queue
//
// Cells:
//
//	stream  writers enqueue while Serve delivers, as a relay does: every
//	        enqueue and every finished attempt wakes the scheduler
//	drain   the messages are queued before Serve starts; only the
//	        delivery of the backlog is timed
//
// latency is how long the Deliverer holds each message (a remote server's
// answer time): at 0 a worker is free again at once, at 10ms the 64
// workers are mostly busy, so most messages wait for a worker.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

func BenchmarkServe(b *testing.B) {
	bodies := newBenchBodies(4 << 10)
	for _, mode := range []string{"stream", "drain"} {
		for _, latency := range []time.Duration{0, 10 * time.Millisecond} {
			b.Run(fmt.Sprintf("%s/latency=%v", mode, latency), func(b *testing.B) {
				benchServe(b, mode == "stream", latency, bodies)
			})
		}
	}
}

// benchServe delivers b.N messages through a queue with 64 workers, with
// 20 writers (the relay benchmark's sessions) enqueueing them.
func benchServe(b *testing.B, stream bool, latency time.Duration, bodies *benchBodies) {
	const workers, writers = 64, 20
	dir, err := os.MkdirTemp(b.TempDir(), "spool")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	q, err := queue.New(dir, queue.WithWorkers(workers))
	if err != nil {
		b.Fatal(err)
	}
	d := &countingDeliverer{latency: latency, want: int64(b.N), done: make(chan struct{})}
	errc := make(chan error, 1)
	defer func() {
		q.Close()
		if err := <-errc; !errors.Is(err, queue.ErrClosed) {
			b.Errorf("Serve returned %v, want ErrClosed", err)
		}
	}()

	enqueueAll := func() {
		ctx := context.Background()
		var next atomic.Int64
		var wg sync.WaitGroup
		for range writers {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
					if _, err := q.Enqueue(ctx, benchEnvelope(i), bytes.NewReader(bodies.get(i))); err != nil {
						b.Errorf("enqueue: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	if !stream {
		enqueueAll()
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, start := benchCPU(b), time.Now()
	go func() { errc <- q.Serve(d) }()
	if stream {
		enqueueAll()
	}
	select {
	case <-d.done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("delivered %d of %d messages in 5 minutes", d.n.Load(), b.N)
	}
	// The last attempts record their outcome just after Deliver returns.
	for deadline := time.Now().Add(time.Minute); q.Depth() > 0; time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			b.Fatalf("queue depth %d a minute after the last delivery", q.Depth())
		}
	}
	elapsed, cpu := time.Since(start), benchCPU(b)-cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msg/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
}

// countingDeliverer reads each body, holds the message for latency, and
// accepts every recipient; done is closed at the want'th delivery.
type countingDeliverer struct {
	latency time.Duration
	want    int64
	n       atomic.Int64
	done    chan struct{}
}

func (d *countingDeliverer) Deliver(ctx context.Context, msg *queue.Message) []queue.Result {
	res := make([]queue.Result, len(msg.Envelope.Recipients))
	rc, err := msg.Open()
	if err == nil {
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
	}
	if err != nil {
		return res // deferred: tried again
	}
	if d.latency > 0 {
		time.Sleep(d.latency) // the remote server's answer time
	}
	for i := range res {
		res[i] = queue.Result{Outcome: sluice.OutcomeDelivered}
	}
	if d.n.Add(1) == d.want {
		close(d.done)
	}
	return res
}

// benchCPU returns the user and system CPU time of the process so far.
func benchCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
