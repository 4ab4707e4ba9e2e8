package filter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/sluicemta/sluice"
)

// HeaderFailure is the header a [PolicyAccept] or [PolicyQuarantine]
// failure adds: "X-Sluice-Filter: <name> error", "<name> timeout" or
// "<name> open" (the filter's circuit breaker is open).
const HeaderFailure = "X-Sluice-Filter"

// Chain runs filters in order, each with its own deadline, failure
// policy, concurrency cap and circuit breaker; filters put in one [Group]
// run at the same time. A nil or empty Chain accepts every message. A
// Chain is safe for concurrent use.
type Chain struct {
	filters []*filterRun
	batches map[Stage][][]*filterRun // per stage: steps in order, each one filter or a group
	logger  *slog.Logger
	metrics *metrics
}

// filterRun is one filter of the chain with its run-time state.
type filterRun struct {
	stage
	sem     chan struct{} // concurrency slots; nil: no cap
	breaker *breaker      // nil: no breaker
}

// New returns a chain of the filters given with [WithFilter]. It fails on
// a nil filter, an empty or duplicate name, a non-positive timeout, an
// unknown policy or stage, a negative concurrency cap, a bad breaker or a
// metric that cannot be registered.
func New(opts ...Option) (*Chain, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		return nil, errors.New("filter: nil logger")
	}
	if cfg.now == nil {
		return nil, errors.New("filter: nil clock")
	}
	seen := make(map[string]bool, len(cfg.stages))
	names := make([]string, 0, len(cfg.stages))
	for _, s := range cfg.stages {
		if err := s.validate(); err != nil {
			return nil, err
		}
		if seen[s.name] {
			return nil, fmt.Errorf("filter: duplicate filter name %q", s.name)
		}
		seen[s.name] = true
		names = append(names, s.name)
	}
	m, err := newMetrics(cfg.registerer, names)
	if err != nil {
		return nil, err
	}
	c := &Chain{logger: cfg.logger, metrics: m, batches: make(map[Stage][][]*filterRun)}
	for _, s := range cfg.stages {
		c.filters = append(c.filters, c.newRun(s, cfg.now))
	}
	c.plan()
	return c, nil
}

func (c *Chain) newRun(s stage, now func() time.Time) *filterRun {
	r := &filterRun{stage: s}
	if s.concurrency > 0 {
		r.sem = make(chan struct{}, s.concurrency)
	}
	if s.breaker.Failures > 0 {
		if s.breaker.Window == 0 {
			s.breaker.Window = defaultBreakerTime
		}
		if s.breaker.Cooldown == 0 {
			s.breaker.Cooldown = defaultBreakerTime
		}
		name := s.name
		r.breaker = newBreaker(s.breaker, now, func(to breakerState, opened bool) {
			c.metrics.breaker(name, to, opened)
			c.logger.Warn("filter circuit breaker", slog.String("filter", name), slog.String("state", to.String()))
		})
	}
	return r
}

// plan splits the filters of each stage into steps: a filter alone, or
// the filters of a group, at the place of the group's first filter.
func (c *Chain) plan() {
	groupAt := make(map[string]int) // stage/group -> index of its step
	for _, f := range c.filters {
		steps := c.batches[f.at]
		if f.group == "" {
			c.batches[f.at] = append(steps, []*filterRun{f})
			continue
		}
		key := f.at.String() + "/" + f.group
		if i, ok := groupAt[key]; ok {
			steps[i] = append(steps[i], f)
			continue
		}
		groupAt[key] = len(steps)
		c.batches[f.at] = append(steps, []*filterRun{f})
	}
}

func (s stage) validate() error {
	switch {
	case s.name == "":
		return errors.New("filter: empty filter name")
	case s.f == nil:
		return fmt.Errorf("filter: %s: nil filter", s.name)
	case s.timeout <= 0:
		return fmt.Errorf("filter: %s: timeout %v must be positive", s.name, s.timeout)
	case !s.onError.valid():
		return fmt.Errorf("filter: %s: unknown error policy %v", s.name, s.onError)
	case !s.onTimeout.valid():
		return fmt.Errorf("filter: %s: unknown timeout policy %v", s.name, s.onTimeout)
	case !s.at.valid():
		return fmt.Errorf("filter: %s: unknown stage %v", s.name, s.at)
	case s.concurrency < 0:
		return fmt.Errorf("filter: %s: concurrency %d must not be negative", s.name, s.concurrency)
	case s.breaker.Failures < 0:
		return fmt.Errorf("filter: %s: breaker failures %d must not be negative", s.name, s.breaker.Failures)
	case s.breaker.Window < 0 || s.breaker.Cooldown < 0:
		return fmt.Errorf("filter: %s: breaker window %v and cooldown %v must not be negative", s.name, s.breaker.Window, s.breaker.Cooldown)
	}
	return nil
}

// Len returns the number of filters in c (0 for a nil Chain).
func (c *Chain) Len() int {
	if c == nil {
		return 0
	}
	return len(c.filters)
}

// Has reports whether any filter of c runs at stage st.
func (c *Chain) Has(st Stage) bool {
	return c != nil && len(c.batches[st]) > 0
}

// Run runs the filters of [StageData] on m; see [Chain.RunStage].
func (c *Chain) Run(ctx context.Context, m *Message) Verdict { return c.RunStage(ctx, StageData, m) }

// RunStage passes m through the filters of stage st in order and returns
// the combined verdict. The caller gives the whole transaction one
// deadline through ctx (its budget); each filter gets the smaller of that
// and its own timeout. The first Reject, Tempfail, Discard or Quarantine
// stops the chain; the headers of every filter that ran accumulate in the
// verdict, in the order the filters were added. A verdict other than
// Accept always carries a Reply of the matching class. Per-recipient
// verdicts are combined as [Verdict.Recipients] describes.
//
// Each filter runs under its own timeout. A filter that does not return in
// time is abandoned (its goroutine is left to finish on its own and its
// result ignored), so Run returns within the sum of the timeouts of the
// steps even if a filter ignores its context. If ctx itself ends (the
// client went away, the server is closing), Run stops and returns Tempfail
// whatever the policies say, since nobody decided about the message.
func (c *Chain) RunStage(ctx context.Context, st Stage, m *Message) Verdict {
	if !c.Has(st) {
		return Verdict{}
	}
	mm := *m
	mm.Stage = st
	var acc accumulator
	for _, step := range c.batches[st] {
		if ctx.Err() != nil {
			return interrupted(acc.headers)
		}
		for _, v := range c.runStep(ctx, step, &mm) {
			if done := acc.add(v); done {
				return acc.final(st, &mm)
			}
		}
	}
	return acc.final(st, &mm)
}

// accumulator combines the verdicts of the filters of a stage.
type accumulator struct {
	headers []Header
	rcpts   []RecipientVerdict // the first non-Accept verdict of each recipient
	stop    *Verdict           // the whole-message verdict that stopped the chain
}

// add takes the next verdict in order and reports whether it stops the
// chain.
func (a *accumulator) add(v Verdict) bool {
	a.headers = append(a.headers, v.Headers...)
	for _, r := range v.Recipients {
		if r.Action == Quarantine {
			if v.Action == Accept {
				v.Action = Quarantine // held as a whole
			}
			// A whole-message verdict (Reject, Tempfail, Discard)
			// overrides a recipient's, this one too: a Reject must
			// not become a message accepted and held.
			continue
		}
		if r.Action == Accept || a.rcptIndex(r.Address) >= 0 {
			continue
		}
		r.Reply = replyFor(r.Action, r.Reply)
		a.rcpts = append(a.rcpts, r)
	}
	if v.Action != Accept {
		a.stop = &v
		return true
	}
	return false
}

func (a *accumulator) rcptIndex(addr string) int {
	for i, r := range a.rcpts {
		if strings.EqualFold(r.Address, addr) {
			return i
		}
	}
	return -1
}

// final returns the verdict of the stage.
func (a *accumulator) final(st Stage, m *Message) Verdict {
	if a.stop != nil {
		v := *a.stop
		v.Headers = a.headers
		v.Reply = replyFor(v.Action, v.Reply)
		v.Recipients = nil
		return v
	}
	v := Verdict{Headers: a.headers}
	switch st {
	case StagePostQueue:
		v.Recipients = a.rcpts
	case StageRcpt:
		if n := len(m.Envelope.Recipients); n > 0 {
			if i := a.rcptIndex(m.Envelope.Recipients[n-1].Address); i >= 0 {
				v.Action, v.Reply = a.rcpts[i].Action, a.rcpts[i].Reply
			}
		}
	}
	return v
}

// runStep runs the filters of one step (one filter, or a group at the
// same time) and returns their verdicts in order, up to the first that is
// not Accept (or that has per-recipient verdicts at a stage that stops on
// them). Filters of the group after a deciding one are abandoned.
func (c *Chain) runStep(ctx context.Context, step []*filterRun, m *Message) []Verdict {
	if len(step) == 1 {
		return []Verdict{c.runOne(ctx, step[0], m)}
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type indexed struct {
		i int
		v Verdict
	}
	results := make(chan indexed, len(step))
	var wg sync.WaitGroup
	for i, f := range step {
		wg.Go(func() { results <- indexed{i, c.runOne(sctx, f, m)} })
	}
	defer wg.Wait() // each runOne returns soon after cancel: it abandons its filter

	got := make([]*Verdict, len(step))
	for range step {
		r := <-results
		got[r.i] = &r.v
		// Decided once every filter up to the first non-Accept has answered.
		var out []Verdict
		for _, v := range got {
			if v == nil {
				break
			}
			out = append(out, *v)
			if v.Action != Accept {
				return out
			}
		}
		if len(out) == len(step) {
			return out
		}
	}
	return nil // not reached
}

// result is what a filter's goroutine hands back.
type result struct {
	v   Verdict
	err error
}

// runOne calls one filter under its deadline, concurrency cap and circuit
// breaker, and turns failures into the verdict of its policy.
func (c *Chain) runOne(ctx context.Context, f *filterRun, m *Message) Verdict {
	ok, probe := f.breaker.allow()
	if !ok {
		c.metrics.call(f.name, "open")
		c.logger.LogAttrs(ctx, slog.LevelDebug, "filter skipped: circuit breaker open",
			slog.String("filter", f.name), slog.String("policy", f.onError.String()))
		return apply(f.onError, f.name, "open")
	}
	fctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	start := time.Now()
	if f.sem != nil {
		select {
		case f.sem <- struct{}{}:
		case <-fctx.Done():
			f.breaker.abort(probe)
			if ctx.Err() != nil {
				return interrupted(nil)
			}
			c.metrics.call(f.name, "timeout")
			c.logger.LogAttrs(ctx, slog.LevelWarn, "filter at its concurrency cap until its timeout",
				slog.String("filter", f.name), slog.Int("concurrency", f.concurrency),
				slog.String("policy", f.onTimeout.String()))
			return apply(f.onTimeout, f.name, "timeout")
		}
	}
	done := make(chan result, 1) // buffered: an abandoned filter never blocks
	go func() {
		var r result
		defer func() {
			if p := recover(); p != nil {
				r = result{err: fmt.Errorf("filter: %s: panic: %v", f.name, p)}
			}
			if f.sem != nil {
				<-f.sem // held until the filter really returns
			}
			done <- r
		}()
		r.v, r.err = f.f.Check(fctx, m)
	}()

	var r result
	select {
	case r = <-done:
	case <-fctx.Done():
		if ctx.Err() != nil {
			f.breaker.abort(probe)
			return interrupted(nil)
		}
		f.breaker.failure(probe)
		c.metrics.call(f.name, "timeout")
		c.logger.LogAttrs(ctx, slog.LevelWarn, "filter timed out",
			slog.String("filter", f.name), slog.Duration("timeout", f.timeout),
			slog.String("policy", f.onTimeout.String()))
		return apply(f.onTimeout, f.name, "timeout")
	}
	if r.err == nil && !r.v.Action.valid() {
		r.err = fmt.Errorf("filter: %s: invalid action %v", f.name, r.v.Action)
	}
	if r.err == nil {
		for _, rv := range r.v.Recipients {
			if !rv.Action.valid() {
				r.err = fmt.Errorf("filter: %s: invalid action %v for recipient %s", f.name, rv.Action, rv.Address)
			}
		}
	}
	if r.err != nil {
		if ctx.Err() != nil {
			f.breaker.abort(probe)
			return interrupted(nil)
		}
		f.breaker.failure(probe)
		kind := "error"
		if errors.Is(r.err, context.DeadlineExceeded) && fctx.Err() != nil {
			kind = "timeout" // the filter honoured its deadline
		}
		policy := f.onError
		if kind == "timeout" {
			policy = f.onTimeout
		}
		c.metrics.call(f.name, kind)
		c.logger.LogAttrs(ctx, slog.LevelWarn, "filter failed",
			slog.String("filter", f.name), slog.String("kind", kind),
			slog.Duration("elapsed", time.Since(start)),
			slog.String("policy", policy.String()), slog.Any("error", r.err))
		return apply(policy, f.name, kind)
	}
	f.breaker.success(probe)
	c.metrics.call(f.name, r.v.Action.String())
	return r.v
}

// apply is the verdict of a failure policy for filter name; kind is
// "error", "timeout" or "open".
func apply(p Policy, name, kind string) Verdict {
	tag := []Header{{Name: HeaderFailure, Value: name + " " + kind}}
	switch p {
	case PolicyAccept:
		return Verdict{Headers: tag}
	case PolicyQuarantine:
		return Verdict{Action: Quarantine, Headers: tag, Reply: sluice.NewReply(250, sluice.EnhancedCode{2, 0, 0},
			"held for review: filter %s failed", name)}
	case PolicyReject:
		return Verdict{Action: Reject, Reply: sluice.NewReply(554, sluice.EnhancedCode{5, 7, 1},
			"filter %s failed, message rejected", name)}
	default:
		return Verdict{Action: Tempfail, Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1},
			"filter %s unavailable, try again later", name)}
	}
}

// interrupted is the verdict when the caller's context ended.
func interrupted(headers []Header) Verdict {
	return Verdict{Action: Tempfail, Headers: headers,
		Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 3, 0}, "filtering interrupted, try again later")}
}

// replyFor returns r if it fits action a, else the default reply of a: a
// Reject must carry a 5xx, a Tempfail a 4xx and a Discard or Quarantine a
// 2xx reply.
func replyFor(a Action, r *sluice.Reply) *sluice.Reply {
	switch a {
	case Reject:
		if r != nil && r.Permanent() {
			return r
		}
		return sluice.NewReply(550, sluice.EnhancedCode{5, 7, 1}, "message rejected")
	case Tempfail:
		if r != nil && r.Temporary() {
			return r
		}
		return sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1}, "message deferred, try again later")
	case Discard:
		if r != nil && r.Code >= 200 && r.Code < 300 {
			return r
		}
		return sluice.NewReply(250, sluice.EnhancedCode{2, 0, 0}, "discarded")
	case Quarantine:
		if r != nil && r.Code >= 200 && r.Code < 300 {
			return r
		}
		return sluice.NewReply(250, sluice.EnhancedCode{2, 0, 0}, "held for review")
	}
	return r
}
