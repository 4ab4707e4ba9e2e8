package delivery

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/queue"
)

// Holder is an optional capability of the [Enqueuer] given to [New]: it
// holds a queued message for an operator. *queue.Queue implements it; a
// message in flight is held when its attempt ends. The agent uses it when
// a post-queue filter quarantines a message ([WithPostQueue]).
type Holder interface {
	Hold(ctx context.Context, id string) error
}

// maxMemoryCopy is the largest message the post-queue filters read from
// memory; a larger one is copied to a temporary file.
const maxMemoryCopy = 1 << 20

// deliverFiltered runs the post-queue filters on msg, settles the
// recipients they decided about and delivers the others with the
// filters' headers prepended.
func (a *Agent) deliverFiltered(ctx context.Context, msg *queue.Message) []queue.Result {
	start := time.Now()
	rcpts := msg.Envelope.Recipients
	results := make([]queue.Result, len(rcpts))
	decided := make([]bool, len(rcpts))
	v, err := a.runPostQueue(ctx, msg)
	if err != nil {
		a.log.ErrorContext(ctx, "post-queue filters could not read the message", "queue_id", msg.Envelope.ID, "err", err)
		v = filter.Verdict{Action: filter.Tempfail,
			Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 3, 0}, "post-queue filtering failed, will retry")}
	}
	if v.Action == filter.Quarantine {
		v = a.quarantine(ctx, msg, v)
	}
	for i, r := range rcpts {
		action, reply := v.Action, v.Reply
		if action == filter.Accept {
			for _, rv := range v.Recipients {
				if strings.EqualFold(rv.Address, r.Address) {
					action, reply = rv.Action, rv.Reply
					break
				}
			}
		}
		if action == filter.Accept {
			continue
		}
		decided[i] = true
		results[i] = filteredResult(action, reply)
		a.logFiltered(ctx, msg, r, action, results[i], time.Since(start))
	}

	var pass []int
	for i := range rcpts {
		if !decided[i] {
			pass = append(pass, i)
		}
	}
	if len(pass) == 0 {
		return results
	}
	out := a.deliver(ctx, withHeaders(msg, pass, a.headerBlock(v.Headers)))
	for k, i := range pass {
		if k < len(out) {
			results[i] = out[k]
		}
	}
	return results
}

// runPostQueue gives the post-queue filters random access to msg.
func (a *Agent) runPostQueue(ctx context.Context, msg *queue.Message) (filter.Verdict, error) {
	rc, err := msg.Open()
	if err != nil {
		return filter.Verdict{}, err
	}
	defer rc.Close()
	fm := &filter.Message{Envelope: msg.Envelope.Clone(), Size: msg.Size}
	if msg.Size <= maxMemoryCopy {
		b, err := io.ReadAll(rc)
		if err != nil {
			return filter.Verdict{}, err
		}
		fm.Body, fm.Size = bytes.NewReader(b), int64(len(b))
	} else {
		f, err := os.CreateTemp(a.cfg.tempDir, "sluice-postqueue-*")
		if err != nil {
			return filter.Verdict{}, err
		}
		defer func() {
			f.Close()
			os.Remove(f.Name())
		}()
		n, err := io.Copy(f, rc)
		if err != nil {
			return filter.Verdict{}, err
		}
		fm.Body, fm.Size = f, n
	}
	return a.cfg.postQueue.RunStage(ctx, filter.StagePostQueue, fm), nil
}

// quarantine holds msg for an operator and defers its recipients, unless
// an operator released it from hold already: then it goes on as accepted.
// Not the attempt's number: a message whose first attempt was deferred
// (the scanner down, the hold failed) and that the filter quarantines at
// its second must be held all the same.
func (a *Agent) quarantine(ctx context.Context, msg *queue.Message, v filter.Verdict) filter.Verdict {
	if msg.Released {
		a.log.InfoContext(ctx, "post-queue quarantine ignored: an operator released the message", "queue_id", msg.Envelope.ID,
			"attempt", msg.Attempt)
		return filter.Verdict{Headers: v.Headers}
	}
	h, ok := a.dsn.(Holder)
	if !ok {
		a.log.ErrorContext(ctx, "post-queue filter quarantined a message but the queue cannot hold it; deferred",
			"queue_id", msg.Envelope.ID)
		return filter.Verdict{Action: filter.Tempfail, Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 3, 0}, "held for review")}
	}
	if err := h.Hold(ctx, msg.Envelope.ID); err != nil {
		a.log.ErrorContext(ctx, "hold of a quarantined message failed; deferred", "queue_id", msg.Envelope.ID, "err", err)
	}
	return filter.Verdict{Action: filter.Tempfail, Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1}, "held for review")}
}

// filteredResult is the attempt result of a recipient a post-queue
// filter decided about.
func filteredResult(action filter.Action, reply *sluice.Reply) queue.Result {
	switch action {
	case filter.Reject:
		return queue.Result{Outcome: sluice.OutcomeBounced, Reply: reply}
	case filter.Discard:
		return queue.Result{Outcome: sluice.OutcomeDelivered, Reply: reply}
	default:
		return queue.Result{Outcome: sluice.OutcomeDeferred, Reply: reply}
	}
}

// logFiltered writes the operator's event record of a post-queue verdict
// and the recipient's delivery log record.
func (a *Agent) logFiltered(ctx context.Context, msg *queue.Message, r sluice.Recipient, action filter.Action, res queue.Result, took time.Duration) {
	a.log.LogAttrs(ctx, slog.LevelInfo, "post-queue filter verdict",
		slog.String("queue_id", msg.Envelope.ID), slog.String("from", msg.Envelope.From),
		slog.String("to", r.Address), slog.String("action", action.String()),
		slog.String("reply", res.Reply.Error()), slog.String("category", string(Categorize(res.Reply))))
	a.metrics.attempt(res.Outcome)
	a.logResult(ctx, msg, &rcptState{rcpt: r, reply: res.Reply, route: "filter"}, res.Outcome, took)
}

// withHeaders returns msg for the recipients at the indexes pass, with
// block prepended to its body.
func withHeaders(msg *queue.Message, pass []int, block string) *queue.Message {
	env := msg.Envelope.Clone()
	env.Recipients = env.Recipients[:0]
	for _, i := range pass {
		env.Recipients = append(env.Recipients, msg.Envelope.Recipients[i])
	}
	m := queue.NewMessage(env, msg.Size+int64(len(block)), func() (io.ReadCloser, error) {
		rc, err := msg.Open()
		if err != nil || block == "" {
			return rc, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.MultiReader(strings.NewReader(block), rc), rc}, nil
	})
	m.Attempt = msg.Attempt
	return m
}

// headerBlock formats the filters' header fields, one line each, dropping
// a field whose name is not RFC 5322 ftext and flattening line breaks in
// values so a filter cannot inject header lines.
func (a *Agent) headerBlock(hs []filter.Header) string {
	var b strings.Builder
	for _, h := range hs {
		if !validFieldName(h.Name) {
			a.log.Warn("post-queue filter header dropped: bad field name", "name", h.Name)
			continue
		}
		v := strings.Join(strings.FieldsFunc(h.Value, func(r rune) bool { return r == '\r' || r == '\n' }), " ")
		fmt.Fprintf(&b, "%s: %s\r\n", h.Name, v)
	}
	return b.String()
}

func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}
