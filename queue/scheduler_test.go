package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
)

// scanCounter is a Store that counts the scans of each lane of the due
// index, the scheduler's costly reads.
type scanCounter struct {
	Store
	mu    sync.Mutex
	scans map[lane]int
}

func newScanCounter(t *testing.T, dir string) *scanCounter {
	t.Helper()
	st := spoolStore(t, dir)
	return &scanCounter{Store: st, scans: make(map[lane]int)}
}

func (s *scanCounter) Scan(lower, upper []byte, fn func(k, v []byte) (bool, error)) error {
	if len(lower) >= 2 && lower[0] == pfxDue {
		s.mu.Lock()
		s.scans[lane(lower[1])]++
		s.mu.Unlock()
	}
	return s.Store.Scan(lower, upper, fn)
}

func (s *scanCounter) count(l lane) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scans[l]
}

// waitForFloor waits until the scheduler has scanned lane l and found
// nothing due in it before at least t.
func waitForFloor(t *testing.T, q *Queue, l lane, atLeast int64) {
	t.Helper()
	waitUntil(t, l.String()+" lane scanned", func() bool { return q.readFloor(l).at >= atLeast })
}

// TestSchedulerDoesNotScanForEachMessage: in a steady stream of mail,
// the scheduler finds each new message through Enqueue's hand-off, not by
// scanning the due index, and leaves alone a retry lane whose mail is not
// due yet. Before, every enqueue and every finished attempt cost a scan of
// the fresh lane and two of the retry lane.
func TestSchedulerDoesNotScanForEachMessage(t *testing.T) {
	dir := t.TempDir()
	sc := newScanCounter(t, dir)
	q := newTestQueue(t, dir, WithStore(sc), WithWorkers(4), WithRetry(time.Hour, 2*time.Hour))
	d := newDeliverer(func(_ *Message, rcpt string) Result {
		if strings.HasSuffix(rcpt, "@later.example") {
			return Result{Outcome: sluice.OutcomeDeferred}
		}
		return Result{Outcome: sluice.OutcomeDelivered}
	})
	serve(t, q, d)
	waitForFloor(t, q, laneFresh, math.MaxInt64)
	enqueue(t, q, "s@example.org", "r@later.example")
	d.waitFor(t, "the deferral", func() bool { return q.Stats().Deferred == 1 })
	waitForFloor(t, q, laneRetry, time.Now().Add(30*time.Minute).UnixNano())

	fresh, retry := sc.count(laneFresh), sc.count(laneRetry)
	const n = 50
	for i := range n {
		enqueue(t, q, "s@example.org", fmt.Sprintf("r%d@example.com", i))
		d.waitFor(t, "the delivery", func() bool { return q.Depth() == 1 })
	}
	if got := sc.count(laneFresh) - fresh; got != 0 {
		t.Errorf("%d scans of the fresh lane for %d messages, want 0", got, n)
	}
	if got := sc.count(laneRetry) - retry; got != 0 {
		t.Errorf("%d scans of the retry lane with nothing due in it, want 0", got)
	}
	if got := len(d.attempts()); got != n+1 {
		t.Errorf("%d attempts, want %d", got, n+1)
	}
}

// blockingDeliverer is a deliverer whose attempts of recipients at
// block.example wait until unblock is closed (all of them), a value is
// sent on it (one of them), or the attempt is cancelled (so a failing
// test does not hang in Close).
type blockingDeliverer struct {
	*deliverer
	entered chan struct{} // a value per blocked attempt
	unblock chan struct{}
}

func newBlockingDeliverer() *blockingDeliverer {
	return &blockingDeliverer{deliverer: newDeliverer(accept),
		entered: make(chan struct{}, 100), unblock: make(chan struct{})}
}

func (d *blockingDeliverer) Deliver(ctx context.Context, msg *Message) []Result {
	if strings.HasSuffix(msg.Envelope.Recipients[0].Address, "@block.example") {
		d.entered <- struct{}{}
		select {
		case <-d.unblock:
		case <-ctx.Done():
		}
	}
	return d.deliverer.Deliver(ctx, msg)
}

// waitEntered waits for an attempt to block.
func (d *blockingDeliverer) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-d.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the blocking attempt")
	}
}

// TestHandedOffMailIsCheckedAgainstTheStore: a message handed from
// Enqueue to the scheduler in memory is started only if the store still
// holds it as it was: one deleted or held in the meantime is not tried,
// and no warning about a stale index entry is logged. A message that no
// longer fits the hand-off (it holds twice the workers) is found by a
// scan instead.
func TestHandedOffMailIsCheckedAgainstTheStore(t *testing.T) {
	var logs bytes.Buffer
	q := newTestQueue(t, t.TempDir(), WithWorkers(1),
		WithLogger(slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))))
	d := newBlockingDeliverer()
	serve(t, q, d)
	waitForFloor(t, q, laneFresh, math.MaxInt64)

	first := enqueue(t, q, "s@example.org", "r@block.example")
	d.waitEntered(t) // the only worker is busy from now on
	deleted := enqueue(t, q, "s@example.org", "r1@example.com")
	held := enqueue(t, q, "s@example.org", "r2@example.com")
	q.laneMu.Lock()
	hinted := len(q.hints)
	q.laneMu.Unlock()
	if hinted != 2 {
		t.Fatalf("%d messages handed off, want 2 (the hand-off holds twice the workers)", hinted)
	}
	scanned := enqueue(t, q, "s@example.org", "r3@example.com")
	if f := q.readFloor(laneFresh).at; f == math.MaxInt64 {
		t.Fatalf("the fresh lane's floor is still at the end of time after a message beyond the hand-off")
	}
	ctx := context.Background()
	if err := q.Delete(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	if err := q.Hold(ctx, held); err != nil {
		t.Fatal(err)
	}
	close(d.unblock)
	d.waitFor(t, "the queue to settle", func() bool { return q.Depth() == 1 && len(d.attempts()) >= 2 })

	var ids []string
	for _, a := range d.attempts() {
		ids = append(ids, a.id)
	}
	if want := []string{first, scanned}; !slices.Equal(ids, want) {
		t.Errorf("attempts %v, want %v (not the deleted %s nor the held %s)", ids, want, deleted, held)
	}
	if st := q.Stats(); st.Held != 1 || st.Pending != 0 {
		t.Errorf("stats %+v, want 1 held and nothing pending", st)
	}
	if strings.Contains(logs.String(), "due index entry without message") {
		t.Errorf("a removed message's hand-off was logged as a stale index entry:\n%s", logs.String())
	}
}

// TestFreshMailIsStartedInArrivalOrder: with the only worker busy, mail
// arriving meanwhile is started in the order it was queued, across the
// hand-off and the scan that picks up what did not fit in it.
func TestFreshMailIsStartedInArrivalOrder(t *testing.T) {
	q := newTestQueue(t, t.TempDir(), WithWorkers(1))
	d := newBlockingDeliverer()
	serve(t, q, d)
	waitForFloor(t, q, laneFresh, math.MaxInt64)

	want := []string{enqueue(t, q, "s@example.org", "r@block.example")}
	d.waitEntered(t)
	for i := range 9 {
		want = append(want, enqueue(t, q, "s@example.org", fmt.Sprintf("r%d@example.com", i)))
	}
	close(d.unblock)
	d.waitFor(t, "every delivery", func() bool { return q.Depth() == 0 })
	var got []string
	for _, a := range d.attempts() {
		got = append(got, a.id)
	}
	if !slices.Equal(got, want) {
		t.Errorf("started in order\n%v\nwant\n%v", got, want)
	}
}

// TestHandedOffMailSurvivesRestart: messages handed off in memory but
// not yet started when the queue closes are delivered after the restart,
// found through the due index like any other.
func TestHandedOffMailSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	q, err := New(dir, WithWorkers(1))
	if err != nil {
		t.Fatal(err)
	}
	d := newBlockingDeliverer()
	errc := make(chan error, 1)
	go func() { errc <- q.Serve(d) }()
	waitForFloor(t, q, laneFresh, math.MaxInt64)
	want := []string{enqueue(t, q, "s@example.org", "r@block.example")}
	d.waitEntered(t)
	for i := range 2 {
		want = append(want, enqueue(t, q, "s@example.org", fmt.Sprintf("r%d@example.com", i)))
	}
	close(d.unblock) // the attempt in flight finishes; the others may not start
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	<-errc

	q2 := newTestQueue(t, dir)
	d2 := newDeliverer(accept)
	serve(t, q2, d2)
	d2.waitFor(t, "every delivery", func() bool { return q2.Depth() == 0 })
	delivered := map[string]bool{}
	for _, a := range append(d.attempts(), d2.attempts()...) {
		delivered[a.id] = true
	}
	for _, id := range want {
		if !delivered[id] {
			t.Errorf("message %s was never delivered", id)
		}
	}
}

// TestStaleHintIsNotStarted: a hint Enqueue made may wait while a scan
// starts the same message (a lowered floor shows the scan its key). Once
// that attempt has delivered the message, or deferred it, the hint is
// stale: starting it must not attempt the message again, though no
// operation ran since it was made.
func TestStaleHintIsNotStarted(t *testing.T) {
	q := newTestQueue(t, t.TempDir(), WithRetry(time.Hour, time.Hour)) // deferred is not due again
	// What Enqueue hands the scheduler, made before Serve can start them.
	hint := func(id string) candidate {
		se, err := q.spool.readEnvelope(id)
		if err != nil {
			t.Fatal(err)
		}
		st, err := q.spool.readState(id, len(se.Env.Recipients))
		if err != nil {
			t.Fatal(err)
		}
		return candidate{key: stateDueKey(id, st), id: id, t: st.Next, se: se, st: st, gen: q.opsGen.Load()}
	}
	delivered := enqueue(t, q, "s@example.org", "r@example.com")
	deferred := enqueue(t, q, "s@example.org", "later@example.com")
	stale := []candidate{hint(delivered), hint(deferred)}
	d := newDeliverer(func(msg *Message, rcpt string) Result {
		if strings.HasPrefix(rcpt, "later@") {
			return Result{Outcome: sluice.OutcomeDeferred, Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 0, 0}, "later")}
		}
		return accept(msg, rcpt)
	})
	serve(t, q, d)
	d.waitFor(t, "an attempt of each", func() bool {
		return len(d.attempts()) == 2 && q.Stats().Deferred == 1 && q.Depth() == 1
	})
	for _, c := range stale {
		if q.start(d, laneFresh, c) {
			t.Errorf("stale hint of %s started", c.id)
		}
	}
	q.Close() // waits for any attempt started
	if n := len(d.attempts()); n != 2 {
		t.Errorf("%d attempts, want 2: a stale hint was attempted again", n)
	}
}

// chunkReadCounter is a Store that counts the reads of body chunks.
type chunkReadCounter struct {
	Store
	reads atomic.Int64
}

func (s *chunkReadCounter) Get(k []byte) ([]byte, error) {
	if len(k) > 0 && k[0] == pfxBody {
		s.reads.Add(1)
	}
	return s.Store.Get(k)
}

// TestSmallBodyIsHandedOffToFirstAttempt: a body of at most handOffMax
// bytes reaches the first attempt from Enqueue, intact, without being read
// back from the store; a larger one is read from the store.
func TestSmallBodyIsHandedOffToFirstAttempt(t *testing.T) {
	dir := t.TempDir()
	st := spoolStore(t, dir)
	rc := &chunkReadCounter{Store: st}
	q := newTestQueue(t, dir, WithStore(rc))
	d := newDeliverer(accept)
	serve(t, q, d)
	waitForFloor(t, q, laneFresh, math.MaxInt64) // so that Enqueue's hint is taken

	for _, c := range []struct {
		size  int
		reads int64
	}{{100, 0}, {handOffMax, 0}, {handOffMax + 1, 1}, {3*chunkSize + 5, 4}} {
		body := bytes.Repeat([]byte("x"), c.size)
		before := rc.reads.Load()
		id, err := q.Enqueue(context.Background(), testEnvelope("r@example.com"), bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		d.waitFor(t, "the delivery", func() bool { return q.Depth() == 0 })
		a := d.attempts()
		if last := a[len(a)-1]; last.id != id || last.err != nil || !bytes.Equal(last.body, body) {
			t.Fatalf("%d bytes: attempt of %s: err %v, %d bytes", c.size, last.id, last.err, len(last.body))
		}
		if got := rc.reads.Load() - before; got != c.reads {
			t.Errorf("%d-byte body: %d chunk reads from the store, want %d", c.size, got, c.reads)
		}
	}
}

// TestDamagedHandOffIsCorrupt: a handed-off chunk is verified like one
// read from the store.
func TestDamagedHandOffIsCorrupt(t *testing.T) {
	id := "06H0BU7564U5DJ4D7S3G"
	k := chunkKey(id, 0)
	payload := []byte("Subject: x\r\n\r\nbody\r\n")
	first := appendRecord(nil, k, kindChunk, payload)
	se := &storedEnvelope{Size: int64(len(payload)), Chunks: 1, BodyCRC: crc32.Checksum(payload, castagnoli)}
	if b, err := io.ReadAll(newBodyReader(nil, id, se, first, nil)); err != nil || !bytes.Equal(b, payload) {
		t.Fatalf("intact hand-off: %q, %v", b, err)
	}
	first[len(first)-2] ^= 1
	if _, err := io.ReadAll(newBodyReader(nil, id, se, first, nil)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("damaged hand-off: err %v, want ErrCorrupt", err)
	}
}
