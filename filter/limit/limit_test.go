package limit_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/limit"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func msg(st filter.Stage, id, from string) *filter.Message {
	return &filter.Message{Stage: st, Envelope: &sluice.Envelope{ID: id, From: from,
		Recipients: []sluice.Recipient{{Address: "r@example.com"}}}}
}

func check(t *testing.T, f *limit.Filter, m *filter.Message) filter.Verdict {
	t.Helper()
	v, err := f.Check(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRateBeforeTheQueue(t *testing.T) {
	c := &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	f, err := limit.New(limit.WithRate(1, 2), limit.WithClock(c.Now))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 3 {
		got = append(got, check(t, f, msg(filter.StageMail, "", "a@example.org")).Action.String())
	}
	got = append(got, check(t, f, msg(filter.StageMail, "", "b@other.org")).Action.String())
	c.Advance(time.Second)
	got = append(got, check(t, f, msg(filter.StageMail, "", "a@example.org")).Action.String())
	if want := "accept accept tempfail accept accept"; strings.Join(got, " ") != want {
		t.Errorf("actions %v, want %s (burst 2, then a token a second; accounts apart)", got, want)
	}
	v := check(t, f, msg(filter.StageMail, "", "a@example.org"))
	if v.Reply == nil || !strings.HasPrefix(v.Reply.Error(), "451 4.7.1 over account limit: rate") {
		t.Errorf("reply %v, want 451 4.7.1 over account limit", v.Reply)
	}
	for range 5 {
		if v := check(t, f, msg(filter.StageMail, "", "")); v.Action != filter.Accept {
			t.Fatalf("null sender limited: %+v", v)
		}
	}
}

func TestDailyQuota(t *testing.T) {
	c := &clock{now: time.Date(2026, 3, 1, 23, 0, 0, 0, time.UTC)}
	f, err := limit.New(limit.WithDaily(2), limit.WithClock(c.Now))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		stage  filter.Stage
		id     string
		action filter.Action
		reply  string
	}{
		{filter.StagePostQueue, "Q1", filter.Accept, ""},
		{filter.StagePostQueue, "Q1", filter.Accept, ""}, // a retry of Q1 is not counted again
		{filter.StagePostQueue, "Q2", filter.Accept, ""},
		{filter.StagePostQueue, "Q3", filter.Reject, "550 5.7.1 over account limit: daily quota of 2 messages"},
		{filter.StageMail, "", filter.Tempfail, "451 4.7.1 over account limit: daily quota of 2 messages"},
	}
	for i, tt := range tests {
		v := check(t, f, msg(tt.stage, tt.id, "a@example.org"))
		if v.Action != tt.action || (tt.reply != "" && v.Reply.Error() != tt.reply) {
			t.Errorf("message %d (%s %s): %v %v, want %v %s", i, tt.stage, tt.id, v.Action, v.Reply, tt.action, tt.reply)
		}
	}
	c.Advance(time.Hour) // a new UTC day
	if v := check(t, f, msg(filter.StagePostQueue, "Q4", "a@example.org")); v.Action != filter.Accept {
		t.Errorf("next day: %+v, want accept", v)
	}
}

func TestMemoryIsBounded(t *testing.T) {
	f, err := limit.New(limit.WithDaily(1), limit.WithMaxAccounts(10))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		check(t, f, msg(filter.StagePostQueue, fmt.Sprintf("Q%d", i), fmt.Sprintf("a@d%d.example", i)))
	}
	if n := f.Len(); n != 10 {
		t.Errorf("tracking %d accounts, want 10", n)
	}
	// The most recent account is still tracked and over its quota.
	if v := check(t, f, msg(filter.StagePostQueue, "new", "a@d99.example")); v.Action != filter.Reject {
		t.Errorf("recent account: %+v, want reject", v)
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		opts []limit.Option
		want string
	}{
		{nil, "neither a rate nor a daily quota"},
		{[]limit.Option{limit.WithRate(0, 1)}, "rate and burst must be positive"},
		{[]limit.Option{limit.WithRate(1, 0)}, "rate and burst must be positive"},
		{[]limit.Option{limit.WithDaily(-1)}, "must not be negative"},
		{[]limit.Option{limit.WithDaily(1), limit.WithMaxAccounts(0)}, "at least 1"},
	}
	for _, tt := range tests {
		if _, err := limit.New(tt.opts...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New error = %v, want one containing %q", err, tt.want)
		}
	}
}
