package queue

// scanFloor is what the scheduler knows about a lane of the due index
// without reading it: no live due key of the lane is earlier than at,
// except keys of messages in flight.
//
// Scans start at the floor instead of at the head of the lane, so they do
// not step over the deletion markers that every finished attempt leaves
// behind (which the store drops only at compaction); and a lane whose
// floor is in the future is not scanned at all, since nothing in it is
// due. A scan that reads the lane up to its first key not yet due raises
// the floor to that key (or to the end of time if there is none).
//
// Every write of a due key lowers the floor after it commits; a scan
// raises it only if no write happened while it ran (gen), since its
// iterator may not have seen that write.
type scanFloor struct {
	at  int64
	gen uint64
}

func (q *Queue) lowerFloor(l lane, t int64) {
	q.floorMu.Lock()
	defer q.floorMu.Unlock()
	f := q.floors[l]
	f.at = min(f.at, t)
	f.gen++
	q.floors[l] = f
}

func (q *Queue) readFloor(l lane) scanFloor {
	q.floorMu.Lock()
	defer q.floorMu.Unlock()
	return q.floors[l]
}

func (q *Queue) raiseFloor(l lane, seen scanFloor, t int64) {
	q.floorMu.Lock()
	defer q.floorMu.Unlock()
	if f := q.floors[l]; f.gen == seen.gen && t > f.at {
		f.at = t
		q.floors[l] = f
	}
}
