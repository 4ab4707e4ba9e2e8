package filter_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

func Example() {
	// A filter that tags every message, and one that rejects a word.
	tag := filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
		return filter.Verdict{Headers: []filter.Header{{Name: "X-Checked", Value: "yes"}}}, nil
	})
	words := filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
		buf := make([]byte, m.Size)
		if _, err := m.Body.ReadAt(buf, 0); err != nil {
			return filter.Verdict{}, err
		}
		if strings.Contains(string(buf), "viagra") {
			return filter.Verdict{Action: filter.Reject}, nil
		}
		return filter.Verdict{}, nil
	})
	chain, err := filter.New(
		filter.WithFilter("tag", tag),
		filter.WithFilter("words", words, filter.Timeout(2*time.Second), filter.OnError(filter.PolicyAccept)),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, body := range []string{"Subject: hi\r\n\r\nhello\r\n", "Subject: buy\r\n\r\nviagra\r\n"} {
		m := &filter.Message{
			Envelope: &sluice.Envelope{From: "a@example.org", Recipients: []sluice.Recipient{{Address: "b@example.com"}}},
			Body:     strings.NewReader(body),
			Size:     int64(len(body)),
		}
		v := chain.Run(context.Background(), m)
		fmt.Println(v.Action, v.Reply, v.Headers)
	}
	// Output:
	// accept <nil> [{X-Checked yes}]
	// reject 550 5.7.1 message rejected [{X-Checked yes}]
}

// Independent checks run at the same time as a Group; a flaky one gets a
// concurrency cap and a circuit breaker, and is skipped (tagged) while
// its breaker is open.
func ExampleGroup() {
	tag := func(name string) filter.Filter {
		return filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
			return filter.Verdict{Headers: []filter.Header{{Name: "X-" + name, Value: "ok"}}}, nil
		})
	}
	chain, err := filter.New(
		filter.WithFilter("dnsbl", tag("Dnsbl"), filter.Group("scan")),
		filter.WithFilter("spam", tag("Spam"), filter.Group("scan"),
			filter.Timeout(5*time.Second), filter.Concurrency(8),
			filter.OnTimeout(filter.PolicyAccept), filter.OnError(filter.PolicyAccept),
			filter.WithBreaker(filter.Breaker{Failures: 5, Window: time.Minute, Cooldown: 30 * time.Second})),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	m := &filter.Message{Envelope: &sluice.Envelope{From: "a@example.org", Recipients: []sluice.Recipient{{Address: "b@example.com"}}}}
	// Headers come in the order the filters were added, whichever finished first.
	fmt.Println(chain.Run(context.Background(), m).Headers)
	// Output:
	// [{X-Dnsbl ok} {X-Spam ok}]
}
