package queue

import (
	"context"
	"testing"
	"time"
)

func withPaceStall(d time.Duration) Option { return func(c *config) { c.paceStall = d } }

// pace runs q.Pace in a goroutine; the channel yields what it returned.
func pace(ctx context.Context, q *Queue, max time.Duration) <-chan time.Duration {
	done := make(chan time.Duration, 1)
	go func() { done <- q.Pace(ctx, max) }()
	return done
}

// waitPacing waits until a Pace call is waiting for the backlog.
func waitPacing(t *testing.T, q *Queue, d *blockingDeliverer) {
	t.Helper()
	d.waitFor(t, "Pace to wait", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.paced != nil
	})
}

// busyQueue returns a serving queue of one worker with the given pace
// backlog and stall window, whose first attempt has finished (delivery is
// busy, not stalled), with an attempt in flight and waiting messages
// waiting for a first attempt.
func busyQueue(t *testing.T, backlog int, stall time.Duration, waiting int) (*Queue, *blockingDeliverer) {
	t.Helper()
	q := newTestQueue(t, t.TempDir(), WithWorkers(1), WithPaceBacklog(backlog), withPaceStall(stall))
	d := newBlockingDeliverer()
	serve(t, q, d)
	enqueue(t, q, "s@example.org", "r0@block.example")
	d.waitEntered(t) // the only worker is busy from now on
	for range waiting + 1 {
		enqueue(t, q, "s@example.org", "r@block.example")
	}
	d.unblock <- struct{}{} // the first attempt finishes
	d.waitEntered(t)        // the next starts
	return q, d
}

// TestPaceWaitsForTheBacklogToDrain: while more messages than the pace
// backlog wait for their first attempt and attempts finish, Pace waits; it
// returns when attempts starting have brought the backlog back to the
// limit, not before.
func TestPaceWaitsForTheBacklogToDrain(t *testing.T) {
	q, d := busyQueue(t, 2, time.Hour, 4)
	done := pace(context.Background(), q, time.Hour)
	waitPacing(t, q, d)

	d.unblock <- struct{}{}
	d.waitEntered(t) // 3 left waiting, above the limit of 2
	select {
	case waited := <-done:
		t.Fatalf("Pace returned after %v with %d messages waiting, above the backlog of 2", waited, q.Stats().Pending)
	default:
	}
	d.unblock <- struct{}{}
	d.waitEntered(t) // 2 left waiting: within the limit
	select {
	case waited := <-done:
		if waited <= 0 {
			t.Errorf("Pace reported waiting %v, want a positive wait", waited)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Pace still waits with the backlog back within its limit")
	}
	if n := q.Stats().Pending; n != 2 {
		t.Errorf("%d messages pending after Pace returned, want 2", n)
	}
	for range 3 {
		d.unblock <- struct{}{}
	}
}

// TestPaceDoesNotWaitForStalledDelivery: when no attempt finishes for
// the stall window (every worker held by a next hop that does not answer),
// Pace stops waiting long before its maximum, and a later call does not
// wait at all; nor does a call before any attempt has finished.
func TestPaceDoesNotWaitForStalledDelivery(t *testing.T) {
	q := newTestQueue(t, t.TempDir(), WithWorkers(1), WithPaceBacklog(1), withPaceStall(50*time.Millisecond))
	d := newBlockingDeliverer()
	serve(t, q, d)
	enqueue(t, q, "s@example.org", "r0@block.example")
	d.waitEntered(t)
	for range 4 {
		enqueue(t, q, "s@example.org", "r@block.example")
	}
	if waited := q.Pace(context.Background(), time.Hour); waited != 0 {
		t.Errorf("Pace waited %v before any attempt finished, want no wait", waited)
	}
	d.unblock <- struct{}{} // one attempt finishes; nothing else will
	d.waitEntered(t)
	select {
	case waited := <-pace(context.Background(), q, time.Hour):
		if waited >= time.Hour {
			t.Errorf("Pace waited its whole maximum (%v) for a stalled delivery", waited)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Pace still waits for a delivery that has not finished an attempt for 10 s")
	}
	if waited := q.Pace(context.Background(), time.Hour); waited != 0 {
		t.Errorf("Pace waited %v with delivery stalled, want no wait", waited)
	}
}

// TestPaceWithoutDelivery: a queue that is not delivering (no Serve) is
// not paced, however large its backlog.
func TestPaceWithoutDelivery(t *testing.T) {
	q := newTestQueue(t, t.TempDir(), WithWorkers(1), WithPaceBacklog(1), withPaceStall(time.Hour))
	for range 5 {
		enqueue(t, q, "s@example.org", "r@block.example")
	}
	if waited := q.Pace(context.Background(), time.Hour); waited != 0 {
		t.Errorf("Pace waited %v without a Serve, want no wait", waited)
	}
}

// TestPaceEnds: a waiting Pace returns when its context is done, when its
// maximum has passed and when the queue closes.
func TestPaceEnds(t *testing.T) {
	q, d := busyQueue(t, 1, time.Hour, 3)
	returns := func(what string, done <-chan time.Duration) {
		t.Helper()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("Pace still waits after %s", what)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := pace(ctx, q, time.Hour)
	waitPacing(t, q, d)
	cancel()
	returns("its context was cancelled", done)

	returns("its maximum", pace(context.Background(), q, 20*time.Millisecond))

	done = pace(context.Background(), q, time.Hour)
	waitPacing(t, q, d)
	q.Close()
	returns("the queue closed", done)
}
