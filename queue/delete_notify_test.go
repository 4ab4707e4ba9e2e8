package queue

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
)

type deleteNotifier struct {
	q       *Queue
	entered chan struct{}
	bounces atomic.Int32
	warns   atomic.Int32
}

func (d *deleteNotifier) Deliver(ctx context.Context, msg *Message) []Result {
	res := make([]Result, len(msg.Envelope.Recipients))
	if msg.Envelope.From == "" {
		for i := range res {
			res[i] = Result{Outcome: sluice.OutcomeDelivered}
		}
		return res
	}
	d.entered <- struct{}{}
	<-ctx.Done() // cancelled by Delete
	for i := range res {
		res[i] = Result{Outcome: sluice.OutcomeDeferred, Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 4, 2}, "cancelled")}
	}
	return res
}

func (d *deleteNotifier) enq(ctx context.Context, msg *Message) error {
	env := &sluice.Envelope{Recipients: []sluice.Recipient{{Address: msg.Envelope.From}}}
	_, err := d.q.Enqueue(ctx, env, strings.NewReader("dsn\r\n"))
	return err
}
func (d *deleteNotifier) Bounce(ctx context.Context, msg *Message, f []Failure) error {
	err := d.enq(ctx, msg)
	if err == nil {
		d.bounces.Add(1)
	}
	return err
}
func (d *deleteNotifier) NotifyDelay(ctx context.Context, msg *Message, f []Failure) error {
	err := d.enq(ctx, msg)
	if err == nil {
		d.warns.Add(1)
	}
	return err
}

// An operator's Delete of a message in flight sends its sender neither a
// bounce nor a delay warning (for deleted spam that would be backscatter).
// The attempt's context, which Delete cancels, used to stop them; since
// the notifications got a context of their own, the deletion itself does.
func TestDeleteInFlightSendsNoNotification(t *testing.T) {
	for _, tc := range []struct {
		name string
		age  time.Duration
		opts []Option
	}{
		{"expired", 2 * time.Hour, []Option{WithMaxAge(time.Hour)}},
		{"delay warning", 2 * time.Hour, []Option{WithMaxAge(48 * time.Hour), WithDelayWarning(time.Hour)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newTestQueue(t, t.TempDir(), append([]Option{WithAttemptTimeout(10 * time.Second)}, tc.opts...)...)
			d := &deleteNotifier{q: q, entered: make(chan struct{}, 10)}
			env := testEnvelope("r@example.com")
			env.Received = time.Now().Add(-tc.age)
			id, err := q.Enqueue(context.Background(), env, strings.NewReader("x\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			serve(t, q, d)
			<-d.entered
			if err := q.Delete(context.Background(), id); err != nil {
				t.Fatal(err)
			}
			// Notifications go out before the attempt ends, and the
			// deleted message is gone once it has ended.
			waitUntil(t, "the deleted message gone", func() bool {
				_, err := q.Show(context.Background(), id)
				return errors.Is(err, ErrNotFound)
			})
			if n, w := d.bounces.Load(), d.warns.Load(); n+w > 0 {
				t.Errorf("deleted message notified its sender: %d bounces, %d delay warnings", n, w)
			}
		})
	}
}
