package admin

import (
	"context"
	"sync"
	"time"

	"github.com/sluicemta/sluice/delivery"
)

// Rates counts delivery attempts per minute over the last hour, by
// result, for the status page's charts. It is a [delivery.Recorder]:
// give it to the agent, with [delivery.WithRecorder] (alone or beside a
// maillog through [Tee]).
type Rates struct {
	now func() time.Time

	mu      sync.Mutex // guards buckets
	buckets [60]Minute // by minute of the hour; stale ones are reset on use
}

var _ delivery.Recorder = (*Rates)(nil)

// Minute is the count of attempts that ended in one minute. Deferred are
// the soft bounces, Bounced the hard ones.
type Minute struct {
	Start     time.Time `json:"start"`
	Delivered int       `json:"delivered"`
	Deferred  int       `json:"deferred"`
	Bounced   int       `json:"bounced"`
}

// NewRates returns an empty Rates reading time from now (time.Now if
// nil).
func NewRates(now func() time.Time) *Rates {
	if now == nil {
		now = time.Now
	}
	return &Rates{now: now}
}

// Record counts r in the minute it ends.
func (rt *Rates) Record(_ context.Context, r *delivery.Record) {
	start := rt.now().Truncate(time.Minute)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	b := &rt.buckets[start.Minute()]
	if !b.Start.Equal(start) {
		*b = Minute{Start: start}
	}
	switch r.Result {
	case "delivered":
		b.Delivered++
	case "deferred":
		b.Deferred++
	case "bounced":
		b.Bounced++
	}
}

// LastHour returns the 60 minutes up to now, oldest first, with zeros
// for minutes without attempts.
func (rt *Rates) LastHour() []Minute {
	end := rt.now().Truncate(time.Minute)
	out := make([]Minute, 60)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for i := range out {
		start := end.Add(time.Duration(i-59) * time.Minute)
		if b := rt.buckets[start.Minute()]; b.Start.Equal(start) {
			out[i] = b
		} else {
			out[i] = Minute{Start: start}
		}
	}
	return out
}

// Tee is a [delivery.Recorder] that hands each record to every one of
// its recorders, in order.
type Tee []delivery.Recorder

// Record calls Record of each recorder.
func (t Tee) Record(ctx context.Context, r *delivery.Record) {
	for _, rec := range t {
		rec.Record(ctx, r)
	}
}
