package limit_test

import (
	"context"
	"fmt"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/limit"
)

func Example() {
	// Each sending account: 10 messages a second (bursts of 20), 2 a day.
	l, err := limit.New(limit.WithRate(10, 20), limit.WithDaily(2))
	if err != nil {
		fmt.Println(err)
		return
	}
	chain, _ := filter.New(filter.WithFilter("limit", l, filter.AtStage(filter.StageMail)))
	env := &sluice.Envelope{From: "news@example.org"}
	for range 3 {
		v := chain.RunStage(context.Background(), filter.StageMail, &filter.Message{Envelope: env})
		fmt.Println(v.Action, v.Reply)
	}
	// Output:
	// accept <nil>
	// accept <nil>
	// tempfail 451 4.7.1 over account limit: daily quota of 2 messages
}
