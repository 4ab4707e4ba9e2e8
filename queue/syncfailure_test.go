package queue

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// syncFailStore is a pebble store whose Sync fails, or panics as
// pebbleStore's does when pebble meets a fatal error (pebbleLogger), while
// the flag is set.
type syncFailStore struct {
	Store
	fail, panics atomic.Bool
}

func (s *syncFailStore) Sync() error {
	if s.panics.Load() {
		panic("queue: store failed: injected fatal sync error")
	}
	if s.fail.Load() {
		return errors.New("injected fsync failure")
	}
	return s.Store.Sync()
}

func newSyncFailQueue(t *testing.T) (*Queue, *syncFailStore) {
	t.Helper()
	dir := t.TempDir()
	st := spoolStore(t, dir)
	fs := &syncFailStore{Store: st}
	return newTestQueue(t, dir, WithStore(fs)), fs
}

// enqueueWithin runs Enqueue and fails the test if it does not return
// within 5s; a panic in it is returned as recovered.
func enqueueWithin(t *testing.T, q *Queue) (id string, err error, recovered any) {
	t.Helper()
	type result struct {
		id  string
		err error
		p   any
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		defer func() { r.p = recover(); ch <- r }()
		r.id, r.err = q.Enqueue(context.Background(), testEnvelope("r@example.com"), strings.NewReader("Subject: x\r\n\r\nx\r\n"))
	}()
	select {
	case r := <-ch:
		return r.id, r.err, r.p
	case <-time.After(5 * time.Second):
		t.Fatal("Enqueue did not return within 5s")
		return "", nil, nil
	}
}

// A sync that panics (pebble's fatal errors do) must leave the group sync
// usable: the panic reaches the caller, who may recover, and the next
// Enqueue runs a sync of its own instead of waiting for ever.
func TestPanickingSyncLeavesGroupSyncUsable(t *testing.T) {
	q, fs := newSyncFailQueue(t)
	fs.panics.Store(true)
	if _, _, p := enqueueWithin(t, q); p == nil {
		t.Fatal("the sync's panic did not reach the caller")
	}
	fs.panics.Store(false)
	if _, err, p := enqueueWithin(t, q); err != nil || p != nil {
		t.Fatalf("Enqueue after a panicked sync: %v, panic %v", err, p)
	}
}

// A failed sync after the message was committed leaves it in the store
// and hinted, to be delivered (Enqueue's doc: a duplicate, never a loss),
// so it stays in the counts: taking it out would hide it from Depth,
// Stats and List{State: StatePending}, and count it out a second time
// when its attempt finishes.
func TestFailedSyncKeepsMessageCounted(t *testing.T) {
	q, fs := newSyncFailQueue(t)
	fs.fail.Store(true)
	if _, err, p := enqueueWithin(t, q); err == nil || p != nil {
		t.Fatalf("Enqueue with a failing sync: error %v, panic %v; want an error", err, p)
	}
	fs.fail.Store(false)
	all, err := q.List(context.Background(), ListOptions{})
	if err != nil || len(all.Messages) != 1 {
		t.Fatalf("List: %d messages, %v; want the committed message", len(all.Messages), err)
	}
	pending, err := q.List(context.Background(), ListOptions{State: StatePending})
	if err != nil || len(pending.Messages) != 1 {
		t.Errorf("List{pending}: %d messages, %v; want 1", len(pending.Messages), err)
	}
	if d, s := q.Depth(), q.Stats(); d != 1 || s.Pending != 1 {
		t.Errorf("Depth %d, Stats.Pending %d; want 1 and 1", d, s.Pending)
	}
}
