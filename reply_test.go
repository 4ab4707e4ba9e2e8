package sluice

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Outcome
	}{
		{"nil", nil, OutcomeDelivered},
		{"250", NewReply(250, EnhancedCode{2, 0, 0}, "ok"), OutcomeDelivered},
		{"451", NewReply(451, EnhancedCode{4, 3, 0}, "later"), OutcomeDeferred},
		{"354 where a final reply is due", NewReply(354, EnhancedCode{}, "go on"), OutcomeDeferred},
		{"550", NewReply(550, EnhancedCode{5, 1, 1}, "no such user"), OutcomeBounced},
		{"wrapped 554", fmt.Errorf("delivery: data: %w", NewReply(554, EnhancedCode{5, 6, 0}, "no")), OutcomeBounced},
		{"network error", errors.New("connection reset by peer"), OutcomeDeferred},
		{"timeout", context.DeadlineExceeded, OutcomeDeferred},
	}
	for _, tc := range tests {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestReplyError(t *testing.T) {
	tests := []struct {
		r    *Reply
		want string
	}{
		{NewReply(550, EnhancedCode{5, 7, 1}, "relay access denied"), "550 5.7.1 relay access denied"},
		{&Reply{Code: 421, Message: "busy\nlater"}, "421 busy later"},
		{&Reply{Code: 250}, "250"},
	}
	for _, tc := range tests {
		if got := tc.r.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestParseEnhancedCode(t *testing.T) {
	if c, err := ParseEnhancedCode("5.1.10"); err != nil || c != (EnhancedCode{5, 1, 10}) {
		t.Errorf("ParseEnhancedCode(5.1.10) = %v, %v", c, err)
	}
	for _, bad := range []string{"", "5.1", "3.0.0", "5.x.1", "5.1.1000", "5.1.1.1", "5..1", "5.1.", ".5.1.1"} {
		if _, err := ParseEnhancedCode(bad); err == nil {
			t.Errorf("ParseEnhancedCode(%q) succeeded, want error", bad)
		}
	}
	for _, c := range []EnhancedCode{{2, 0, 0}, {4, 7, 1}, {5, 999, 999}} {
		if got, err := ParseEnhancedCode(c.String()); err != nil || got != c {
			t.Errorf("ParseEnhancedCode(%q) = %v, %v, want %v", c.String(), got, err, c)
		}
	}
	if s := (EnhancedCode{5, 1, 10}).String(); s != "5.1.10" {
		t.Errorf("String() = %q, want 5.1.10", s)
	}
}

func TestNotifyOn(t *testing.T) {
	def := Recipient{Address: "a@example.com"}
	never := Recipient{Address: "a@example.com", Notify: []string{"NEVER"}}
	succ := Recipient{Address: "a@example.com", Notify: []string{"SUCCESS", "DELAY"}}
	tests := []struct {
		r    Recipient
		kind string
		want bool
	}{
		{def, "FAILURE", true}, {def, "DELAY", true}, {def, "SUCCESS", false},
		{never, "FAILURE", false}, {succ, "FAILURE", false}, {succ, "success", true},
	}
	for _, tc := range tests {
		if got := tc.r.NotifyOn(tc.kind); got != tc.want {
			t.Errorf("%v.NotifyOn(%s) = %v, want %v", tc.r.Notify, tc.kind, got, tc.want)
		}
	}
}
