package admin_test

import (
	"log"
	"net/http"
	"os"

	"github.com/sluicemta/sluice/admin"
	"github.com/sluicemta/sluice/queue"
)

func Example() {
	dir, err := os.MkdirTemp("", "spool")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	q, err := queue.New(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	// Add admin.WithExplainer(agent) and admin.WithDeliveryLog(maillog)
	// for explain and the delivery log search.
	api, err := admin.New(q, admin.WithToken(os.Getenv("SLUICE_ADMIN_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", api.Handler())
	_ = &http.Server{Addr: "127.0.0.1:8025", Handler: mux}
	// Output:
}
