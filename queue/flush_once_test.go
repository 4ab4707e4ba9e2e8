package queue

import (
	"context"
	"testing"
	"time"
)

// deferredSpool leaves n deferred messages in a spool at dir.
func deferredSpool(t *testing.T, dir string, n int) {
	t.Helper()
	q := newTestQueue(t, dir) // retries 10ms..40ms
	d := newDeliverer(deferUntil(nil))
	for range n {
		enqueue(t, q, "s@example.org", "r@example.com")
	}
	errc := make(chan error, 1)
	go func() { errc <- q.Serve(d) }()
	d.waitFor(t, "the deferrals", func() bool { return q.Stats().Deferred == n })
	q.Close()
	<-errc
}

// Flush moves each overdue retry once and counts it once. The messages it
// moves land ahead of its scan, which goes on past them: it found them
// again and moved them again, counting each time, and with no spread it
// never ended (holding off Shutdown and Close).
func TestFlushMovesEachMessageOnce(t *testing.T) {
	for _, spread := range []time.Duration{0, time.Minute} {
		t.Run(spread.String(), func(t *testing.T) {
			dir := t.TempDir()
			deferredSpool(t, dir, 3)
			later := time.Now().Add(time.Hour) // every retry is overdue by then
			q := newTestQueue(t, dir, WithRestartSpread(spread), WithClock(func() time.Time { return later }))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if n, err := q.Flush(ctx); err != nil || n != 3 {
				t.Fatalf("Flush = %d, %v; want 3, nil", n, err)
			}
			if n, err := q.Flush(ctx); err != nil || n != 0 {
				t.Errorf("a second Flush = %d, %v; want 0 (all due within the spread already)", n, err)
			}
		})
	}
}
