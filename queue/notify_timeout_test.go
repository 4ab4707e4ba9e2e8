package queue

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
)

// timeoutBouncer: attempts to example.com run until the attempt's deadline
// (a tarpit); Bounce queues a DSN into the same queue with the ctx it is
// given, exactly as delivery.Agent.notify does (a.dsn.Enqueue(ctx, ...)).
type timeoutBouncer struct {
	q        *Queue
	bounceOK atomic.Int32
	bounceKO atomic.Int32
}

func (d *timeoutBouncer) Deliver(ctx context.Context, msg *Message) []Result {
	res := make([]Result, len(msg.Envelope.Recipients))
	for i := range res {
		res[i] = Result{Outcome: sluice.OutcomeDelivered}
	}
	if msg.Envelope.From == "" { // the DSN itself
		return res
	}
	<-ctx.Done() // next hop stalls until the attempt times out
	for i := range res {
		res[i] = Result{Outcome: sluice.OutcomeDeferred, Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 4, 2}, "timeout")}
	}
	return res
}

func (d *timeoutBouncer) Bounce(ctx context.Context, msg *Message, failed []Failure) error {
	env := &sluice.Envelope{Recipients: []sluice.Recipient{{Address: msg.Envelope.From}}}
	_, err := d.q.Enqueue(ctx, env, strings.NewReader("dsn\r\n"))
	if err != nil {
		d.bounceKO.Add(1)
	} else {
		d.bounceOK.Add(1)
	}
	return err
}

// An expired message whose attempts run into the attempt timeout (a next
// hop that stalls) is bounced all the same: the Bouncer gets a context of
// its own, not the attempt's, which is over by then (it got that one, and
// the DSN's Enqueue failed at every attempt).
func TestExpiredMessageIsBouncedAfterAnAttemptTimesOut(t *testing.T) {
	q := newTestQueue(t, t.TempDir(), WithAttemptTimeout(30*time.Millisecond), WithMaxAge(time.Hour))
	d := &timeoutBouncer{q: q}
	env := testEnvelope("r@example.com")
	env.Received = time.Now().Add(-2 * time.Hour) // past its lifetime
	if _, err := q.Enqueue(context.Background(), env, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	serve(t, q, d)
	waitUntil(t, "a bounce of the expired message queued", func() bool { return d.bounceOK.Load() > 0 })
}
