package health

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

// The states of an [Alert].
const (
	StateFiring   = "firing"
	StateResolved = "resolved"
)

// Alert is raised by a [Watcher] when a [Rule] fires and again when it
// resolves. It encodes to the JSON a [Webhook] posts.
type Alert struct {
	// ID identifies the firing: its resolution carries the same ID, and
	// retried deliveries of it too, so a receiver can drop duplicates.
	ID string `json:"id"`
	// Rule is the rule's name; Key the key of a [Samples] value ("" for a
	// single Sample), such as a destination.
	Rule string `json:"rule"`
	Key  string `json:"key,omitempty"`
	// State is [StateFiring] or [StateResolved].
	State string `json:"state"`
	// Value is the last sample; Threshold and Below are the rule's.
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	Below     bool    `json:"below,omitempty"`
	// Periods is the number of consecutive samples that made the change.
	Periods int `json:"periods"`
	// Since is when the value first passed the threshold in the streak
	// that fired; At is when the alert was raised.
	Since time.Time `json:"since"`
	At    time.Time `json:"at"`
	// Summary says all of it in one line for people.
	Summary string `json:"summary"`
}

func (a Alert) summary() string {
	name := a.Rule
	if a.Key != "" {
		name += "[" + a.Key + "]"
	}
	dir := "over"
	if a.Below {
		dir = "under"
	}
	v, t := strconv.FormatFloat(a.Value, 'g', -1, 64), strconv.FormatFloat(a.Threshold, 'g', -1, 64)
	if a.State == StateResolved {
		return fmt.Sprintf("%s is %s, no longer %s %s, for %d periods", name, v, dir, t, a.Periods)
	}
	return fmt.Sprintf("%s is %s, %s %s for %d periods", name, v, dir, t, a.Periods)
}

func (a Alert) attrs() []slog.Attr {
	return []slog.Attr{
		slog.String("id", a.ID), slog.String("rule", a.Rule), slog.String("key", a.Key),
		slog.String("state", a.State), slog.Float64("value", a.Value),
		slog.Float64("threshold", a.Threshold), slog.Time("since", a.Since),
	}
}

// Notifier delivers alerts somewhere people see them. Notify must honour
// ctx; an error means the alert was not delivered (the Watcher logs it and
// does not send it again).
type Notifier interface {
	Notify(ctx context.Context, a Alert) error
}

// NotifierFunc is an adapter to use an ordinary function as a [Notifier].
type NotifierFunc func(ctx context.Context, a Alert) error

var _ Notifier = NotifierFunc(nil)

// Notify calls f(ctx, a).
func (f NotifierFunc) Notify(ctx context.Context, a Alert) error { return f(ctx, a) }
