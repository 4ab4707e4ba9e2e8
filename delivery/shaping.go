package delivery

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// ShapeKey chooses what a destination is for [Shaping].
type ShapeKey int

const (
	// ShapeByDomain gives each recipient domain its own limits.
	ShapeByDomain ShapeKey = iota
	// ShapeBySite gives each MX site (the sorted set of MX host names)
	// its own limits, shared by all the domains it hosts.
	ShapeBySite
)

// Shaping is the traffic policy of each destination (a recipient domain,
// an MX site, or a pool). Concurrency counts open connections, idle cached
// ones included, so a destination never sees more than Concurrency
// sessions from the agent.
//
// Concurrency adapts, as Postfix's scheduler does: it starts at
// InitialConcurrency, grows by one after a window's worth of successful
// sessions, and shrinks by one on each connection failure or 421 reply,
// never below 1 (the change needs a full unit of feedback either way,
// which is the hysteresis that keeps it from flapping). After ParkAfter
// failures in a row without a success the destination is parked: its
// mail is deferred at once, without spending a worker, for ParkFor
// (doubling on each failed probe up to ParkMax); then a single session
// probes it, and a success unparks it.
type Shaping struct {
	// Concurrency is the most connections open at once to the
	// destination.
	Concurrency int
	// InitialConcurrency is where the adaptive window starts.
	InitialConcurrency int
	// MessageRate is the most messages per second sent to the
	// destination; 0 means no limit.
	MessageRate float64
	// ConnectionRate is the most new connections per second opened to the
	// destination; 0 means no limit.
	ConnectionRate float64
	// MaxPerConnection is the most messages sent over one connection.
	MaxPerConnection int
	// IdleTimeout is how long an idle connection is kept for reuse.
	IdleTimeout time.Duration
	// ParkAfter is the number of failures in a row that parks the
	// destination.
	ParkAfter int
	// ParkFor is how long a parked destination waits before a probe.
	ParkFor time.Duration
	// ParkMax bounds ParkFor as it doubles.
	ParkMax time.Duration
}

// String returns "domain" or "site".
func (k ShapeKey) String() string {
	if k == ShapeBySite {
		return "site"
	}
	return "domain"
}

// merge returns s with the non-zero fields of o.
func (s Shaping) merge(o Shaping) Shaping {
	setInt := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	setDur := func(dst *time.Duration, v time.Duration) {
		if v != 0 {
			*dst = v
		}
	}
	setInt(&s.Concurrency, o.Concurrency)
	setInt(&s.InitialConcurrency, o.InitialConcurrency)
	setInt(&s.MaxPerConnection, o.MaxPerConnection)
	setInt(&s.ParkAfter, o.ParkAfter)
	setDur(&s.IdleTimeout, o.IdleTimeout)
	setDur(&s.ParkFor, o.ParkFor)
	setDur(&s.ParkMax, o.ParkMax)
	if o.MessageRate != 0 {
		s.MessageRate = o.MessageRate
	}
	if o.ConnectionRate != 0 {
		s.ConnectionRate = o.ConnectionRate
	}
	return s
}

func (s Shaping) validate() error {
	if s.Concurrency < 1 || s.InitialConcurrency < 1 || s.MaxPerConnection < 1 || s.ParkAfter < 1 {
		return fmt.Errorf("delivery: shaping %+v: counts must be at least 1", s)
	}
	if s.MessageRate < 0 || s.ConnectionRate < 0 || s.IdleTimeout < 0 || s.ParkFor < 0 || s.ParkMax < s.ParkFor {
		return fmt.Errorf("delivery: shaping %+v: negative rate or duration, or ParkMax below ParkFor", s)
	}
	return nil
}

func limiter(perSecond float64) *rate.Limiter {
	l := rate.NewLimiter(rate.Inf, 1)
	setRate(l, perSecond)
	return l
}

// setRate sets l to perSecond events a second, with a burst of one
// second's worth; 0 means no limit.
func setRate(l *rate.Limiter, perSecond float64) {
	if perSecond <= 0 {
		l.SetLimit(rate.Inf)
		l.SetBurst(1)
		return
	}
	l.SetBurst(max(1, int(math.Ceil(perSecond))))
	l.SetLimit(rate.Limit(perSecond))
}

// ShapingRule gives the destinations that Match their own limits, for
// example a lower concurrency for a consumer mailbox provider.
type ShapingRule struct {
	// Match selects destinations with the patterns of routes: a domain
	// ("example.com"), a suffix (".example.com") or "*". A destination
	// keyed by recipient domain is matched by its domain; one keyed by MX
	// site ([ShapeBySite]) when any of its MX host names matches, so
	// ".google.com" covers every domain hosted there; a pool's by
	// "pool:NAME".
	Match string
	// Shaping holds the limits that differ from the agent's
	// ([WithShaping]): its non-zero fields override them.
	Shaping Shaping
}

// destination is the shaping state of one destination.
type destination struct {
	key   string
	names []string // what ShapingRules match: the domain, the MX hosts or "pool:NAME"
	now   func() time.Time
	msgs  *rate.Limiter
	conns *rate.Limiter

	mu           sync.Mutex // guards the fields below
	base         Shaping    // the configured limits
	s            Shaping    // the limits in force: base, or base under a backoff profile
	backoffUntil time.Time  // when s returns to base; zero without a backoff
	window       int        // adaptive concurrency, 1..s.Concurrency
	credit       float64    // feedback not yet applied to window
	open         int        // connections open or being opened, idle included
	idle         []*conn    // idle connections, most recently used last
	fails        int        // failures in a row
	parkedUntil  time.Time
	parkWhy      string // why it is parked, for errParked
	parkFor      time.Duration
	probing      bool          // a probe of a parked destination runs
	probeFailed  bool          // the running probe failed already (failure doubles parkFor once)
	changed      chan struct{} // closed and replaced when open, idle or window change
	lastUsed     time.Time

	closed *atomic.Bool // the agent's: set by Close, then nothing is kept idle
}

func newDestination(key string, names []string, s Shaping, now func() time.Time, closed *atomic.Bool) *destination {
	return &destination{
		key: key, names: names, base: s, s: s, now: now, closed: closed,
		msgs:    limiter(s.MessageRate),
		conns:   limiter(s.ConnectionRate),
		window:  min(s.InitialConcurrency, s.Concurrency),
		parkFor: s.ParkFor,
		changed: make(chan struct{}),
	}
}

// applyLocked puts the limits s in force. It returns the idle
// connections over the new concurrency, for the caller to close.
func (d *destination) applyLocked(s Shaping) (drop []*conn) {
	d.s = s
	d.window = min(d.window, s.Concurrency)
	d.parkFor = min(max(d.parkFor, s.ParkFor), s.ParkMax)
	setRate(d.msgs, s.MessageRate)
	setRate(d.conns, s.ConnectionRate)
	d.signalLocked()
	return d.trimIdleLocked()
}

// trimIdleLocked takes idle connections out while more connections are
// open than the window allows, and returns them for the caller to close.
func (d *destination) trimIdleLocked() (drop []*conn) {
	for d.open > d.window && len(d.idle) > 0 {
		c := d.idle[0]
		d.idle = d.idle[1:]
		c.stopIdle()
		d.open--
		drop = append(drop, c)
	}
	return drop
}

func quitAll(conns []*conn) {
	for _, c := range conns {
		c.quit()
	}
}

// setBase replaces the configured limits, as a reload of the shaping
// rules does; a backoff in force stays until it ends.
func (d *destination) setBase(s Shaping) {
	d.mu.Lock()
	d.base = s
	var drop []*conn
	if d.backoffUntil.IsZero() {
		drop = d.applyLocked(s)
	}
	d.mu.Unlock()
	quitAll(drop)
}

// backoff puts the limits of profile (merged over the configured ones) in
// force until the given time; a reply rule asks for it.
func (d *destination) backoff(profile Shaping, until time.Time) {
	d.mu.Lock()
	d.backoffUntil = until
	drop := d.applyLocked(d.base.merge(profile))
	d.mu.Unlock()
	quitAll(drop)
}

// suspend parks the destination until the given time (a reply rule asks
// for it): its mail is deferred without a session until then.
func (d *destination) suspend(until time.Time, why string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if until.After(d.parkedUntil) {
		d.parkedUntil, d.parkWhy = until, why
	}
}

// refreshLocked ends a backoff whose time is over. It returns the idle
// connections to close, if the configured limits are the tighter ones.
func (d *destination) refreshLocked() (drop []*conn) {
	if !d.backoffUntil.IsZero() && !d.now().Before(d.backoffUntil) {
		d.backoffUntil = time.Time{}
		return d.applyLocked(d.base)
	}
	return nil
}

const failuresWhy = "after repeated failures"

// errParked is returned by acquire for a parked destination.
type errParked struct {
	until time.Time
	why   string
}

func (e *errParked) Error() string {
	return "destination parked " + e.why + " until " + e.until.UTC().Format(time.RFC3339)
}

// lease is the right to one connection to a destination: either an idle
// connection to reuse or permission to open one.
type lease struct {
	d     *destination
	conn  *conn // nil: open a new one
	probe bool
}

// acquire waits for a connection slot. It returns a *errParked at once
// when the destination is parked.
func (d *destination) acquire(ctx context.Context) (*lease, error) {
	for {
		d.mu.Lock()
		if drop := d.refreshLocked(); drop != nil {
			d.mu.Unlock()
			quitAll(drop)
			continue
		}
		d.lastUsed = d.now()
		probe := false
		if !d.parkedUntil.IsZero() {
			if d.probing || d.now().Before(d.parkedUntil) {
				until, why := d.parkedUntil, d.parkWhy
				d.mu.Unlock()
				return nil, &errParked{until, why}
			}
			d.probing, d.probeFailed, probe = true, false, true
		}
		if n := len(d.idle); n > 0 {
			c := d.idle[n-1]
			d.idle = d.idle[:n-1]
			c.stopIdle()
			d.mu.Unlock()
			return &lease{d: d, conn: c, probe: probe}, nil
		}
		if d.open < d.window || probe {
			d.open++
			d.mu.Unlock()
			return &lease{d: d, probe: probe}, nil
		}
		ch := d.changed
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a connection slot to %s: %w", d.key, ctx.Err())
		}
	}
}

// release ends a lease: c, if not nil and reusable, goes back to the idle
// list; otherwise it is closed and its slot freed.
func (l *lease) release(c *conn, reusable bool) {
	d := l.d
	d.mu.Lock()
	if l.probe {
		d.probing = false
	}
	keep := c != nil && reusable && c.msgs < d.s.MaxPerConnection && d.open <= d.window &&
		d.parkedUntil.IsZero() && !d.closed.Load()
	if keep {
		d.idle = append(d.idle, c)
		c.startIdle(d.s.IdleTimeout, func() { d.expire(c) })
	} else {
		d.open--
	}
	d.signalLocked()
	d.mu.Unlock()
	if c != nil && !keep {
		c.quit()
	}
}

// expire closes an idle connection whose idle time ran out.
func (d *destination) expire(c *conn) {
	d.mu.Lock()
	found := false
	for i, ic := range d.idle {
		if ic == c {
			d.idle = append(d.idle[:i], d.idle[i+1:]...)
			d.open--
			found = true
			d.signalLocked()
			break
		}
	}
	d.mu.Unlock()
	if found {
		c.quit()
	}
}

func (d *destination) signalLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// success is positive feedback: a session that got replies.
func (d *destination) success() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fails = 0
	// A park for failures ends with any success; a reply rule's
	// suspension only once its time is over (its probe's success), not
	// with a session that was under way when the rule matched.
	if !d.parkedUntil.IsZero() && (d.parkWhy == failuresWhy || !d.now().Before(d.parkedUntil)) {
		d.parkedUntil, d.parkFor = time.Time{}, d.s.ParkFor
		d.window, d.credit = min(d.s.InitialConcurrency, d.s.Concurrency), 0
	}
	d.credit += 1 / float64(d.window)
	if d.credit >= 1 {
		d.credit = 0
		if d.window < d.s.Concurrency {
			d.window++
			d.signalLocked()
		}
	}
}

// failure is negative feedback: a connection failure or a 421. It
// returns the idle connections to close when the window shrank below the
// open connections, and whether the destination was parked now.
func (d *destination) failure() (drop []*conn, parked bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fails++
	d.credit = min(d.credit, 0) - 1 // pending growth is forfeit
	if d.credit <= -1 {
		d.credit = 0
		d.window = max(1, d.window-1)
	}
	switch {
	case d.probing && !d.probeFailed: // the probe failed: wait longer
		d.probeFailed = true // once per probe, however many next hops it tried
		d.parkFor = min(2*d.parkFor, d.s.ParkMax)
		d.parkedUntil, d.parkWhy = d.now().Add(d.parkFor), failuresWhy
		parked = true
	case d.probing: // the same probe failing at its next hop: parked already
	case d.fails >= d.s.ParkAfter && d.parkedUntil.IsZero():
		d.parkedUntil, d.parkWhy = d.now().Add(d.parkFor), failuresWhy
		parked = true
	}
	return d.trimIdleLocked(), parked
}

// state reports the destination's window and open connections, for
// tests and logs.
func (d *destination) state() (window, open int, parked bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.window, d.open, !d.parkedUntil.IsZero()
}

// limits returns the limits in force.
func (d *destination) limits() Shaping {
	d.mu.Lock()
	drop := d.refreshLocked()
	s := d.s
	d.mu.Unlock()
	quitAll(drop)
	return s
}

// shaper holds the destinations and the dead-host memory.
type shaper struct {
	s        Shaping
	now      func() time.Time
	deadTime time.Duration

	closed atomic.Bool // set by closeAll

	mu      sync.Mutex    // guards rules, dests, dead and opening
	rules   []ShapingRule // first match wins
	dests   map[string]*destination
	dead    map[netip.AddrPort]time.Time   // address -> skip until
	opening map[netip.AddrPort][]time.Time // address -> starts of opens without a greeting yet
}

// maxIdleDestinations bounds the destinations kept without connections.
const maxIdleDestinations = 10000

func newShaper(s Shaping, rules []ShapingRule, deadTime time.Duration, now func() time.Time) *shaper {
	return &shaper{s: s, rules: rules, now: now, deadTime: deadTime,
		dests: make(map[string]*destination), dead: make(map[netip.AddrPort]time.Time),
		opening: make(map[netip.AddrPort][]time.Time)}
}

// dest returns the destination of key, created with the limits of the
// first shaping rule that matches one of names.
func (sh *shaper) dest(key string, names []string) *destination {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if d, ok := sh.dests[key]; ok {
		return d
	}
	if len(sh.dests) >= maxIdleDestinations {
		sh.sweepLocked()
	}
	d := newDestination(key, names, sh.shapingLocked(names), sh.now, &sh.closed)
	sh.dests[key] = d
	return d
}

// shapingLocked returns the limits for a destination known by names.
func (sh *shaper) shapingLocked(names []string) Shaping {
	for _, r := range sh.rules {
		if slices.ContainsFunc(names, func(n string) bool { return matchDomain(r.Match, n) }) {
			return sh.s.merge(r.Shaping)
		}
	}
	return sh.s
}

// setRules replaces the shaping rules and applies them to the known
// destinations.
func (sh *shaper) setRules(rules []ShapingRule) {
	sh.mu.Lock()
	sh.rules = rules
	type change struct {
		d *destination
		s Shaping
	}
	changes := make([]change, 0, len(sh.dests))
	for _, d := range sh.dests {
		changes = append(changes, change{d, sh.shapingLocked(d.names)})
	}
	sh.mu.Unlock()
	for _, c := range changes {
		c.d.setBase(c.s)
	}
}

// sweepLocked forgets destinations without connections that are neither
// parked nor used in the last hour.
func (sh *shaper) sweepLocked() {
	cutoff := sh.now().Add(-time.Hour)
	for k, d := range sh.dests {
		d.mu.Lock()
		unused := d.open == 0 && d.parkedUntil.IsZero() && d.lastUsed.Before(cutoff)
		d.mu.Unlock()
		if unused {
			delete(sh.dests, k)
		}
	}
	for a, until := range sh.dead {
		if !sh.now().Before(until) {
			delete(sh.dead, a)
		}
	}
}

// markDead remembers that addr could not be reached. It reports whether
// the address was not already marked.
func (sh *shaper) markDead(addr netip.AddrPort) bool {
	if sh.deadTime <= 0 {
		return false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	until, was := sh.dead[addr]
	sh.dead[addr] = sh.now().Add(sh.deadTime)
	return !was || !sh.now().Before(until)
}

// markAlive forgets a dead mark after a successful session.
func (sh *shaper) markAlive(addr netip.AddrPort) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	delete(sh.dead, addr)
}

// isDead reports whether addr is to be skipped now.
func (sh *shaper) isDead(addr netip.AddrPort) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	until, ok := sh.dead[addr]
	if ok && !sh.now().Before(until) {
		delete(sh.dead, addr)
		return false
	}
	return ok
}

// beginOpen records that a connection to addr is being opened and
// returns the function that records its end (greeting read or failed).
func (sh *shaper) beginOpen(addr netip.AddrPort) func() {
	sh.mu.Lock()
	start := sh.now()
	sh.opening[addr] = append(sh.opening[addr], start)
	sh.mu.Unlock()
	return func() {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		starts := sh.opening[addr]
		if i := slices.Index(starts, start); i >= 0 {
			starts = slices.Delete(starts, i, i+1)
		}
		if len(starts) == 0 {
			delete(sh.opening, addr)
		} else {
			sh.opening[addr] = starts
		}
	}
}

// suspect reports whether a connection to addr has waited for its
// greeting longer than after: the host may be hung (seed 001), so new
// sessions prefer its equals until it is proven either way.
func (sh *shaper) suspect(addr netip.AddrPort, after time.Duration) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	starts := sh.opening[addr]
	return len(starts) > 0 && sh.now().Sub(starts[0]) > after
}

// closeAll closes every idle connection, for Agent.Close.
func (sh *shaper) closeAll() {
	sh.closed.Store(true)
	sh.mu.Lock()
	dests := make([]*destination, 0, len(sh.dests))
	for _, d := range sh.dests {
		dests = append(dests, d)
	}
	sh.mu.Unlock()
	var idle []*conn
	for _, d := range dests {
		d.mu.Lock()
		for _, c := range d.idle {
			c.stopIdle()
		}
		idle = append(idle, d.idle...)
		d.open -= len(d.idle)
		d.idle = nil
		d.signalLocked()
		d.mu.Unlock()
	}
	// In parallel, so that Close takes one QUIT's time, not one per
	// connection.
	var wg sync.WaitGroup
	for _, c := range idle {
		wg.Add(1)
		go func() { defer wg.Done(); c.quit() }()
	}
	wg.Wait()
}
