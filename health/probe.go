package health

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Probe checks one endpoint repeatedly with a [ProbeFunc] and keeps its
// state with hysteresis, as a load balancer does: the endpoint is marked
// down after fall consecutive failed checks and up again after rise
// consecutive successful ones, so one lost packet does not eject it and
// one lucky answer does not bring it back. Each check runs under its own
// deadline.
//
// A new Probe reports its endpoint up until checks say otherwise. [Probe.Start]
// starts the checks in a goroutine that the Probe owns; [Probe.Close] stops
// it and waits for it. A Probe is a [Checker], so it can serve as a
// readiness check. Its methods are safe for concurrent use.
type Probe struct {
	addr  string
	check ProbeFunc
	cfg   probeConfig

	mu        sync.Mutex // guards the fields below
	up        bool
	successes int   // consecutive successful checks
	failures  int   // consecutive failed checks
	lastErr   error // the error that marked the endpoint down
	state     runState
	cancel    context.CancelFunc
	done      chan struct{} // closed when the goroutine returns
}

type runState int

const (
	idle runState = iota
	running
	closed
)

// NewProbe returns a Probe of the endpoint addr that uses check. It does
// not check anything until [Probe.Start].
func NewProbe(addr string, check ProbeFunc, opts ...ProbeOption) (*Probe, error) {
	cfg := defaultProbeConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if addr == "" {
		return nil, errors.New("health: probe: empty address")
	}
	if check == nil {
		return nil, fmt.Errorf("health: probe %s: nil ProbeFunc", addr)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("health: probe %s: %w", addr, err)
	}
	cfg.logger = cfg.logger.With("endpoint", addr)
	return &Probe{addr: addr, check: check, cfg: cfg, up: true, done: make(chan struct{})}, nil
}

// Addr returns the address of the endpoint the Probe checks.
func (p *Probe) Addr() string { return p.addr }

// Start starts checking: the first check runs at once, then one every
// interval. Start after Start or after Close does nothing.
func (p *Probe) Start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != idle {
		return
	}
	p.state = running
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go p.run(ctx)
}

// Close stops the checks, abandoning one in progress, and waits for the
// goroutine to return. It is idempotent and always returns nil.
func (p *Probe) Close() error {
	p.mu.Lock()
	st := p.state
	p.state = closed
	p.mu.Unlock()
	if st == running {
		p.cancel()
		<-p.done
	}
	return nil
}

// Healthy reports whether the endpoint is up.
func (p *Probe) Healthy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up
}

// Check returns nil while the endpoint is up, and otherwise the error that
// took it down. It does not probe: it reports the state the checks keep.
func (p *Probe) Check(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.up {
		return nil
	}
	return fmt.Errorf("health: %s down: %w", p.addr, p.lastErr)
}

var _ Checker = (*Probe)(nil)

// MarkDown takes the endpoint down at once, whatever the checks said, as
// a pool does when real traffic to it fails (passive ejection). It comes
// back up after rise consecutive successful checks.
func (p *Probe) MarkDown(err error) {
	if err == nil {
		err = errors.New("marked down")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.successes = 0
	if p.up {
		p.setLocked(false, err)
	}
}

func (p *Probe) run(ctx context.Context) {
	defer close(p.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := p.once(ctx)
		if ctx.Err() != nil {
			return // closing: the check was abandoned, not failed
		}
		p.record(err)
		t.Reset(p.cfg.interval)
	}
}

// once runs one check under the deadline, turning a panic into an error.
func (p *Probe) once(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.deadline)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("health: probe %s panicked: %v", p.addr, r)
		}
	}()
	return p.check(ctx, p.addr)
}

func (p *Probe) record(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.successes++
		p.failures = 0
		if !p.up && p.successes >= p.cfg.rise {
			p.setLocked(true, nil)
		}
		return
	}
	p.failures++
	p.successes = 0
	if p.up && p.failures >= p.cfg.fall {
		p.setLocked(false, err)
	}
}

// setLocked changes the state, logs the transition and tells the
// OnChange callback, all under p.mu so callbacks arrive in order.
func (p *Probe) setLocked(up bool, err error) {
	p.up = up
	p.lastErr = err
	if up {
		p.cfg.logger.Info("endpoint up", "after_successes", p.successes)
	} else {
		p.cfg.logger.Warn("endpoint down", "error", err)
	}
	if p.cfg.onChange != nil {
		p.cfg.onChange(p.addr, up, err)
	}
}
