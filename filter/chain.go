package filter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sluicemta/sluice"
)

// HeaderFailure is the header a [PolicyAccept] failure adds:
// "X-Sluice-Filter: <name> error" or "X-Sluice-Filter: <name> timeout".
const HeaderFailure = "X-Sluice-Filter"

// Chain runs filters in order, each with its own deadline and failure
// policy. A nil or empty Chain accepts every message. A Chain is safe for
// concurrent use.
type Chain struct {
	stages []stage
	logger *slog.Logger
}

// New returns a chain of the filters given with [WithFilter]. It fails on
// a nil filter, an empty or duplicate name, a non-positive timeout or an
// unknown policy.
func New(opts ...Option) (*Chain, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		return nil, errors.New("filter: nil logger")
	}
	seen := make(map[string]bool, len(cfg.stages))
	for _, s := range cfg.stages {
		if err := s.validate(); err != nil {
			return nil, err
		}
		if seen[s.name] {
			return nil, fmt.Errorf("filter: duplicate filter name %q", s.name)
		}
		seen[s.name] = true
	}
	return &Chain{stages: cfg.stages, logger: cfg.logger}, nil
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
	}
	return nil
}

// Len returns the number of filters in c (0 for a nil Chain).
func (c *Chain) Len() int {
	if c == nil {
		return 0
	}
	return len(c.stages)
}

// Has reports whether any filter of c runs at stage st.
func (c *Chain) Has(st Stage) bool {
	if c == nil {
		return false
	}
	for _, s := range c.stages {
		if s.at == st {
			return true
		}
	}
	return false
}

// Run runs the filters of [StageData] on m; see [Chain.RunStage].
func (c *Chain) Run(ctx context.Context, m *Message) Verdict { return c.RunStage(ctx, StageData, m) }

// RunStage passes m through the filters of stage st in order and returns
// the combined verdict. The caller gives the whole transaction one
// deadline through ctx (its budget); each filter gets the smaller of that
// and its own timeout. The first Reject, Tempfail or Discard stops the chain; the
// headers of every filter that ran accumulate in the verdict. A verdict
// other than Accept always carries a Reply of the matching class.
//
// Each filter runs under its own timeout. A filter that does not return in
// time is abandoned (its goroutine is left to finish on its own and its
// result ignored), so Run returns within the sum of the timeouts even if a
// filter ignores its context. If ctx itself ends (the client went away, the
// server is closing), Run stops and returns Tempfail whatever the
// policies say, since nobody decided about the message.
func (c *Chain) RunStage(ctx context.Context, st Stage, m *Message) Verdict {
	if c.Len() == 0 {
		return Verdict{}
	}
	var headers []Header
	for _, s := range c.stages {
		if s.at != st {
			continue
		}
		if ctx.Err() != nil {
			return interrupted(headers)
		}
		v := c.runStage(ctx, s, m)
		headers = append(headers, v.Headers...)
		if v.Action != Accept {
			v.Headers = headers
			v.Reply = replyFor(v.Action, v.Reply)
			return v
		}
	}
	return Verdict{Headers: headers}
}

// result is what a filter's goroutine hands back.
type result struct {
	v   Verdict
	err error
}

// runStage calls one filter under its deadline and turns failures into
// the verdict of its policy.
func (c *Chain) runStage(ctx context.Context, s stage, m *Message) Verdict {
	fctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	done := make(chan result, 1) // buffered: an abandoned filter never blocks
	go func() {
		var r result
		defer func() {
			if p := recover(); p != nil {
				r = result{err: fmt.Errorf("filter: %s: panic: %v", s.name, p)}
			}
			done <- r
		}()
		r.v, r.err = s.f.Check(fctx, m)
	}()

	var r result
	select {
	case r = <-done:
	case <-fctx.Done():
		if ctx.Err() != nil {
			return interrupted(nil)
		}
		c.logger.LogAttrs(ctx, slog.LevelWarn, "filter timed out",
			slog.String("filter", s.name), slog.Duration("timeout", s.timeout),
			slog.String("policy", s.onTimeout.String()))
		return apply(s.onTimeout, s.name, "timeout")
	}
	if r.err == nil && !r.v.Action.valid() {
		r.err = fmt.Errorf("filter: %s: invalid action %v", s.name, r.v.Action)
	}
	if r.err != nil {
		if ctx.Err() != nil {
			return interrupted(nil)
		}
		kind := "error"
		if errors.Is(r.err, context.DeadlineExceeded) && fctx.Err() != nil {
			kind = "timeout" // the filter honoured its deadline
		}
		policy := s.onError
		if kind == "timeout" {
			policy = s.onTimeout
		}
		c.logger.LogAttrs(ctx, slog.LevelWarn, "filter failed",
			slog.String("filter", s.name), slog.String("kind", kind),
			slog.Duration("elapsed", time.Since(start)),
			slog.String("policy", policy.String()), slog.Any("error", r.err))
		return apply(policy, s.name, kind)
	}
	return r.v
}

// apply is the verdict of a failure policy for filter name; kind is
// "error" or "timeout".
func apply(p Policy, name, kind string) Verdict {
	switch p {
	case PolicyAccept:
		return Verdict{Headers: []Header{{Name: HeaderFailure, Value: name + " " + kind}}}
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
// Reject must carry a 5xx, a Tempfail a 4xx and a Discard a 2xx reply.
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
	}
	return r
}
