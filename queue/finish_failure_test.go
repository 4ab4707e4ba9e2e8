package queue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/sluicemta/sluice"
)

// commitFailStore fails the next batch commit once armed.
type commitFailStore struct {
	Store
	arm atomic.Bool
}

type commitFailBatch struct {
	Batch
	s *commitFailStore
}

func (s *commitFailStore) NewBatch() Batch { return &commitFailBatch{s.Store.NewBatch(), s} }

func (b *commitFailBatch) Commit() error {
	if b.s.arm.CompareAndSwap(true, false) {
		b.Batch.Discard()
		return errors.New("injected commit failure")
	}
	return b.Batch.Commit()
}

// A write that fails at the end of an attempt leaves the message stored as
// it was, to be tried again; the counts must say so too, or they go
// negative once the retry removes it, for good.
func TestFailedWriteAfterAttemptKeepsCountsExact(t *testing.T) {
	dir := t.TempDir()
	st := spoolStore(t, dir)
	fs := &commitFailStore{Store: st}
	q := newTestQueue(t, dir, WithStore(fs))
	var n atomic.Int32
	d := newDeliverer(func(*Message, string) Result {
		if n.Add(1) == 1 {
			fs.arm.Store(true) // the write that removes the delivered message fails
		}
		return Result{Outcome: sluice.OutcomeDelivered}
	})
	enqueue(t, q, "s@example.org", "r@example.com")
	serve(t, q, d)
	d.waitFor(t, "the message gone after its second attempt", func() bool {
		p, err := q.List(context.Background(), ListOptions{})
		return len(d.attempts()) == 2 && err == nil && len(p.Messages) == 0 && q.Stats().InFlight == 0
	})
	if s := q.Stats(); q.Depth() != 0 || s.Pending != 0 || s.Deferred != 0 || len(s.Domains) != 0 {
		t.Errorf("an empty queue counted as Depth %d, Stats %+v", q.Depth(), s)
	}
}
