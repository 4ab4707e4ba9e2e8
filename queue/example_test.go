package queue_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// printer is a Deliverer that prints what it is given and accepts it.
type printer struct{ done chan struct{} }

func (p printer) Deliver(ctx context.Context, msg *queue.Message) []queue.Result {
	rc, err := msg.Open()
	if err != nil {
		return nil // no results: every recipient is deferred
	}
	defer rc.Close()
	body, _ := io.ReadAll(rc)
	fmt.Printf("deliver to %s: %q\n", msg.Envelope.Recipients[0].Address, body)
	defer close(p.done)
	return []queue.Result{{Outcome: sluice.OutcomeDelivered}}
}

func Example() {
	dir, _ := os.MkdirTemp("", "spool")
	defer os.RemoveAll(dir)

	q, err := queue.New(dir)
	if err != nil {
		log.Fatal(err)
	}
	env := &sluice.Envelope{
		From:       "alice@example.org",
		Recipients: []sluice.Recipient{{Address: "bob@example.com"}},
	}
	// Enqueue returns once the message is on stable storage.
	if _, err := q.Enqueue(context.Background(), env, strings.NewReader("Subject: hi\r\n\r\nhello\r\n")); err != nil {
		log.Fatal(err)
	}
	p := printer{done: make(chan struct{})}
	go q.Serve(p)
	<-p.done
	q.Shutdown(context.Background())
	// Output: deliver to bob@example.com: "Subject: hi\r\n\r\nhello\r\n"
}
