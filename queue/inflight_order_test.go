package queue

import (
	"context"
	"testing"
	"time"
)

// Operations on a message in flight apply, when its attempt ends, in the
// order they were asked for, as they would on an idle message: Requeue
// then Hold leaves it held (the Hold was lost, and the Requeue marked it
// released, which would let a post-queue quarantine be ignored), and Hold
// then Requeue leaves it due.
func TestInFlightOperationsKeepTheirOrder(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ops      []func(*Queue, context.Context, string) error
		wantHeld bool
	}{
		{"requeue then hold", []func(*Queue, context.Context, string) error{(*Queue).Requeue, (*Queue).Hold}, true},
		{"bounce then hold", []func(*Queue, context.Context, string) error{(*Queue).Bounce, (*Queue).Hold}, true},
		{"hold then requeue", []func(*Queue, context.Context, string) error{(*Queue).Hold, (*Queue).Requeue}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newTestQueue(t, t.TempDir(), WithRetry(time.Hour, time.Hour))
			d := newBlockingDeliverer()
			d.deliverer = newDeliverer(deferUntil(nil))
			id := enqueue(t, q, "s@example.org", "r@block.example")
			serve(t, q, d)
			<-d.entered
			ctx := context.Background()
			for _, op := range tc.ops {
				if err := op(q, ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			d.unblock <- struct{}{}
			deadline := time.After(5 * time.Second)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-d.entered: // tried again
					close(d.unblock)
					if tc.wantHeld {
						t.Fatal("the message was tried again; want it held")
					}
					return
				case <-tick.C:
					info, err := q.Show(ctx, id)
					if err != nil || info.State != StateHeld {
						continue
					}
					if !tc.wantHeld {
						t.Fatal("the message is held; want it tried again")
					}
					if _, st, _, _ := q.read(id); st.Released {
						t.Error("marked released, though nobody released it")
					}
					return
				case <-deadline:
					t.Fatal("neither held nor tried again within 5s")
				}
			}
		})
	}
}
