package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/sluicemta/sluice/health"
)

func ExampleWatcher() {
	depth := 0 // in a program: the queue's Depth method
	w, err := health.NewWatcher([]health.Rule{
		{Name: "queue_depth", Sample: health.QueueDepth(func() int { return depth }), Threshold: 1000, Periods: 3},
		{Name: "spool_free", Sample: health.DiskFreeRatio("."), Threshold: 0.01, Below: true, Periods: 2},
	},
		// In a program: health.WithNotifier(webhook), with webhook from
		// health.NewWebhook("https://alerts.example.com/hook"), and
		// go w.Run(ctx) instead of calling Tick.
		health.WithNotifier(health.NotifierFunc(func(_ context.Context, a health.Alert) error {
			fmt.Println(a.State+":", a.Summary)
			return nil
		})),
		health.WithWatchClock(func() time.Time { return time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC) }),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, d := range []int{5000, 5000, 5000, 5000, 20, 20, 20} {
		depth = d
		w.Tick(context.Background())
	}
	// Output:
	// firing: queue_depth is 5000, over 1000 for 3 periods
	// resolved: queue_depth is 20, no longer over 1000, for 3 periods
}

func ExampleWebhook() {
	// A receiver that fails once: the webhook retries.
	var calls int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if calls == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		var a health.Alert
		json.NewDecoder(r.Body).Decode(&a)
		fmt.Println("received:", a.State, a.Rule, a.Value, "key", r.Header.Get("Idempotency-Key"))
	}))
	defer srv.Close()

	wh, err := health.NewWebhook(srv.URL+"/hook",
		health.WithWebhookBackoff(10*time.Millisecond, time.Second),
		health.WithWebhookHeader("Authorization", "Bearer example-token"))
	if err != nil {
		fmt.Println(err)
		return
	}
	err = wh.Notify(context.Background(), health.Alert{ID: "queue_depth@1", Rule: "queue_depth", State: health.StateFiring, Value: 5000})
	fmt.Println("error:", err, "attempts:", calls)
	// Output:
	// received: firing queue_depth 5000 key queue_depth@1
	// error: <nil> attempts: 2
}
