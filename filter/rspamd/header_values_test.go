package rspamd_test

import (
	"context"
	"testing"

	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/health"
)

// A client's HELO (go-smtp takes "EHLO a\x01b"), or a quoted local part,
// may hold a control character, which an HTTP header cannot carry. The
// filter leaves such a value out rather than send nothing: net/http
// refused the request, and the error counted against the healthy replica,
// so a client could eject every replica and open the chain's breaker,
// switching scanning off for everyone.
func TestControlBytesInTheEnvelopeDoNotFailTheReplica(t *testing.T) {
	t.Run("replica stays up", func(t *testing.T) {
		fake := newFake(t, 200, answerSkipped)
		p := newPool(t, []string{fake.addr()})
		f := newFilter(t, p)
		for range 3 {
			m := message(clean)
			m.Envelope.Client.Helo = "bad\x01helo"
			m.Envelope.From = "\"a\x02b\"@example.org"
			if _, err := f.Check(context.Background(), m); err != nil {
				t.Errorf("Check: %v", err)
			}
		}
		for _, e := range p.Endpoints() {
			if !e.Up {
				t.Errorf("healthy replica %s ejected by a client's HELO: %v", e.Addr, e.Err)
			}
		}
	})
	t.Run("breaker stays closed", func(t *testing.T) {
		fake := newFake(t, 200, answerReject)
		p := newPool(t, []string{fake.addr()}, health.WithEjectAfter(1000))
		f := newFilter(t, p)
		c, err := filter.New(filter.WithFilter("rspamd", f, filter.OnError(filter.PolicyAccept)))
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			m := message(clean)
			m.Envelope.Client.Helo = "bad\x7fhelo"
			c.Run(context.Background(), m)
		}
		if v := c.Run(context.Background(), message(clean)); v.Action != filter.Reject {
			t.Errorf("spam from a well-behaved client: %v %v, want reject", v.Action, v.Headers)
		}
	})
}
