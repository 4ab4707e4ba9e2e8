package delivery_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

func TestDestinationConcurrencyCap(t *testing.T) {
	const limit, messages = 2, 8
	// Sessions hold the end of DATA until limit of them are inside at
	// once, so the test sees the cap reached, not merely respected.
	var inside atomic.Int32
	full := make(chan struct{})
	var once sync.Once
	sink := newSink(t, smtptest.WithDataFunc(func(*smtptest.Message) error {
		if inside.Add(1) >= limit {
			once.Do(func() { close(full) })
		}
		defer inside.Add(-1)
		select {
		case <-full:
			return nil
		case <-time.After(5 * time.Second):
			return sluice.NewReply(451, sluice.EnhancedCode{4, 0, 0}, "cap never reached")
		}
	}))
	srv := newDNS(t, "cap.test. 60 IN A 127.0.0.1")
	slow := fast
	slow.Data = 10 * time.Second
	e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(port(t, sink.Addr())),
		delivery.WithTimeouts(slow), delivery.WithDestinationConcurrency(limit))
	var wg sync.WaitGroup
	outcomes := make([]sluice.Outcome, messages)
	for i := range messages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			outcomes[i] = e.agent.Deliver(ctx, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@cap.test"))[0].Outcome
		}()
	}
	wg.Wait()
	for i, o := range outcomes {
		if o != sluice.OutcomeDelivered {
			t.Errorf("message %d: %v, want delivered", i, o)
		}
	}
	if got := sink.MaxConcurrent(); got != limit {
		t.Errorf("sink saw %d concurrent sessions, want exactly the cap %d", got, limit)
	}
}

func TestDestinationConcurrencyWaitEndsAtDeadline(t *testing.T) {
	release := make(chan struct{})
	sink := newSink(t, smtptest.WithDataFunc(func(*smtptest.Message) error {
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
		return nil
	}))
	t.Cleanup(func() { close(release) })
	slow := fast
	slow.Data = 10 * time.Second
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()), delivery.WithTimeouts(slow), delivery.WithDestinationConcurrency(1))
	started := make(chan struct{})
	go func() {
		close(started)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.agent.Deliver(ctx, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))
	}()
	<-started
	// Wait for the first session to hold the only slot.
	deadline := time.Now().Add(5 * time.Second)
	for sink.MaxConcurrent() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r := e.agent.Deliver(ctx, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "c@y.test"))[0]
	if r.Outcome != sluice.OutcomeDeferred || r.Reply == nil || r.Reply.Enhanced.String() != "4.4.5" {
		t.Errorf("got %v %v, want deferred 4.4.5 while the only session is busy", r.Outcome, r.Reply)
	}
	if got := sink.MaxConcurrent(); got != 1 {
		t.Errorf("sink saw %d concurrent sessions, want 1", got)
	}
}
