package admin_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicemta/sluice/admin"
	"github.com/sluicemta/sluice/delivery"
)

func TestRatesLastHour(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 30, 10, 0, time.UTC)
	r := admin.NewRates(func() time.Time { return now })
	rec := func(result string) { r.Record(context.Background(), &delivery.Record{Result: result}) }
	rec("delivered")
	rec("delivered")
	rec("deferred")
	now = now.Add(90 * time.Second) // 12:31:40
	rec("bounced")
	now = now.Add(time.Hour) // 13:31:40: the 12:31 bucket is an hour old
	rec("delivered")
	h := r.LastHour()
	if len(h) != 60 || !h[59].Start.Equal(time.Date(2026, 11, 1, 13, 31, 0, 0, time.UTC)) || !h[0].Start.Equal(time.Date(2026, 11, 1, 12, 32, 0, 0, time.UTC)) {
		t.Fatalf("LastHour spans %v to %v (%d minutes), want 12:32 to 13:31", h[0].Start, h[len(h)-1].Start, len(h))
	}
	if h[59].Delivered != 1 || h[59].Bounced != 0 {
		t.Errorf("this minute: %+v, want 1 delivered and the hour-old bounce gone", h[59])
	}
	total := 0
	for _, m := range h[:59] {
		total += m.Delivered + m.Deferred + m.Bounced
	}
	if total != 0 {
		t.Errorf("%d attempts in the earlier minutes, want 0 (all older than an hour)", total)
	}
}
