package delivery_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
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

// Routes send one domain through a relay pool and pin another domain's
// mail to a source address; SetRoutes changes them for queued mail too.
func ExampleNewRoutes() {
	relay, err := smtptest.NewSink()
	if err != nil {
		panic(err)
	}
	defer relay.Close()

	routes, err := delivery.NewRoutes(
		[]delivery.Pool{{Name: "relays", Hosts: []delivery.PoolHost{{Addr: relay.Addr()}}}},
		[]delivery.Route{
			{Domain: ".example.com", Pool: "relays",
				Egress: delivery.Egress{SourceIP: netip.MustParseAddr("127.0.0.2"), Helo: "out2.example.org"}},
			{Domain: "*", Pool: "relays"},
		})
	if err != nil {
		panic(err)
	}
	agent, err := delivery.New(discardDSN{}, delivery.WithHostname("mta.example.org"), delivery.WithRoutes(routes))
	if err != nil {
		panic(err)
	}
	defer agent.Close()

	body := "Subject: hello\r\n\r\nHi.\r\n"
	for _, to := range []string{"bob@mail.example.com", "carol@example.net"} {
		env := &sluice.Envelope{ID: "Q1", From: "alice@example.org", Recipients: []sluice.Recipient{{Address: to}}}
		msg := queue.NewMessage(env, int64(len(body)), func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader(body)), nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		agent.Deliver(ctx, msg)
		cancel()
	}
	for _, m := range relay.Messages() {
		host, _, _ := net.SplitHostPort(m.RemoteAddr)
		fmt.Println(m.To[0], "from", host, "as", m.Helo)
	}
	// Output:
	// bob@mail.example.com from 127.0.0.2 as out2.example.org
	// carol@example.net from 127.0.0.1 as mta.example.org
}
