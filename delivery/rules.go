package delivery

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/sluicemta/sluice"
)

// ReplyAction is what a [ReplyRule] does to a destination whose next hop
// sent a matching reply.
type ReplyAction int

const (
	// ReplyBackoff puts the rule's Shaping profile in force on the
	// destination for the rule's duration: "421 too many connections"
	// means fewer connections, not just a retry.
	ReplyBackoff ReplyAction = iota + 1
	// ReplySuspend parks the destination for the rule's duration: its mail
	// is deferred without opening a session, for a provider whose reply
	// says it blocks our address for a while.
	ReplySuspend
	// ReplyBounce makes a temporary failure permanent: the recipients the
	// reply is for bounce at once instead of being retried for days, for
	// a 4xx that a provider is known never to lift.
	ReplyBounce
)

// String returns "backoff", "suspend" or "bounce".
func (a ReplyAction) String() string {
	switch a {
	case ReplyBackoff:
		return "backoff"
	case ReplySuspend:
		return "suspend"
	case ReplyBounce:
		return "bounce"
	}
	return fmt.Sprintf("ReplyAction(%d)", int(a))
}

// ReplyRule matches replies of next hops and changes how the agent treats
// the destination (seeds 002 and 003: a provider's throttling or block
// message decides what happens next). The first rule that matches a
// reply applies; rules are checked for every failure reply of a session
// (greeting, MAIL, RCPT, DATA) and every connection-level reply.
type ReplyRule struct {
	// Name identifies the rule in logs and replies.
	Name string
	// Match is matched against the reply as one line: the code, the
	// enhanced code if any, and the text, as in
	// "421 4.7.0 Too many connections from your IP".
	Match *regexp.Regexp
	// Action is what a match does.
	Action ReplyAction
	// For is how long a ReplyBackoff or ReplySuspend lasts. A later match
	// extends it.
	For time.Duration
	// Shaping is the backoff profile of ReplyBackoff: its non-zero
	// fields override the destination's limits while the backoff lasts.
	Shaping Shaping
}

func checkReplyRules(rules []ReplyRule, base Shaping) error {
	seen := make(map[string]bool, len(rules))
	for _, r := range rules {
		switch {
		case r.Name == "":
			return errors.New("delivery: reply rule without a name")
		case seen[r.Name]:
			return fmt.Errorf("delivery: duplicate reply rule %q", r.Name)
		case r.Match == nil:
			return fmt.Errorf("delivery: reply rule %s: no pattern", r.Name)
		case r.Action < ReplyBackoff || r.Action > ReplyBounce:
			return fmt.Errorf("delivery: reply rule %s: unknown action %d", r.Name, r.Action)
		case r.Action != ReplyBounce && r.For <= 0:
			return fmt.Errorf("delivery: reply rule %s: %s needs a positive duration", r.Name, r.Action)
		}
		seen[r.Name] = true
		if r.Action == ReplyBackoff {
			if err := base.merge(r.Shaping).validate(); err != nil {
				return fmt.Errorf("delivery: reply rule %s: %w", r.Name, err)
			}
		}
	}
	return nil
}

func checkShapingRules(rules []ShapingRule, base Shaping) error {
	for _, r := range rules {
		m := r.Match
		if name, ok := strings.CutPrefix(m, "pool:"); ok {
			if name == "" {
				return errors.New("delivery: shaping rule for an empty pool name")
			}
		} else if err := checkPattern(m); err != nil {
			return fmt.Errorf("delivery: shaping rule: %w", err)
		}
		if err := base.merge(r.Shaping).validate(); err != nil {
			return fmt.Errorf("delivery: shaping rule %s: %w", m, err)
		}
	}
	return nil
}

func lowerShapingRules(rules []ShapingRule) []ShapingRule {
	out := make([]ShapingRule, len(rules))
	for i, r := range rules {
		r.Match = strings.ToLower(r.Match)
		out[i] = r
	}
	return out
}

// SetReplyRules replaces the reply rules, from the next reply on. On an
// error the rules in force stay.
func (a *Agent) SetReplyRules(rules ...ReplyRule) error {
	if err := checkReplyRules(rules, a.cfg.shaping); err != nil {
		return err
	}
	rules = append([]ReplyRule(nil), rules...)
	a.replyRules.Store(&rules)
	return nil
}

// CheckRules reports whether SetShapingRules and SetReplyRules would take
// these rules, without applying them: a reload that must apply all of a
// new configuration or none of it checks first.
func (a *Agent) CheckRules(shaping []ShapingRule, replies []ReplyRule) error {
	return errors.Join(checkShapingRules(shaping, a.cfg.shaping), checkReplyRules(replies, a.cfg.shaping))
}

// SetShapingRules replaces the per-destination limits; they apply at once
// to the destinations the agent knows (a backoff in force stays until it
// ends). On an error the rules in force stay.
func (a *Agent) SetShapingRules(rules ...ShapingRule) error {
	if err := checkShapingRules(rules, a.cfg.shaping); err != nil {
		return err
	}
	a.shaper.setRules(lowerShapingRules(rules))
	return nil
}

// replyRule returns the first reply rule that matches r, or nil.
func (a *Agent) replyRule(r *sluice.Reply) *ReplyRule {
	rules := a.replyRules.Load()
	if rules == nil || r == nil || sluice.Classify(r) == sluice.OutcomeDelivered {
		return nil
	}
	line := r.Error()
	for i := range *rules {
		if (*rules)[i].Match.MatchString(line) {
			return &(*rules)[i]
		}
	}
	return nil
}

// applyRule applies the reply rule that matches r, if any, to the
// destination. It returns the reply to record for the recipients r is
// for (a permanent one for ReplyBounce) and the action taken, 0 if none.
func (a *Agent) applyRule(ctx context.Context, d *destination, r *sluice.Reply) (*sluice.Reply, ReplyAction) {
	rule := a.replyRule(r)
	if rule == nil {
		return r, 0
	}
	until := a.cfg.now().Add(rule.For)
	a.log.WarnContext(ctx, "reply rule matched", "rule", rule.Name, "action", rule.Action.String(),
		"destination", d.key, "reply", r.Error())
	a.metrics.rule(rule.Action)
	switch rule.Action {
	case ReplyBackoff:
		d.backoff(rule.Shaping, until)
	case ReplySuspend:
		d.suspend(until, "by reply rule "+rule.Name)
	case ReplyBounce:
		if r.Temporary() {
			ec := r.Enhanced
			if ec != (sluice.EnhancedCode{}) {
				ec[0] = 5
			}
			r = &sluice.Reply{Code: r.Code + 100, Enhanced: ec,
				Message: r.Message + " (made permanent by rule " + rule.Name + ")"}
		}
	}
	return r, rule.Action
}

// suspendedReply is the deferral of the recipients left when a reply
// rule suspended their destination.
func suspendedReply(d *destination, r *sluice.Reply) *sluice.Reply {
	return sluice.NewReply(451, sluice.EnhancedCode{4, 4, 5}, "%s suspended after the reply %q", d.key, r.Error())
}

// ruleEndsGroup applies the reply rule matching the reply in a
// connection-level error, if any. A bounce or a suspension decides every
// recipient of the group still pending, and the session goes no further.
func (a *Agent) ruleEndsGroup(ctx context.Context, t *target, g *group, err error) bool {
	r, ok := sluice.ReplyOf(err)
	if !ok {
		return false
	}
	r, act := a.applyRule(ctx, t.dest, r)
	switch act {
	case ReplyBounce:
		finishAll(g.rcpts, r)
	case ReplySuspend:
		finishAll(g.rcpts, suspendedReply(t.dest, r))
	default:
		return false
	}
	return true
}

// applyRules applies the reply rules to the replies of a transaction, once
// per distinct reply, and returns the reply that suspended the
// destination, if one did. A bounce rule replaces the recipient's reply
// with a permanent one.
func (a *Agent) applyRules(ctx context.Context, t *target, sent []*rcptState) (suspendedBy *sluice.Reply) {
	if rules := a.replyRules.Load(); rules == nil || len(*rules) == 0 {
		return nil
	}
	type decision struct {
		r   *sluice.Reply
		act ReplyAction
	}
	seen := make(map[string]decision)
	for _, st := range sent {
		if st.reply == nil || sluice.Classify(st.reply) == sluice.OutcomeDelivered {
			continue
		}
		line := st.reply.Error()
		d, ok := seen[line]
		if !ok {
			d.r, d.act = a.applyRule(ctx, t.dest, st.reply)
			seen[line] = d
		}
		if d.act == ReplyBounce {
			st.reply = d.r
		}
		if d.act == ReplySuspend && suspendedBy == nil {
			suspendedBy = d.r
		}
	}
	return suspendedBy
}
