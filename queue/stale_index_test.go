package queue

import (
	"context"
	"testing"
)

// A due index entry whose message is gone (a store is allowed to be
// imperfect) is deleted when its turn comes, and uncounted: the census
// counted it, and Depth and Stats stayed one too high for good.
func TestStaleIndexEntryIsUncounted(t *testing.T) {
	dir := t.TempDir()
	q := newTestQueue(t, dir)
	id := enqueue(t, q, "s@example.org", "r@example.com")
	q.Close()
	st := spoolStore(t, dir)
	b := st.NewBatch()
	b.Delete(envKey(id))
	b.Delete(stateKey(id))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(); err != nil {
		t.Fatal(err)
	}
	st.Close()

	q = newTestQueue(t, dir)
	if d := q.Depth(); d != 1 {
		t.Fatalf("the census counts %d, want the stale entry's 1", d)
	}
	d := newDeliverer(accept)
	serve(t, q, d)
	d.waitFor(t, "the stale entry uncounted", func() bool { return q.Depth() == 0 })
	if s := q.Stats(); s.Pending != 0 || len(s.Domains) != 0 || len(d.attempts()) != 0 {
		t.Errorf("Stats %+v, %d attempts; want an empty queue and none", s, len(d.attempts()))
	}
	p, err := q.List(context.Background(), ListOptions{})
	if err != nil || len(p.Messages) != 0 {
		t.Errorf("List: %d messages, %v", len(p.Messages), err)
	}
}
