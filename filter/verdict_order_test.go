package filter_test

import (
	"context"
	"testing"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

// A whole-message verdict overrides per-recipient ones, a recipient's
// Quarantine too: it turned a Reject into a message accepted and held.
func TestWholeMessageVerdictOverridesRecipientQuarantine(t *testing.T) {
	v := filter.Verdict{Action: filter.Reject,
		Reply:      sluice.NewReply(550, sluice.EnhancedCode{5, 7, 1}, "virus"),
		Recipients: []filter.RecipientVerdict{{Address: "b@example.com", Action: filter.Quarantine}}}
	for _, st := range []filter.Stage{filter.StageData, filter.StagePostQueue} {
		c, err := filter.New(filter.WithFilter("av", returns(v, nil, nil), filter.AtStage(st)))
		if err != nil {
			t.Fatal(err)
		}
		got := c.RunStage(context.Background(), st, testMessage())
		if got.Action != filter.Reject {
			t.Errorf("%v: action %v reply %v, want reject 550", st, got.Action, got.Reply)
		}
	}
}
