package suppress

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

// List is a suppression list of an account.
type List string

// The lists.
const (
	Bounce      List = "bounce"      // addresses that bounced before
	Unsubscribe List = "unsubscribe" // addresses that asked for no more mail
)

// Store looks up whether address is on one of account's lists. Lookup
// returns the list it is on and true, or false. account and address are
// lower case. Implementations must be safe for concurrent use and honour
// ctx.
type Store interface {
	Lookup(ctx context.Context, account, address string) (List, bool, error)
}

// Filter is the suppression filter. Create one with [New].
type Filter struct {
	store Store
}

var _ filter.Filter = (*Filter)(nil)

// New returns a filter that refuses recipients on the lists of store.
func New(store Store) (*Filter, error) {
	if store == nil {
		return nil, errors.New("suppress: nil store")
	}
	return &Filter{store: store}, nil
}

// Check refuses the recipients of m that are on the sending account's
// lists: at StageRcpt the recipient being added, elsewhere every
// recipient, each with its own verdict.
func (f *Filter) Check(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	account := filter.Account(m.Envelope)
	rcpts := m.Envelope.Recipients
	if account == "" || len(rcpts) == 0 {
		return filter.Verdict{}, nil
	}
	if m.Stage == filter.StageRcpt {
		rcpts = rcpts[len(rcpts)-1:]
	}
	var v filter.Verdict
	for _, r := range rcpts {
		list, ok, err := f.store.Lookup(ctx, account, strings.ToLower(r.Address))
		if err != nil {
			return filter.Verdict{}, fmt.Errorf("suppress: lookup %s for %s: %w", r.Address, account, err)
		}
		if ok {
			v.Recipients = append(v.Recipients, filter.RecipientVerdict{Address: r.Address, Action: filter.Reject, Reply: reply(list, r.Address)})
		}
	}
	switch {
	case m.Stage == filter.StageRcpt && len(v.Recipients) == 1:
		return filter.Verdict{Action: filter.Reject, Reply: v.Recipients[0].Reply}, nil
	case m.Stage != filter.StagePostQueue && len(v.Recipients) == len(rcpts):
		return filter.Verdict{Action: filter.Reject, Reply: v.Recipients[0].Reply}, nil
	case m.Stage != filter.StagePostQueue:
		return filter.Verdict{}, nil // SMTP cannot refuse some recipients after DATA
	}
	return v, nil
}

// reply is the refusal of address on list: 550 5.7.1, "delivery not
// authorized" (RFC 3463), naming the list as seed 003's errors do.
func reply(list List, address string) *sluice.Reply {
	return sluice.NewReply(550, sluice.EnhancedCode{5, 7, 1}, "%s is on the %s list of this sending account", address, list)
}
