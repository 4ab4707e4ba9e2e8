package filter_test

import (
	"context"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

func testMessage() *filter.Message {
	body := "Subject: test\r\n\r\nhello\r\n"
	return &filter.Message{
		Envelope: &sluice.Envelope{From: "a@example.org", Recipients: []sluice.Recipient{{Address: "b@example.com"}}},
		Body:     strings.NewReader(body),
		Size:     int64(len(body)),
	}
}

// returns is a filter that answers v, err and counts its calls.
func returns(v filter.Verdict, err error, calls *int) filter.Filter {
	return filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
		if calls != nil {
			*calls++
		}
		return v, err
	})
}

// hang is a filter that ignores its context and blocks until the test ends.
func hang(t *testing.T) filter.Filter {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
		<-release
		return filter.Verdict{Action: filter.Reject}, nil
	})
}

func hdr(name, value string) filter.Header { return filter.Header{Name: name, Value: value} }

func reply(code int, e sluice.EnhancedCode, msg string) *sluice.Reply {
	return &sluice.Reply{Code: code, Enhanced: e, Message: msg}
}

func TestRunCombinesVerdicts(t *testing.T) {
	accept := filter.Verdict{}
	tagA := filter.Verdict{Headers: []filter.Header{hdr("X-A", "1")}}
	tagB := filter.Verdict{Headers: []filter.Header{hdr("X-B", "2")}}
	reject := filter.Verdict{Action: filter.Reject, Headers: []filter.Header{hdr("X-R", "r")}}
	custom := filter.Verdict{Action: filter.Reject, Reply: reply(554, sluice.EnhancedCode{5, 7, 0}, "spam")}
	wrongClass := filter.Verdict{Action: filter.Tempfail, Reply: reply(550, sluice.EnhancedCode{5, 7, 1}, "no")}
	tempfail := filter.Verdict{Action: filter.Tempfail}
	discard := filter.Verdict{Action: filter.Discard}
	quarantine := filter.Verdict{Action: filter.Quarantine, Headers: []filter.Header{hdr("X-Q", "q")}}

	tests := []struct {
		name      string
		verdicts  []filter.Verdict
		want      filter.Verdict
		wantCalls []int
	}{
		{"empty chain", nil, filter.Verdict{}, nil},
		{"all accept", []filter.Verdict{accept, accept}, filter.Verdict{}, []int{1, 1}},
		{"headers accumulate in order", []filter.Verdict{tagA, accept, tagB},
			filter.Verdict{Headers: []filter.Header{hdr("X-A", "1"), hdr("X-B", "2")}}, []int{1, 1, 1}},
		{"reject stops the chain and gets the default reply", []filter.Verdict{tagA, reject, tagB},
			filter.Verdict{Action: filter.Reject, Reply: reply(550, sluice.EnhancedCode{5, 7, 1}, "message rejected"),
				Headers: []filter.Header{hdr("X-A", "1"), hdr("X-R", "r")}}, []int{1, 1, 0}},
		{"a filter's own reply is kept", []filter.Verdict{custom, tagA},
			filter.Verdict{Action: filter.Reject, Reply: reply(554, sluice.EnhancedCode{5, 7, 0}, "spam")}, []int{1, 0}},
		{"tempfail gets 451 4.7.1", []filter.Verdict{tempfail, tagA},
			filter.Verdict{Action: filter.Tempfail, Reply: reply(451, sluice.EnhancedCode{4, 7, 1}, "message deferred, try again later")}, []int{1, 0}},
		{"a reply of the wrong class is replaced", []filter.Verdict{wrongClass},
			filter.Verdict{Action: filter.Tempfail, Reply: reply(451, sluice.EnhancedCode{4, 7, 1}, "message deferred, try again later")}, []int{1}},
		{"discard stops the chain", []filter.Verdict{tagA, discard, reject},
			filter.Verdict{Action: filter.Discard, Reply: reply(250, sluice.EnhancedCode{2, 0, 0}, "discarded"),
				Headers: []filter.Header{hdr("X-A", "1")}}, []int{1, 1, 0}},
		{"quarantine stops the chain with a 250", []filter.Verdict{tagA, quarantine, reject},
			filter.Verdict{Action: filter.Quarantine, Reply: reply(250, sluice.EnhancedCode{2, 0, 0}, "held for review"),
				Headers: []filter.Header{hdr("X-A", "1"), hdr("X-Q", "q")}}, []int{1, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := make([]int, len(tt.verdicts))
			var opts []filter.Option
			for i, v := range tt.verdicts {
				opts = append(opts, filter.WithFilter(string(rune('a'+i)), returns(v, nil, &calls[i])))
			}
			c, err := filter.New(opts...)
			if err != nil {
				t.Fatal(err)
			}
			got := c.Run(context.Background(), testMessage())
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Run = %+v, want %+v", got, tt.want)
			}
			if len(calls) > 0 && !reflect.DeepEqual(calls, tt.wantCalls) {
				t.Errorf("calls = %v, want %v", calls, tt.wantCalls)
			}
		})
	}
}

func TestRunNilChainAccepts(t *testing.T) {
	var c *filter.Chain
	if got := c.Run(context.Background(), testMessage()); !reflect.DeepEqual(got, filter.Verdict{}) {
		t.Errorf("nil Chain Run = %+v, want accept", got)
	}
	if c.Len() != 0 {
		t.Errorf("nil Chain Len = %d, want 0", c.Len())
	}
}

func TestRunFailurePolicies(t *testing.T) {
	boom := errors.New("connection refused")
	panics := filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
		panic("filter bug")
	})
	honoursCtx := filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
		<-ctx.Done()
		return filter.Verdict{}, ctx.Err()
	})
	tempfail := filter.Verdict{Action: filter.Tempfail,
		Reply: reply(451, sluice.EnhancedCode{4, 7, 1}, "filter f unavailable, try again later")}
	reject := filter.Verdict{Action: filter.Reject,
		Reply: reply(554, sluice.EnhancedCode{5, 7, 1}, "filter f failed, message rejected")}

	tests := []struct {
		name string
		f    filter.Filter
		opts []filter.FilterOption
		want filter.Verdict
	}{
		{"error defaults to tempfail", returns(filter.Verdict{}, boom, nil), nil, tempfail},
		{"error with PolicyReject", returns(filter.Verdict{}, boom, nil),
			[]filter.FilterOption{filter.OnError(filter.PolicyReject)}, reject},
		{"error with PolicyAccept tags", returns(filter.Verdict{}, boom, nil),
			[]filter.FilterOption{filter.OnError(filter.PolicyAccept)},
			filter.Verdict{Headers: []filter.Header{hdr("X-Sluice-Filter", "f error")}}},
		{"error ignores the verdict returned with it", returns(filter.Verdict{Action: filter.Discard}, boom, nil),
			[]filter.FilterOption{filter.OnError(filter.PolicyAccept)},
			filter.Verdict{Headers: []filter.Header{hdr("X-Sluice-Filter", "f error")}}},
		{"invalid action is an error", returns(filter.Verdict{Action: 42}, nil, nil),
			[]filter.FilterOption{filter.OnError(filter.PolicyReject)}, reject},
		{"panic is an error", panics, []filter.FilterOption{filter.OnError(filter.PolicyAccept)},
			filter.Verdict{Headers: []filter.Header{hdr("X-Sluice-Filter", "f error")}}},
		{"deadline honoured is a timeout", honoursCtx,
			[]filter.FilterOption{filter.Timeout(20 * time.Millisecond), filter.OnError(filter.PolicyReject), filter.OnTimeout(filter.PolicyAccept)},
			filter.Verdict{Headers: []filter.Header{hdr("X-Sluice-Filter", "f timeout")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := filter.New(filter.WithFilter("f", tt.f, tt.opts...))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Run(context.Background(), testMessage()); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Run = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRunAbandonsFilterThatIgnoresContext(t *testing.T) {
	const timeout = 100 * time.Millisecond
	tests := []struct {
		policy filter.Policy
		want   filter.Verdict
	}{
		{filter.PolicyTempfail, filter.Verdict{Action: filter.Tempfail,
			Reply: reply(451, sluice.EnhancedCode{4, 7, 1}, "filter slow unavailable, try again later")}},
		{filter.PolicyReject, filter.Verdict{Action: filter.Reject,
			Reply: reply(554, sluice.EnhancedCode{5, 7, 1}, "filter slow failed, message rejected")}},
		{filter.PolicyAccept, filter.Verdict{Headers: []filter.Header{hdr("X-Sluice-Filter", "slow timeout"), hdr("X-After", "yes")}}},
	}
	for _, tt := range tests {
		t.Run(tt.policy.String(), func(t *testing.T) {
			c, err := filter.New(
				filter.WithFilter("slow", hang(t), filter.Timeout(timeout), filter.OnTimeout(tt.policy)),
				filter.WithFilter("after", returns(filter.Verdict{Headers: []filter.Header{hdr("X-After", "yes")}}, nil, nil)),
			)
			if err != nil {
				t.Fatal(err)
			}
			var got filter.Verdict
			elapsed := bestOf(3, timeout+50*time.Millisecond, func() time.Duration {
				start := time.Now()
				got = c.Run(context.Background(), testMessage())
				return time.Since(start)
			})
			if elapsed < timeout || elapsed > timeout+50*time.Millisecond {
				t.Errorf("Run took %v, want between %v and %v", elapsed, timeout, timeout+50*time.Millisecond)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Run = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRunStopsWhenCallerContextEnds(t *testing.T) {
	c, err := filter.New(filter.WithFilter("slow", hang(t), filter.Timeout(time.Minute), filter.OnTimeout(filter.PolicyAccept)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	got := c.Run(ctx, testMessage())
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Run took %v after its context ended", elapsed)
	}
	want := filter.Verdict{Action: filter.Tempfail, Reply: reply(451, sluice.EnhancedCode{4, 3, 0}, "filtering interrupted, try again later")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Run = %+v, want %+v", got, want)
	}
}

func TestNewValidates(t *testing.T) {
	ok := returns(filter.Verdict{}, nil, nil)
	tests := []struct {
		name string
		opts []filter.Option
		want string // substring of the error; "" for success
	}{
		{"no filters", nil, ""},
		{"two filters", []filter.Option{filter.WithFilter("a", ok), filter.WithFilter("b", ok)}, ""},
		{"duplicate name", []filter.Option{filter.WithFilter("a", ok), filter.WithFilter("a", ok)}, `duplicate filter name "a"`},
		{"nil filter", []filter.Option{filter.WithFilter("a", nil)}, "a: nil filter"},
		{"empty name", []filter.Option{filter.WithFilter("", ok)}, "empty filter name"},
		{"zero timeout", []filter.Option{filter.WithFilter("a", ok, filter.Timeout(0))}, "timeout 0s must be positive"},
		{"bad policy", []filter.Option{filter.WithFilter("a", ok, filter.OnError(9))}, "unknown error policy"},
		{"nil logger", []filter.Option{filter.WithLogger(nil)}, "nil logger"},
		{"bad stage", []filter.Option{filter.WithFilter("a", ok, filter.AtStage(9))}, "unknown stage"},
		{"negative concurrency", []filter.Option{filter.WithFilter("a", ok, filter.Concurrency(-1))}, "concurrency -1"},
		{"negative breaker cooldown", []filter.Option{filter.WithFilter("a", ok, filter.WithBreaker(filter.Breaker{Failures: 1, Cooldown: -time.Second}))}, "must not be negative"},
		{"breaker with default times", []filter.Option{filter.WithFilter("a", ok, filter.WithBreaker(filter.Breaker{Failures: 1}))}, ""},
		{"breaker off", []filter.Option{filter.WithFilter("a", ok, filter.WithBreaker(filter.Breaker{}))}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := filter.New(tt.opts...)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.want == "" && c.Len() != len(tt.opts):
				t.Errorf("Len = %d, want %d", c.Len(), len(tt.opts))
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("New error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	tests := []struct{ got, want string }{
		{filter.Accept.String(), "accept"},
		{filter.Reject.String(), "reject"},
		{filter.Tempfail.String(), "tempfail"},
		{filter.Discard.String(), "discard"},
		{filter.Action(7).String(), "Action(7)"},
		{filter.PolicyTempfail.String(), "tempfail"},
		{filter.PolicyAccept.String(), "accept"},
		{filter.PolicyReject.String(), "reject"},
		{filter.StageConnect.String(), "connect"},
		{filter.StageMail.String(), "mail"},
		{filter.StageRcpt.String(), "rcpt"},
		{filter.StageData.String(), "data"},
		{filter.StagePostQueue.String(), "postqueue"},
		{filter.Quarantine.String(), "quarantine"},
		{filter.PolicyQuarantine.String(), "quarantine"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// TestRunStageRunsOnlyItsFilters: each stage runs the filters placed at
// it, in order; Run is the end-of-DATA stage, the default.
func TestRunStageRunsOnlyItsFilters(t *testing.T) {
	var mail, rcpt, data int
	c, err := filter.New(
		filter.WithFilter("mail", returns(filter.Verdict{Headers: []filter.Header{hdr("X-Mail", "1")}}, nil, &mail), filter.AtStage(filter.StageMail)),
		filter.WithFilter("rcpt", returns(filter.Verdict{Action: filter.Reject}, nil, &rcpt), filter.AtStage(filter.StageRcpt)),
		filter.WithFilter("data", returns(filter.Verdict{}, nil, &data)),
	)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Has(filter.StageMail) || c.Has(filter.StageConnect) {
		t.Errorf("Has(mail) = %v, Has(connect) = %v; want true, false", c.Has(filter.StageMail), c.Has(filter.StageConnect))
	}
	ctx := context.Background()
	if v := c.RunStage(ctx, filter.StageConnect, testMessage()); v.Action != filter.Accept || mail+rcpt+data != 0 {
		t.Errorf("connect stage: %+v, calls %d %d %d; want accept and no calls", v, mail, rcpt, data)
	}
	if v := c.RunStage(ctx, filter.StageMail, testMessage()); v.Action != filter.Accept || len(v.Headers) != 1 || mail != 1 {
		t.Errorf("mail stage: %+v, calls %d", v, mail)
	}
	if v := c.RunStage(ctx, filter.StageRcpt, testMessage()); v.Action != filter.Reject || v.Reply.Code != 550 || rcpt != 1 {
		t.Errorf("rcpt stage: %+v, calls %d", v, rcpt)
	}
	if v := c.Run(ctx, testMessage()); v.Action != filter.Accept || data != 1 || mail != 1 || rcpt != 1 {
		t.Errorf("Run: %+v, calls %d %d %d; want only the data filter", v, mail, rcpt, data)
	}
	if got, _ := io.ReadAll((&filter.Message{}).Reader()); len(got) != 0 {
		t.Errorf("Reader of a message without a body read %q", got)
	}
}
