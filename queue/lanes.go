package queue

import (
	"bytes"
	"slices"
)

// scanFloor is what the scheduler knows about a lane of the due index
// without reading it: no live due key of the lane is earlier than at,
// except keys of messages in flight and keys in the lane's hints.
//
// Scans start at the floor instead of at the head of the lane, so they do
// not step over the deletion markers that every finished attempt leaves
// behind (which the store drops only at compaction); and a lane whose
// floor is in the future is not scanned at all, since nothing in it is
// due. A scan that reads the lane up to its first key not yet due raises
// the floor to that key (or to the end of time if there is none).
//
// Every write of a due key lowers the floor after it commits, or, for a
// new message, adds a hint (see noteEnqueued); a scan raises the floor
// only if no write lowered it while the scan ran (gen), since its iterator
// may not have seen that write.
type scanFloor struct {
	at  int64
	gen uint64
}

// Hints are the scheduler's in-memory hand-off of fresh mail: due index
// entries of the fresh lane, in key (due) order, that the scheduler starts
// without reading the index. A relay enqueues and delivers thousands of
// messages a second; finding each new message with a store iterator was
// most of the scheduler's cost, and decoding its envelope and state
// again most of the rest. A hint is only a pointer: starting it reads the
// message's state record and checks that the hinted key is still the
// message's due key, exactly as for a key found by a scan, so the on-disk
// index stays the truth; only a hint from Enqueue with no operation since
// (Queue.opsGen) is started with the state Enqueue wrote, since nothing
// else can have changed it. Hints are lost with the process, which is
// fine: the census and the first scans of the next start find every
// message in the index.
//
// Two sources fill them: Enqueue, with the envelope it just stored (and a
// small body, see handOffMax), while the lane's floor is above the new key
// (every older idle key is hinted or in flight, so starting hints first
// keeps due order); and a scan, with what it read beyond the attempts it
// could start, so a backlog is read once per hintCap messages rather than
// once per message.

// hintCap bounds the fresh lane's hints, and so the envelopes (and small
// bodies, see handOffMax) they hold, to twice the messages in flight.
func (q *Queue) hintCap() int { return 2 * q.cfg.workers }

// lowerFloor is told of every due key written, other than a new message's
// hinted one, after it commits.
func (q *Queue) lowerFloor(l lane, t int64) {
	q.laneMu.Lock()
	defer q.laneMu.Unlock()
	q.lowerFloorLocked(l, t)
}

func (q *Queue) lowerFloorLocked(l lane, t int64) {
	f := q.floors[l]
	f.at = min(f.at, t)
	f.gen++
	q.floors[l] = f
}

func (q *Queue) readFloor(l lane) scanFloor {
	q.laneMu.Lock()
	defer q.laneMu.Unlock()
	return q.floors[l]
}

// scanned records the end of a scan of lane l that read the floor seen:
// no idle key the scan did not return is below stop, and extras are due
// keys it read but did not start, which become hints.
func (q *Queue) scanned(l lane, seen scanFloor, stop int64, extras []candidate) {
	q.laneMu.Lock()
	defer q.laneMu.Unlock()
	for _, c := range extras {
		q.addHintLocked(c)
	}
	if f := q.floors[l]; f.gen == seen.gen && stop > f.at {
		f.at = stop
		q.floors[l] = f
	}
}

// noteEnqueued is told of a new message's due key after it commits. A
// fresh message becomes a hint if the lane's floor is above it and there
// is room; otherwise its key lowers the floor, and a scan finds it.
func (q *Queue) noteEnqueued(l lane, c candidate) {
	q.laneMu.Lock()
	defer q.laneMu.Unlock()
	if l == laneFresh && c.t < q.floors[l].at && len(q.hints) < q.hintCap() {
		q.addHintLocked(c)
		return
	}
	q.lowerFloorLocked(l, c.t)
}

// addHintLocked inserts c into the hints in key order (new messages come
// last but for a few nanoseconds of overlap between concurrent enqueues).
func (q *Queue) addHintLocked(c candidate) {
	i, _ := slices.BinarySearchFunc(q.hints, c, func(a, b candidate) int { return bytes.Compare(a.key, b.key) })
	q.hints = slices.Insert(q.hints, i, c)
}

// nextHint removes and returns the first hint.
func (q *Queue) nextHint() (candidate, bool) {
	q.laneMu.Lock()
	defer q.laneMu.Unlock()
	if len(q.hints) == 0 {
		return candidate{}, false
	}
	c := q.hints[0]
	// Shift rather than reslice, so the array is reused and not
	// reallocated for every message (there are at most hintCap).
	n := copy(q.hints, q.hints[1:])
	q.hints[n] = candidate{} // do not keep its envelope alive
	q.hints = q.hints[:n]
	return c, true
}
