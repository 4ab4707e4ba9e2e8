package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/sluicemta/sluice"
)

// State is where a message, or one of its recipients, stands in the queue.
type State string

// States. Delivered and bounced apply to recipients only: a message whose
// recipients are all delivered or bounced leaves the queue.
const (
	StatePending   State = "pending"   // waiting for its first attempt
	StateDeferred  State = "deferred"  // tried, waiting for a retry
	StateHeld      State = "held"      // held by the operator; not tried until released
	StateInFlight  State = "in-flight" // being attempted now
	StateDelivered State = "delivered"
	StateBounced   State = "bounced"
)

// Stats is a snapshot of the queue's census.
type Stats struct {
	Pending, Deferred, Held, InFlight int
	// Domains are the recipient domains with the most messages, deepest
	// first (as many as WithDomainMetrics); a message with recipients at
	// two domains counts at both.
	Domains []DomainStats
	// OtherDomains is the message count of the domains not listed.
	OtherDomains int
}

// DomainStats is the queue's depth at one recipient domain.
type DomainStats struct {
	Domain   string
	Messages int
	Oldest   time.Time // when the oldest of them was received
}

// Stats returns the queue's census: messages by state and by recipient
// domain. It reads counts kept in memory and one index key per listed
// domain, so it is cheap at any depth.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	st := Stats{
		Pending: q.count.lanes[laneFresh], Deferred: q.count.lanes[laneRetry], Held: q.count.lanes[laneHeld],
		InFlight: q.count.inflight[laneFresh] + q.count.inflight[laneRetry],
	}
	st.Domains, st.OtherDomains = topDomains(q.count.domains, q.cfg.topDomains)
	q.mu.Unlock()
	if q.begin() != nil {
		return st
	}
	defer q.calls.Done()
	for i := range st.Domains {
		lo, hi := domainRange(st.Domains[i].Domain)
		q.spool.store.Scan(lo, hi, func(k, _ []byte) (bool, error) {
			if _, id, ok := parseDomainKey(k); ok {
				st.Domains[i].Oldest = idTime(id)
			}
			return false, nil
		})
	}
	return st
}

// Oldest returns when the oldest queued message was received, or the zero
// time if the queue is empty. It is cheap enough for a health check: ids
// grow with time, so it reads the first envelope key at or after the
// oldest one it saw before (deleted keys below it are never walked again).
func (q *Queue) Oldest() time.Time {
	if q.begin() != nil {
		return time.Time{}
	}
	defer q.calls.Done()
	q.mu.Lock()
	floor := q.oldestFloor
	q.mu.Unlock()
	var oldest string
	q.spool.store.Scan(envKey(floor), []byte{pfxEnvelope + 1}, func(k, _ []byte) (bool, error) {
		oldest = string(k[1:])
		return false, nil
	})
	if oldest == "" {
		return time.Time{}
	}
	q.mu.Lock()
	q.oldestFloor = max(q.oldestFloor, oldest)
	q.mu.Unlock()
	return idTime(oldest)
}

// ListOptions selects and pages the messages [Queue.List] returns. The
// zero value lists the first page of every message, oldest first.
type ListOptions struct {
	// Domain keeps messages with a recipient at this domain.
	Domain string
	// Sender keeps messages from this address (case-insensitive); "<>"
	// keeps notifications (the null sender).
	Sender string
	// State keeps messages in this state (pending, deferred, held or
	// in-flight).
	State State
	// OlderThan and NewerThan keep messages received at least, or less
	// than, this long ago. Zero means no bound.
	OlderThan, NewerThan time.Duration
	// After continues a listing: pass the previous page's Next.
	After string
	// Limit is the most messages in a page. Default: 100; at most 10,000.
	Limit int
}

// Summary is one message in a listing.
type Summary struct {
	ID         string
	From       string
	Recipients int // recipients of the message
	Undone     int // recipients neither delivered nor bounced
	Size       int64
	Received   time.Time
	State      State
	Attempts   int
	Next       time.Time // next attempt; zero if held or in flight
	LastReply  string    // the last reply of a recipient not done
}

// Page is one page of a listing.
type Page struct {
	Messages []Summary
	// Next is the cursor for the following page (ListOptions.After), or
	// empty when the listing is complete.
	Next string
	// Damaged counts records skipped because they failed their checksum;
	// the scheduler quarantines them when they come due.
	Damaged int
}

// listScanBudget bounds the records one List call looks at, so a selective
// filter over a deep queue returns a short page with a cursor rather than
// blocking for long.
const listScanBudget = 50_000

// List returns a page of queued messages, oldest first, that match o. It
// reads the store, not memory, so it works on a queue that is not serving,
// for example from a command-line tool while the daemon is stopped.
func (q *Queue) List(ctx context.Context, o ListOptions) (*Page, error) {
	if o.Limit <= 0 {
		o.Limit = 100
	}
	if o.Limit > 10_000 {
		return nil, fmt.Errorf("queue: list limit %d: at most 10000", o.Limit)
	}
	switch o.State {
	case "", StatePending, StateDeferred, StateHeld, StateInFlight:
	default:
		return nil, fmt.Errorf("queue: list state %q: want pending, deferred, held or in-flight", o.State)
	}
	if o.After != "" && !validID(o.After) {
		return nil, fmt.Errorf("queue: list cursor %q is not a queue id", o.After)
	}
	if err := q.begin(); err != nil {
		return nil, err
	}
	defer q.calls.Done()
	if o.State != "" && q.stateCount(o.State) == 0 {
		return &Page{}, nil // nothing to find: do not scan a deep queue for it
	}
	now := q.cfg.now()
	lowID, highID := "", ""
	if o.NewerThan > 0 {
		lowID = idFloor(now.Add(-o.NewerThan))
	}
	if o.OlderThan > 0 {
		highID = idFloor(now.Add(-o.OlderThan))
	}
	if o.After != "" && o.After >= lowID {
		lowID = o.After + "\x00"
	}
	keyOf := envKey
	lower, upper := []byte{pfxEnvelope}, []byte{pfxEnvelope + 1}
	if o.Domain != "" {
		d := strings.ToLower(o.Domain)
		keyOf = func(id string) []byte { return domainKey(d, id) }
		lower, upper = domainRange(d)
	}
	if lowID != "" {
		lower = keyOf(lowID)
	}
	if highID != "" {
		upper = keyOf(highID)
	}
	page := &Page{}
	budget := listScanBudget
	var inflight map[string]*entry
	err := q.spool.store.Scan(lower, upper, func(k, _ []byte) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		id := string(k[len(k)-idLen:])
		if (listScanBudget-budget)%listInflightEvery == 0 {
			inflight = q.inflightSnapshot(inflight)
		}
		budget--
		sum, err := q.summaryOf(id, inflight[id])
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			page.Damaged++
		case o.matches(sum):
			page.Messages = append(page.Messages, *sum)
		}
		if len(page.Messages) == o.Limit || budget == 0 {
			page.Next = id
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return page, nil
}

// stateCount returns how many messages are in state st, from the census.
func (q *Queue) stateCount(st State) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch st {
	case StatePending:
		return q.count.lanes[laneFresh]
	case StateDeferred:
		return q.count.lanes[laneRetry]
	case StateHeld:
		return q.count.lanes[laneHeld]
	case StateInFlight:
		return q.count.inflight[laneFresh] + q.count.inflight[laneRetry]
	}
	return 0
}

func (o *ListOptions) matches(s *Summary) bool {
	if o.State != "" && s.State != o.State {
		return false
	}
	if o.Sender != "" {
		from := s.From
		if from == "" {
			from = "<>"
		}
		if !strings.EqualFold(from, o.Sender) {
			return false
		}
	}
	return true
}

// listInflightEvery is how many messages List reads between two looks at
// the messages in flight. It takes q.mu once per look, not once per
// message: q.mu is taken for every attempt started and ended, and while
// the queue drained at full speed a List that waited for it once per
// message spent most of its time waiting (bench/queuescale, 10,000
// messages: 1.9 s, of which 0.37 s of List's own CPU time and 1.3 s
// blocked on q.mu).
const listInflightEvery = 256

// inflightSnapshot returns the messages in flight now (at most
// WithWorkers) in m, cleared, or in a new map if m is nil.
func (q *Queue) inflightSnapshot(m map[string]*entry) map[string]*entry {
	q.mu.Lock()
	defer q.mu.Unlock()
	if m == nil {
		m = make(map[string]*entry, len(q.inflight))
	}
	clear(m)
	for id, e := range q.inflight {
		m[id] = e
	}
	return m
}

// summaryOf summarises message id: from e if it is not nil (the message
// was in flight when List last looked), else from the stored records.
// Either may be a little behind an attempt that started or ended since,
// as a listing of a queue that is draining always is.
func (q *Queue) summaryOf(id string, e *entry) (*Summary, error) {
	if e != nil {
		return summarize(id, e.se, e.st, true), nil
	}
	se, err := q.spool.readEnvelope(id)
	if err != nil {
		return nil, err
	}
	st, err := q.spool.readState(id, len(se.Env.Recipients))
	if err != nil {
		return nil, err
	}
	return summarize(id, se, st, false), nil
}

func summarize(id string, se *storedEnvelope, st *msgState, inflight bool) *Summary {
	s := &Summary{ID: id, From: se.Env.From, Recipients: len(se.Env.Recipients), Size: se.Size,
		Received: se.Env.Received, Attempts: st.Attempts, State: messageState(st, inflight)}
	for i, r := range st.Rcpts {
		if !st.final(i) {
			s.Undone++
			if r.Reply != "" {
				s.LastReply = r.Reply
			}
		}
	}
	if s.State == StatePending || s.State == StateDeferred {
		s.Next = time.Unix(0, st.Next)
	}
	return s
}

// read returns message id's envelope and state, the in-flight copy if it
// is being attempted.
func (q *Queue) read(id string) (*storedEnvelope, *msgState, bool, error) {
	q.mu.Lock()
	e := q.inflight[id]
	q.mu.Unlock()
	if e != nil {
		return e.se, e.st, true, nil
	}
	se, err := q.spool.readEnvelope(id)
	if err != nil {
		return nil, nil, false, err
	}
	st, err := q.spool.readState(id, len(se.Env.Recipients))
	return se, st, false, err
}

func messageState(st *msgState, inflight bool) State {
	switch {
	case inflight:
		return StateInFlight
	case st.Held:
		return StateHeld
	case st.Attempts == 0:
		return StatePending
	}
	return StateDeferred
}

// Info is everything the queue knows about one message.
type Info struct {
	Summary
	Envelope   *sluice.Envelope
	LastTry    time.Time // zero before the first attempt
	Recipients []RecipientInfo
}

// RecipientInfo is the delivery state of one recipient.
type RecipientInfo struct {
	Address   string
	State     State
	Attempts  int
	LastReply string
	// Warned is set once the sender was told that delivery is delayed.
	Warned bool
}

// Show returns message id in full: envelope, per-recipient state, attempts,
// last replies and next attempt. It returns an error wrapping ErrNotFound
// if the message is not queued.
func (q *Queue) Show(ctx context.Context, id string) (*Info, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%w: %q is not a queue id", ErrNotFound, id)
	}
	if err := q.begin(); err != nil {
		return nil, err
	}
	defer q.calls.Done()
	se, st, inflight, err := q.read(id)
	if err != nil {
		return nil, err
	}
	info := &Info{Summary: *summarize(id, se, st, inflight), Envelope: se.Env.Clone()}
	if st.Last != 0 {
		info.LastTry = time.Unix(0, st.Last)
	}
	msgState := info.State
	for i, r := range se.Env.Recipients {
		rs := st.Rcpts[i]
		ri := RecipientInfo{Address: r.Address, Attempts: rs.Attempts, LastReply: rs.Reply, Warned: rs.Warned}
		switch {
		case rs.Status == stateDelivered:
			ri.State = StateDelivered
		case rs.Status == stateBounced:
			ri.State = StateBounced
		case msgState == StateInFlight || msgState == StateHeld:
			ri.State = msgState
		case rs.Status == statePending:
			ri.State = StatePending
		default:
			ri.State = StateDeferred
		}
		info.Recipients = append(info.Recipients, ri)
	}
	return info, nil
}

// Hold stops message id from being tried until [Queue.Release]. A message
// in flight is held when its attempt ends.
func (q *Queue) Hold(ctx context.Context, id string) error {
	return q.operate(id, false,
		func(st *msgState, now int64) bool { st.Held = true; return false })
}

// Release makes a held message due now.
func (q *Queue) Release(ctx context.Context, id string) error {
	return q.operate(id, false,
		func(st *msgState, now int64) bool {
			if st.Held {
				st.Held, st.Released, st.Next = false, true, now
			}
			return false
		})
}

// Delete removes message id from the queue without notifying anyone. A
// message in flight has its attempt cancelled and is removed when the
// attempt returns (a recipient the next hop had already accepted is
// delivered all the same).
func (q *Queue) Delete(ctx context.Context, id string) error {
	return q.operate(id, true,
		func(*msgState, int64) bool { return true })
}

// Requeue makes message id due now, releasing it if held. Routes are
// never stored, so the attempt looks its route up afresh (seed 004).
func (q *Queue) Requeue(ctx context.Context, id string) error {
	return q.operate(id, false,
		func(st *msgState, now int64) bool {
			st.Released = st.Released || st.Held
			st.Held, st.Next = false, now
			return false
		})
}

// Bounce returns every undelivered recipient of message id to its sender
// now (status 5.0.0, "delivery cancelled by the postmaster"), through the
// Deliverer's Bouncer at the next attempt, which is made due at once. On a
// queue that is not serving, the bounce happens when Serve next runs.
func (q *Queue) Bounce(ctx context.Context, id string) error {
	return q.operate(id, false,
		func(st *msgState, now int64) bool { st.Held, st.Bounce, st.Next = false, true, now; return false })
}

// operate applies an operation to message id: change to its stored state
// (reporting whether to remove it instead), or, if it is in flight, the
// same change when its attempt ends, after the ones asked for before it;
// remove (Delete) cancels the attempt too. The change is durable when
// operate returns.
func (q *Queue) operate(id string, remove bool, change stateChange) error {
	if !validID(id) {
		return fmt.Errorf("%w: %q is not a queue id", ErrNotFound, id)
	}
	if err := q.begin(); err != nil {
		return err
	}
	defer q.calls.Done()
	if err := q.operateLocked(id, remove, change); err != nil {
		return err
	}
	q.poke()
	return q.spool.gsync.wait()
}

func (q *Queue) operateLocked(id string, remove bool, change stateChange) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	defer q.opsGen.Add(1) // after the write, before the unlock (see Queue.start)
	if e := q.inflight[id]; e != nil {
		e.ops.changes = append(e.ops.changes, change)
		if remove {
			e.ops.remove = true
			e.cancel()
		}
		return nil
	}
	se, err := q.spool.readEnvelope(id)
	if err != nil {
		return err
	}
	st, err := q.spool.readState(id, len(se.Env.Recipients))
	if err != nil {
		return err
	}
	oldDue, oldLane := stateDueKey(id, st), st.lane()
	domains := recipientDomains(se.Env)
	if change(st, q.cfg.now().UnixNano()) {
		if err := q.spool.remove(id, se.bodyChunks(), oldDue, domains); err != nil {
			return err
		}
		q.count.lanes[oldLane]--
		q.count.addDomains(domains, -1)
		return nil
	}
	if err := q.spool.putState(id, oldDue, st, domains); err != nil {
		return err
	}
	q.count.lanes[oldLane]--
	q.count.lanes[st.lane()]++
	return nil
}

// Flush makes every deferred message due now, each at a random point in
// the WithRestartSpread window so the retries do not all start at once,
// and returns how many it moved; one already due within that window stays
// where it is. Held messages stay held.
func (q *Queue) Flush(ctx context.Context) (int, error) {
	if err := q.begin(); err != nil {
		return 0, err
	}
	defer q.calls.Done()
	lower, upper := laneRange(laneRetry)
	start := q.cfg.now()
	moved := 0
	for {
		var keys [][]byte
		err := q.spool.store.Scan(lower, upper, func(k, _ []byte) (bool, error) {
			keys = append(keys, bytes.Clone(k))
			return len(keys) < 200, ctx.Err() // a short hold of q.mu per batch
		})
		if err != nil {
			return moved, err
		}
		if len(keys) == 0 {
			break
		}
		lower = append(bytes.Clone(keys[len(keys)-1]), 0)
		moved += q.flushKeys(keys, start)
		q.poke()
	}
	return moved, q.spool.gsync.wait()
}

// flushKeys makes the messages of the retry lane's index keys due within
// the spread from start, skipping any that moved since they were read.
// A key already due in that window is left alone: it is as due as Flush
// would make it, and it is where Flush puts the messages it moves, so
// that the scan, which goes on past them, neither moves nor counts a
// message twice (with no spread it never ended).
func (q *Queue) flushKeys(keys [][]byte, start time.Time) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	defer q.opsGen.Add(1) // after the writes, before the unlock (see Queue.start)
	from, to := start.UnixNano(), start.Add(q.cfg.restartSpread).UnixNano()
	moved := 0
	for _, k := range keys {
		_, t, id, ok := parseDueKey(k)
		if !ok || q.inflight[id] != nil || (t >= from && t <= to) {
			continue
		}
		se, err := q.spool.readEnvelope(id)
		if err != nil {
			continue
		}
		st, err := q.spool.readState(id, len(se.Env.Recipients))
		if err != nil || !bytes.Equal(stateDueKey(id, st), k) {
			continue
		}
		var jitter time.Duration
		if q.cfg.restartSpread > 0 {
			jitter = rand.N(q.cfg.restartSpread)
		}
		st.Next = start.Add(jitter).UnixNano()
		if q.spool.putState(id, k, st, recipientDomains(se.Env)) == nil {
			moved++
		}
	}
	return moved
}
