package maillog_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/maillog"
)

func Example() {
	dir, _ := os.MkdirTemp("", "maillog")
	defer os.RemoveAll(dir)
	l, err := maillog.Open(filepath.Join(dir, "delivery.log"))
	if err != nil {
		panic(err)
	}
	defer l.Close()
	// Given to an agent with delivery.WithRecorder(l), it gets one record
	// per recipient and attempt; here, two by hand.
	l.Record(context.Background(), &delivery.Record{QueueID: "Q1", To: "ann@example.com", Result: "deferred", Reply: "451 4.7.1 try later"})
	l.Record(context.Background(), &delivery.Record{QueueID: "Q1", To: "ann@example.com", Result: "delivered", Reply: "250 2.0.0 ok"})
	recs, _ := l.Search(context.Background(), maillog.Query{Recipient: "ann@example.com"})
	for _, r := range recs {
		fmt.Println(r.QueueID, r.Result, r.Reply)
	}
	// Output:
	// Q1 delivered 250 2.0.0 ok
	// Q1 deferred 451 4.7.1 try later
}
