package health

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
)

// ErrNoEndpoint is returned by [Pool.Pick] when no endpoint of the pool is
// up (or every one that is was excluded).
var ErrNoEndpoint = errors.New("health: no healthy endpoint")

// Strategy is how a [Pool] chooses among its healthy endpoints.
type Strategy int

// The strategies. The zero value is LeastOutstanding.
const (
	// LeastOutstanding picks the endpoint with the fewest requests in
	// flight, at random among ties. A replica that hangs keeps its
	// requests and so stops being picked even before it is ejected.
	LeastOutstanding Strategy = iota
	// OrderedFailover picks the first healthy endpoint in the order given
	// to [NewPool]: a primary with standbys.
	OrderedFailover
	// Random picks a healthy endpoint uniformly at random.
	Random
)

// String returns "least-outstanding", "ordered-failover" or "random".
func (s Strategy) String() string {
	switch s {
	case LeastOutstanding:
		return "least-outstanding"
	case OrderedFailover:
		return "ordered-failover"
	case Random:
		return "random"
	}
	return "Strategy(" + strconv.Itoa(int(s)) + ")"
}

func (s Strategy) valid() bool { return s >= LeastOutstanding && s <= Random }

// EndpointStatus is the state of one endpoint of a [Pool].
type EndpointStatus struct {
	Addr        string
	Up          bool
	Outstanding int   // requests picked and not yet Done
	Err         error // why it is down; nil when up
}

// Pool spreads requests over several replicas of one backend (spamd
// servers, rspamd workers, smarthosts) and keeps only the healthy ones in
// rotation. Endpoints are addresses: the caller dials them. Health comes
// from two sources:
//
//   - active: a [Probe] per endpoint speaks the backend's protocol every
//     interval, takes the endpoint down after fall failed checks and brings
//     it back after rise successful ones;
//   - passive: the caller reports the outcome of each request with
//     [Pool.Done]; after a number of consecutive errors (see
//     [WithEjectAfter]) the endpoint is ejected at once, and only its probe
//     brings it back.
//
// Each transition is logged and the state is exported as Prometheus
// metrics: sluice_pool_endpoint_up, sluice_pool_endpoint_outstanding,
// sluice_pool_transitions_total and sluice_pool_requests_total, labelled
// by pool and endpoint. A Pool is safe for concurrent use.
type Pool struct {
	name    string
	cfg     poolConfig
	members []*member // in the order given
	byAddr  map[string]*member
	metrics *poolMetrics

	mu sync.Mutex // guards the state fields of every member
}

// member is one endpoint of a Pool.
type member struct {
	addr  string
	probe *Probe

	// State, guarded by Pool.mu.
	up          bool
	err         error
	outstanding int
	errors      int // consecutive request errors
}

// NewPool returns a pool called name (used in logs and metric labels, so
// unique per registry) of the given endpoints, each checked by check, and
// starts the probes. Call [Pool.Close] to stop them.
//
// Before it returns, NewPool checks every endpoint once, all at the same
// time, within the probe deadline, and starts the ones that fail down: a
// replica that is dead or hung when the pool starts never gets the first
// burst of requests, each of which would wait for its caller's timeout.
func NewPool(name string, endpoints []string, check ProbeFunc, opts ...PoolOption) (*Pool, error) {
	cfg := defaultPoolConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := validatePool(name, endpoints, check, &cfg); err != nil {
		return nil, err
	}
	metrics, err := newPoolMetrics(cfg.registerer)
	if err != nil {
		return nil, fmt.Errorf("health: pool %s: %w", name, err)
	}
	p := &Pool{name: name, cfg: cfg, byAddr: make(map[string]*member, len(endpoints)), metrics: metrics}
	logger := cfg.logger.With("pool", name)
	for _, addr := range endpoints {
		m := &member{addr: addr, up: true}
		popts := append(append([]ProbeOption{WithProbeLogger(logger)}, cfg.probeOpts...), p.watch)
		m.probe, err = NewProbe(addr, check, popts...)
		if err != nil {
			return nil, fmt.Errorf("health: pool %s: %w", name, err)
		}
		p.members = append(p.members, m)
		p.byAddr[addr] = m
		metrics.up.WithLabelValues(name, addr).Set(1)
		metrics.outstanding.WithLabelValues(name, addr).Set(0)
	}
	if !cfg.noFirst {
		p.firstCheck(check)
	}
	for _, m := range p.members {
		m.probe.Start()
	}
	return p, nil
}

// firstCheck checks every endpoint once, in parallel, and takes down the
// ones that fail. A check that panics fails, as in a Probe: on a goroutine
// of its own it would end the process.
func (p *Pool) firstCheck(check ProbeFunc) {
	var wg sync.WaitGroup
	for _, m := range p.members {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), p.cfg.probeConfig().deadline)
			defer cancel()
			err := func() (err error) {
				defer func() {
					if r := recover(); r != nil {
						err = fmt.Errorf("health: probe %s panicked: %v", m.addr, r)
					}
				}()
				return check(ctx, m.addr)
			}()
			if err != nil {
				m.probe.MarkDown(fmt.Errorf("first check: %w", err))
			}
		})
	}
	wg.Wait()
}

func validatePool(name string, endpoints []string, check ProbeFunc, cfg *poolConfig) error {
	var errs []error
	if name == "" {
		errs = append(errs, errors.New("empty name"))
	}
	if len(endpoints) == 0 {
		errs = append(errs, errors.New("no endpoints"))
	}
	seen := make(map[string]bool, len(endpoints))
	for _, a := range endpoints {
		if a == "" || seen[a] {
			errs = append(errs, fmt.Errorf("endpoint %q: empty or repeated", a))
		}
		seen[a] = true
	}
	if check == nil {
		errs = append(errs, errors.New("nil ProbeFunc"))
	}
	if err := cfg.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("health: pool %q: %w", name, err)
	}
	return nil
}

// watch is the probes' OnChange: it wraps any callback given in
// WithProbeOptions and keeps the member's state in step with its probe.
func (p *Pool) watch(c *probeConfig) {
	user := c.onChange
	c.onChange = func(addr string, up bool, err error) {
		p.mu.Lock()
		m := p.byAddr[addr]
		m.up, m.err, m.errors = up, err, 0
		p.mu.Unlock()
		p.metrics.transition(p.name, addr, up)
		if user != nil {
			user(addr, up, err)
		}
	}
}

// Pick chooses a healthy endpoint by the pool's strategy, skipping those
// in exclude (the ones a caller already tried for this request), and
// counts a request in flight on it. Every successful Pick must be followed
// by exactly one [Pool.Done] for the address it returned. It returns
// [ErrNoEndpoint] when no endpoint qualifies.
func (p *Pool) Pick(exclude ...string) (string, error) {
	p.mu.Lock()
	m := p.chooseLocked(exclude)
	if m == nil {
		p.mu.Unlock()
		return "", fmt.Errorf("health: pool %s: %w", p.name, ErrNoEndpoint)
	}
	m.outstanding++
	n := m.outstanding
	p.mu.Unlock()
	p.metrics.outstanding.WithLabelValues(p.name, m.addr).Set(float64(n))
	return m.addr, nil
}

func (p *Pool) chooseLocked(exclude []string) *member {
	var (
		best *member
		ties int
	)
	for _, m := range p.members {
		if !m.up || excluded(m.addr, exclude) {
			continue
		}
		switch p.cfg.strategy {
		case OrderedFailover:
			return m
		case Random:
			// Reservoir sampling: each candidate kept with probability 1/n.
			ties++
			if rand.IntN(ties) == 0 {
				best = m
			}
		default:
			switch {
			case best == nil || m.outstanding < best.outstanding:
				best, ties = m, 1
			case m.outstanding == best.outstanding:
				ties++
				if rand.IntN(ties) == 0 {
					best = m
				}
			}
		}
	}
	return best
}

func excluded(addr string, exclude []string) bool {
	for _, e := range exclude {
		if e == addr {
			return true
		}
	}
	return false
}

// Done reports the outcome of a request to addr picked with [Pool.Pick].
// A nil err is a success. An err is a failure of the endpoint (refused,
// reset, timed out, garbled answer), not a verdict about the request: a
// filter's rejection is a success here. An err wrapping [context.Canceled]
// (the caller gave up) counts as neither. After the pool's eject-after
// count of consecutive failures the endpoint is taken down at once and
// stays down until its probe has succeeded rise times.
func (p *Pool) Done(addr string, err error) {
	p.mu.Lock()
	m := p.byAddr[addr]
	if m == nil {
		p.mu.Unlock()
		return
	}
	if m.outstanding > 0 {
		m.outstanding--
	}
	n := m.outstanding
	eject := false
	switch {
	case err == nil:
		m.errors = 0
	case errors.Is(err, context.Canceled):
	default:
		m.errors++
		eject = m.up && m.errors >= p.cfg.ejectAfter
	}
	errs := m.errors
	p.mu.Unlock()

	p.metrics.outstanding.WithLabelValues(p.name, addr).Set(float64(n))
	p.metrics.request(p.name, addr, err)
	if eject {
		m.probe.MarkDown(fmt.Errorf("ejected after %d consecutive request errors: %w", errs, err))
	}
}

// Endpoints returns the state of every endpoint, in the order given to
// [NewPool].
func (p *Pool) Endpoints() []EndpointStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]EndpointStatus, len(p.members))
	for i, m := range p.members {
		out[i] = EndpointStatus{Addr: m.addr, Up: m.up, Outstanding: m.outstanding, Err: m.err}
	}
	return out
}

// Check returns nil while at least one endpoint is up, so a Pool can serve
// as a readiness check of the backend it fronts.
func (p *Pool) Check(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, m := range p.members {
		if m.up {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", m.addr, m.err))
	}
	return fmt.Errorf("health: pool %s: %w: %w", p.name, ErrNoEndpoint, errors.Join(errs...))
}

var _ Checker = (*Pool)(nil)

// Close stops every probe, waits for them and removes the pool's metric
// series. It is idempotent and always returns nil. Pick still works after
// Close, on the state the probes left.
func (p *Pool) Close() error {
	var wg sync.WaitGroup
	for _, m := range p.members {
		wg.Go(func() { m.probe.Close() })
	}
	wg.Wait()
	p.metrics.forget(p.name)
	return nil
}

// Name returns the pool's name.
func (p *Pool) Name() string { return p.name }

// Picker hands out endpoints and takes their outcomes; *Pool implements
// it.
type Picker interface {
	Pick(exclude ...string) (string, error)
	Done(addr string, err error)
}

var _ Picker = (*Pool)(nil)

// Try calls fn with an endpoint picked from p and reports the outcome to
// p; when fn fails with an error that retry accepts (the endpoint could
// not be reached, say), it tries another endpoint, up to attempts in all,
// while ctx lasts. It returns fn's result, or the last error prefixed
// with the endpoint's address.
func Try[T any](ctx context.Context, p Picker, attempts int, retry func(error) bool, fn func(addr string) (T, error)) (T, error) {
	var (
		zero    T
		tried   []string
		lastErr error
	)
	for range max(attempts, 1) {
		addr, err := p.Pick(tried...)
		if err != nil {
			if lastErr != nil {
				return zero, fmt.Errorf("%w (after %w)", err, lastErr)
			}
			return zero, err
		}
		tried = append(tried, addr)
		res, err := fn(addr)
		p.Done(addr, err)
		if err == nil {
			return res, nil
		}
		lastErr = fmt.Errorf("%s: %w", addr, err)
		if !retry(err) || ctx.Err() != nil {
			break
		}
	}
	return zero, lastErr
}
