package maillog_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/maillog"
)

// Search finds addresses that JSON escapes in the file ("&" is \u0026
// there, a quote \"): its quick look at each line searches for them as
// they are written.
func TestSearchFindsAddressesJSONEscapes(t *testing.T) {
	l, err := maillog.Open(filepath.Join(t.TempDir(), "delivery.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, addr := range []string{"a&b@example.com", `"john doe"@example.com`, "x<y>@example.com", "plain@example.com"} {
		l.Record(context.Background(), &delivery.Record{Time: t0, QueueID: "Q1", From: addr, To: addr, Result: "delivered"})
		for _, q := range []maillog.Query{{Recipient: addr}, {Sender: addr}, {Recipient: strings.ToUpper(addr)}} {
			got, err := l.Search(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Errorf("Search(%+v) = %d records, want 1", q, len(got))
			}
		}
	}
}

// A rotation that fails leaves a file open at the log's path, so records
// go on being written: here the live file was moved away (by an operator
// or a logrotate of its own), and the rename to path.1 fails.
func TestFailedRotationKeepsLogging(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "delivery.log")
	l, err := maillog.Open(path, maillog.WithRotation(4096, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rec := &delivery.Record{Time: t0, QueueID: "Q1", To: "x@example.com", Result: "delivered", Text: strings.Repeat("t", 200)}
	l.Record(context.Background(), rec)
	if err := os.Rename(path, filepath.Join(dir, "moved.log")); err != nil {
		t.Fatal(err)
	}
	for range 40 { // past 4096 bytes: the rotation is tried and fails
		l.Record(context.Background(), rec)
	}
	rec.QueueID = "Q2"
	l.Record(context.Background(), rec)
	got, err := l.Search(context.Background(), maillog.Query{QueueID: "Q2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("after the failed rotation Search finds %d records of Q2, want 1", len(got))
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no delivery log at %s after the failed rotation: %v", path, err)
	}
}
