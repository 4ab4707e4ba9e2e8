package delivery_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/queue"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

// discardDSN is an Enqueuer that drops notifications.
type discardDSN struct{}

func (discardDSN) Enqueue(context.Context, *sluice.Envelope, io.Reader) (string, error) {
	return "", nil
}

func Example() {
	relay, err := smtptest.NewSink()
	if err != nil {
		panic(err)
	}
	defer relay.Close()

	agent, err := delivery.New(discardDSN{},
		delivery.WithHostname("mta.example.org"),
		delivery.WithSmarthost(relay.Addr()),
	)
	if err != nil {
		panic(err)
	}

	body := "Subject: hello\r\n\r\nHi Bob.\r\n"
	env := &sluice.Envelope{
		ID:         "Q1",
		From:       "alice@example.org",
		Recipients: []sluice.Recipient{{Address: "bob@example.com"}},
		Received:   time.Now(),
	}
	msg := queue.NewMessage(env, int64(len(body)), func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(body)), nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, r := range agent.Deliver(ctx, msg) {
		fmt.Println(r.Outcome)
	}
	m := relay.Messages()[0]
	fmt.Println(m.From, m.To, m.Helo)
	// Output:
	// delivered
	// alice@example.org [bob@example.com] mta.example.org
}
