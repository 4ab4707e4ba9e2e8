package filter

import (
	"sync"
	"time"
)

// breakerState is the state of a circuit breaker; its value is the one
// the sluice_filter_breaker_state gauge shows.
type breakerState int

const (
	breakerClosed   breakerState = iota // calls go through
	breakerHalfOpen                     // one probe call is in progress
	breakerOpen                         // no calls until the cool-down ends
)

func (s breakerState) String() string {
	switch s {
	case breakerHalfOpen:
		return "half-open"
	case breakerOpen:
		return "open"
	}
	return "closed"
}

// breaker is the circuit breaker of one filter.
type breaker struct {
	cfg      Breaker
	now      func() time.Time
	onChange func(to breakerState, opened bool) // called with mu held; opened: by failures

	mu       sync.Mutex // guards the fields below
	state    breakerState
	failures []time.Time // failures within the window, oldest first (closed only)
	openedAt time.Time
}

func newBreaker(cfg Breaker, now func() time.Time, onChange func(to breakerState, opened bool)) *breaker {
	return &breaker{cfg: cfg, now: now, onChange: onChange}
}

// allow reports whether a call may go ahead, and whether it is the probe
// of a half-open breaker (whose outcome decides the state).
func (b *breaker) allow() (ok, probe bool) {
	if b == nil {
		return true, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case breakerClosed:
		return true, false
	case breakerOpen:
		if b.now().Sub(b.openedAt) >= b.cfg.Cooldown {
			b.setLocked(breakerHalfOpen, false)
			return true, true
		}
	}
	return false, false // open, or half-open with its probe in progress
}

// success records a call that got an answer.
func (b *breaker) success(probe bool) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe && b.state == breakerHalfOpen {
		b.failures = nil
		b.setLocked(breakerClosed, false)
	}
}

// failure records a call that failed or timed out.
func (b *breaker) failure(probe bool) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	switch {
	case probe && b.state == breakerHalfOpen:
		b.openLocked(now)
	case b.state == breakerClosed:
		cut := now.Add(-b.cfg.Window)
		i := 0
		for i < len(b.failures) && !b.failures[i].After(cut) {
			i++
		}
		b.failures = append(b.failures[i:], now)
		if len(b.failures) >= b.cfg.Failures {
			b.openLocked(now)
		}
	}
}

// abort gives back a probe that could not be made (the caller went away,
// no concurrency slot): the next call probes instead.
func (b *breaker) abort(probe bool) {
	if b == nil || !probe {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == breakerHalfOpen {
		b.openedAt = b.now().Add(-b.cfg.Cooldown) // cool-down over: the next allow probes
		b.setLocked(breakerOpen, false)
	}
}

func (b *breaker) openLocked(now time.Time) {
	b.failures = nil
	b.openedAt = now
	b.setLocked(breakerOpen, true)
}

func (b *breaker) setLocked(to breakerState, opened bool) {
	from := b.state
	b.state = to
	if from != to && b.onChange != nil {
		b.onChange(to, opened)
	}
}

// FilterStatus is the state of one filter of a [Chain], for operators.
type FilterStatus struct {
	Name  string `json:"name"`
	Stage Stage  `json:"-"`
	// Breaker is "closed", "half-open" or "open"; "" when the filter has
	// no circuit breaker.
	Breaker string `json:"breaker,omitempty"`
	// OpenedAt is when the breaker last opened, while it is open.
	OpenedAt time.Time `json:"opened_at,omitzero"`
}

// Status returns the state of each filter, in the chain's order.
func (c *Chain) Status() []FilterStatus {
	if c == nil {
		return nil
	}
	out := make([]FilterStatus, 0, len(c.filters))
	for _, f := range c.filters {
		st := FilterStatus{Name: f.name, Stage: f.at}
		if b := f.breaker; b != nil {
			b.mu.Lock()
			st.Breaker = b.state.String()
			if b.state != breakerClosed {
				st.OpenedAt = b.openedAt
			}
			b.mu.Unlock()
		}
		out = append(out, st)
	}
	return out
}
