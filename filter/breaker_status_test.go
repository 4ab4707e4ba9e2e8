package filter_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice/filter"
)

func TestChainStatusShowsBreakers(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	failing := filter.FilterFunc(func(context.Context, *filter.Message) (filter.Verdict, error) {
		return filter.Verdict{}, errors.New("down")
	})
	c, err := filter.New(filter.WithClock(clock),
		filter.WithFilter("plain", filter.FilterFunc(func(context.Context, *filter.Message) (filter.Verdict, error) { return filter.Verdict{}, nil }), filter.WithBreaker(filter.Breaker{})),
		filter.WithFilter("scanner", failing, filter.OnError(filter.PolicyAccept),
			filter.WithBreaker(filter.Breaker{Failures: 2, Window: time.Minute, Cooldown: time.Minute})))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Status(); len(got) != 2 || got[0].Name != "plain" || got[0].Breaker != "" || got[1].Breaker != "closed" {
		t.Fatalf("status at start: %+v", got)
	}
	for range 2 {
		c.Run(context.Background(), &filter.Message{})
	}
	got := c.Status()
	if got[1].Breaker != "open" || !got[1].OpenedAt.Equal(now) {
		t.Errorf("status after 2 failures: %+v, want scanner open since %v", got[1], now)
	}
}
