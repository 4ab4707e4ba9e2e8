package delivery_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/limit"
	"github.com/sluicemta/sluice/filter/parse"
	"github.com/sluicemta/sluice/filter/suppress"
	"github.com/sluicemta/sluice/queue"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

// postQueueSystem is a real queue served by an agent that runs chain's
// post-queue filters and sends everything, notifications included, to a
// recording sink.
type postQueueSystem struct {
	q    *queue.Queue
	sink *smtptest.Sink
	logs *logBuffer
}

func newPostQueueSystem(t *testing.T, chain *filter.Chain) *postQueueSystem {
	t.Helper()
	s := &postQueueSystem{sink: newSink(t), logs: &logBuffer{}}
	q, err := queue.New(t.TempDir(), queue.WithRetry(50*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	s.q = q
	a, err := delivery.New(q, delivery.WithHostname("mta.test"), delivery.WithTimeouts(fast),
		delivery.WithSmarthost(s.sink.Addr()), delivery.WithPostQueue(chain),
		delivery.WithLogger(slog.New(slog.NewJSONHandler(s.logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- q.Serve(a) }()
	t.Cleanup(func() {
		q.Close()
		if err := <-errc; !errors.Is(err, queue.ErrClosed) {
			t.Errorf("Serve = %v", err)
		}
		a.Close()
	})
	return s
}

func (s *postQueueSystem) enqueue(t *testing.T, from string, to ...string) string {
	t.Helper()
	return s.enqueueBody(t, original, from, to...)
}

func (s *postQueueSystem) enqueueBody(t *testing.T, body, from string, to ...string) string {
	t.Helper()
	env := &sluice.Envelope{From: from}
	for _, a := range to {
		env.Recipients = append(env.Recipients, sluice.Recipient{Address: a})
	}
	id, err := s.q.Enqueue(context.Background(), env, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// byRecipient is a post-queue filter with a verdict per recipient
// address and a header for every message.
func byRecipient(verdicts map[string]filter.RecipientVerdict) filter.Filter {
	return filter.FilterFunc(func(_ context.Context, m *filter.Message) (filter.Verdict, error) {
		v := filter.Verdict{Headers: []filter.Header{{Name: "X-Post-Queue", Value: "checked"}}}
		for _, r := range m.Envelope.Recipients {
			if rv, ok := verdicts[r.Address]; ok {
				rv.Address = r.Address
				v.Recipients = append(v.Recipients, rv)
			}
		}
		return v, nil
	})
}

func postQueueChain(t *testing.T, f filter.Filter) *filter.Chain {
	t.Helper()
	c, err := filter.New(filter.WithFilter("post", f, filter.AtStage(filter.StagePostQueue)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitSink(t *testing.T, s *smtptest.Sink, n int) []smtptest.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitFor(ctx, n); err != nil {
		t.Fatalf("sink got %d messages, want %d: %v", s.Count(), n, err)
	}
	return s.Messages()
}

var suppressed = sluice.NewReply(550, sluice.EnhancedCode{5, 7, 1}, "recipient is on the bounce list of this account")

// TestPostQueueRejectBouncesWithDSN: a recipient rejected after
// acceptance gets the sender an RFC 3464 notification; the other
// recipient is delivered with the filter's header; both leave a log
// record.
func TestPostQueueRejectBouncesWithDSN(t *testing.T) {
	s := newPostQueueSystem(t, postQueueChain(t, byRecipient(map[string]filter.RecipientVerdict{
		"gone@example.com": {Action: filter.Reject, Reply: suppressed},
	})))
	id := s.enqueue(t, "alice@example.org", "ok@example.com", "gone@example.com")
	msgs := waitSink(t, s.sink, 2)
	var delivered, dsn *smtptest.Message
	for i := range msgs {
		if msgs[i].From == "" {
			dsn = &msgs[i]
		} else {
			delivered = &msgs[i]
		}
	}
	if delivered == nil || dsn == nil {
		t.Fatalf("sink got %+v, want one delivery and one notification", msgs)
	}
	if strings.Join(delivered.To, ",") != "ok@example.com" || !strings.HasPrefix(string(delivered.Data), "X-Post-Queue: checked\r\n") {
		t.Errorf("delivered to %v:\n%s\nwant ok@example.com only, with the filter's header first", delivered.To, delivered.Data)
	}
	if strings.Join(dsn.To, ",") != "alice@example.org" {
		t.Errorf("notification to %v, want the sender", dsn.To)
	}
	h, parts := parseDSN(t, dsn.Data)
	if ct, params, _ := h.ContentType(); ct != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Errorf("Content-Type %s %v, want multipart/report; report-type=delivery-status", ct, params)
	}
	if len(parts) != 3 || parts[1].contentType != "message/delivery-status" {
		t.Fatalf("parts %+v, want text, delivery-status, original", parts)
	}
	groups := statusGroups(t, parts[1].body)
	if len(groups) != 2 {
		t.Fatalf("delivery-status has %d groups, want per-message and one recipient", len(groups))
	}
	rg := groups[1]
	for field, want := range map[string]string{
		"Final-Recipient": "rfc822; gone@example.com", "Action": "failed", "Status": "5.7.1",
	} {
		if got := rg.Get(field); got != want {
			t.Errorf("%s = %q, want %q", field, got, want)
		}
	}
	if !strings.Contains(rg.Get("Diagnostic-Code"), "bounce list") {
		t.Errorf("Diagnostic-Code = %q, want the filter's reason", rg.Get("Diagnostic-Code"))
	}
	waitUntil(t, "the message leaves the queue", func() bool { _, err := s.q.Show(context.Background(), id); return err != nil })
	recs := s.logs.records(t, "post-queue filter verdict")
	if len(recs) != 1 || recs[0]["to"] != "gone@example.com" || recs[0]["action"] != "reject" || recs[0]["queue_id"] != id {
		t.Errorf("verdict records %v, want one reject of gone@example.com for %s", recs, id)
	}
	found := false
	for _, r := range s.logs.records(t, "delivery") {
		found = found || (r["to"] == "gone@example.com" && r["route"] == "filter" && r["result"] == "bounced")
	}
	if !found {
		t.Errorf("no delivery log record of the filtered recipient: %v", s.logs.records(t, "delivery"))
	}
}

// TestPostQueueNoDSNForNullSender: a notification's recipient rejected
// after acceptance is dropped without another notification.
func TestPostQueueNoDSNForNullSender(t *testing.T) {
	s := newPostQueueSystem(t, postQueueChain(t, byRecipient(map[string]filter.RecipientVerdict{
		"gone@example.com": {Action: filter.Reject, Reply: suppressed},
	})))
	s.enqueue(t, "", "ok@example.com", "gone@example.com")
	waitSink(t, s.sink, 1)
	waitUntil(t, "the queue empties", func() bool { return s.q.Depth() == 0 })
	if msgs := s.sink.Messages(); len(msgs) != 1 || strings.Join(msgs[0].To, ",") != "ok@example.com" {
		t.Errorf("sink got %+v, want only the delivery to ok@example.com", msgs)
	}
	if recs := s.logs.records(t, "post-queue filter verdict"); len(recs) != 1 {
		t.Errorf("verdict records %v, want one", recs)
	}
	if recs := s.logs.records(t, "notification queued"); len(recs) != 0 {
		t.Errorf("notification queued for the null sender: %v", recs)
	}
}

// TestPostQueueTempfailAndDiscard: a tempfailed recipient stays queued,
// a discarded one is dropped with a log record and no notification.
func TestPostQueueTempfailAndDiscard(t *testing.T) {
	s := newPostQueueSystem(t, postQueueChain(t, byRecipient(map[string]filter.RecipientVerdict{
		"later@example.com": {Action: filter.Tempfail},
		"trap@example.com":  {Action: filter.Discard},
	})))
	id := s.enqueue(t, "alice@example.org", "later@example.com", "trap@example.com", "ok@example.com")
	waitSink(t, s.sink, 1)
	ctx := context.Background()
	waitUntil(t, "two recipients done", func() bool {
		info, err := s.q.Show(ctx, id)
		if err != nil {
			return false
		}
		done := 0
		for _, r := range info.Recipients {
			if r.State == queue.StateDelivered {
				done++
			}
		}
		return done == 2
	})
	info, err := s.q.Show(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range info.Recipients {
		if r.Address == "later@example.com" && r.State == queue.StateDelivered {
			t.Errorf("tempfailed recipient delivered: %+v", r)
		}
	}
	if msgs := s.sink.Messages(); len(msgs) != 1 || strings.Join(msgs[0].To, ",") != "ok@example.com" {
		t.Errorf("sink got %+v, want only ok@example.com", msgs)
	}
	var discard bool
	for _, r := range s.logs.records(t, "post-queue filter verdict") {
		discard = discard || (r["to"] == "trap@example.com" && r["action"] == "discard")
	}
	if !discard {
		t.Error("no log record of the discarded recipient")
	}
}

// TestPostQueueQuarantineHolds: a quarantined message is held for an
// operator, whatever attempt the filter says it at (here also the second,
// the scanner busy at the first), and once released it is delivered: the
// filter's quarantine is not obeyed again.
func TestPostQueueQuarantineHolds(t *testing.T) {
	for _, tc := range []struct {
		name string
		busy int32 // attempts the scanner tempfails first
	}{{"first attempt", 0}, {"second attempt", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			f := filter.FilterFunc(func(_ context.Context, m *filter.Message) (filter.Verdict, error) {
				if calls.Add(1) <= tc.busy {
					return filter.Verdict{Action: filter.Tempfail, Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1}, "scanner busy")}, nil
				}
				return filter.Verdict{Action: filter.Quarantine}, nil
			})
			s := newPostQueueSystem(t, postQueueChain(t, f))
			id := s.enqueue(t, "alice@example.org", "ok@example.com")
			ctx := context.Background()
			waitUntil(t, "the message is held", func() bool {
				info, err := s.q.Show(ctx, id)
				return err == nil && info.State == queue.StateHeld
			})
			if n := s.sink.Count(); n != 0 {
				t.Fatalf("quarantined message delivered (%d messages)", n)
			}
			if err := s.q.Release(ctx, id); err != nil {
				t.Fatal(err)
			}
			waitSink(t, s.sink, 1)
		})
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPostQueueSuppressionAndQuotaDSN: the built-in suppression and
// limit filters, placed after the queue, bounce a suppressed recipient
// and a message over the daily quota with notifications to the sender.
func TestPostQueueSuppressionAndQuotaDSN(t *testing.T) {
	path := filepath.Join(t.TempDir(), "suppress.txt")
	if err := os.WriteFile(path, []byte("example.org bounce gone@example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := suppress.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sf, err := suppress.New(store)
	if err != nil {
		t.Fatal(err)
	}
	lf, err := limit.New(limit.WithDaily(1))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := filter.New(
		filter.WithFilter("suppress", sf, filter.AtStage(filter.StagePostQueue)),
		filter.WithFilter("limit", lf, filter.AtStage(filter.StagePostQueue)),
	)
	if err != nil {
		t.Fatal(err)
	}
	s := newPostQueueSystem(t, chain)
	s.enqueue(t, "alice@example.org", "ok@example.com", "gone@example.com")
	waitSink(t, s.sink, 2)                            // the delivery to ok@, the DSN for gone@
	s.enqueue(t, "bob@example.org", "ok@example.com") // the account's second message today
	msgs := waitSink(t, s.sink, 3)
	var statuses []string
	for _, m := range msgs {
		if m.From != "" {
			continue
		}
		_, parts := parseDSN(t, m.Data)
		if len(parts) != 3 {
			t.Fatalf("notification with %d parts", len(parts))
		}
		g := statusGroups(t, parts[1].body)[1]
		statuses = append(statuses, m.To[0]+" "+g.Get("Final-Recipient")+" "+g.Get("Status")+" "+g.Get("Diagnostic-Code"))
	}
	want := []string{
		"alice@example.org rfc822; gone@example.com 5.7.1 smtp; 550 5.7.1 gone@example.com is on the bounce list of this sending account",
		"bob@example.org rfc822; ok@example.com 5.7.1 smtp; 550 5.7.1 over account limit: daily quota of 1 messages",
	}
	if strings.Join(statuses, "\n") != strings.Join(want, "\n") {
		t.Errorf("notifications:\n%s\nwant:\n%s", strings.Join(statuses, "\n"), strings.Join(want, "\n"))
	}
	if recs := s.logs.records(t, "post-queue filter verdict"); len(recs) != 2 {
		t.Errorf("verdict records %v, want two", recs)
	}
}

// TestPostQueueParsingErrorDSN: a message the parse filter cannot parse
// after acceptance is bounced to its sender with the reason.
func TestPostQueueParsingErrorDSN(t *testing.T) {
	p, err := parse.New()
	if err != nil {
		t.Fatal(err)
	}
	s := newPostQueueSystem(t, postQueueChain(t, p))
	s.enqueueBody(t, "From: a@x.test\r\nnot a header\r\n\r\nbody\r\n", "alice@example.org", "ok@example.com")
	msgs := waitSink(t, s.sink, 1)
	if msgs[0].From != "" || msgs[0].To[0] != "alice@example.org" {
		t.Fatalf("sink got %+v, want only the notification to the sender", msgs[0])
	}
	_, parts := parseDSN(t, msgs[0].Data)
	g := statusGroups(t, parts[1].body)[1]
	if g.Get("Status") != "5.6.0" || !strings.Contains(g.Get("Diagnostic-Code"), "could not be parsed") {
		t.Errorf("Status %q, Diagnostic-Code %q; want 5.6.0, a parsing error", g.Get("Status"), g.Get("Diagnostic-Code"))
	}
}
