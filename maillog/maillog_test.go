package maillog_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/maillog"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func record(i int) *delivery.Record {
	results := []string{"delivered", "deferred", "bounced"}
	from := fmt.Sprintf("sender%d@shop.example", i%2)
	if i%5 == 0 {
		from = ""
	}
	return &delivery.Record{
		Time: t0.Add(time.Duration(i) * time.Minute), QueueID: fmt.Sprintf("Q%04d", i/2),
		From: from, To: fmt.Sprintf("User%d@Domain%d.example", i%7, i%3),
		Route: "mx", Reply: "250 2.0.0 ok", Code: 250, Attempt: 1, Result: results[i%3],
	}
}

func fill(t *testing.T, l *maillog.Log, n int) {
	t.Helper()
	for i := range n {
		l.Record(context.Background(), record(i))
	}
}

func times(rs []delivery.Record) []int {
	var out []int
	for _, r := range rs {
		out = append(out, int(r.Time.Sub(t0)/time.Minute))
	}
	return out
}

func TestSearch(t *testing.T) {
	dir := t.TempDir()
	l, err := maillog.Open(filepath.Join(dir, "delivery.log"), maillog.WithRotation(8192, 3))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const n = 60 // about 16 KiB: two rotations
	fill(t, l, n)

	var want []int
	for i := n - 1; i >= 0; i-- {
		want = append(want, i)
	}
	filter := func(keep func(i int) bool) []int {
		var out []int
		for _, i := range want {
			if keep(i) {
				out = append(out, i)
			}
		}
		return out
	}
	tests := []struct {
		name string
		q    maillog.Query
		want []int
	}{
		{"everything, newest first", maillog.Query{Limit: 1000}, want},
		{"limit keeps the newest", maillog.Query{Limit: 3}, want[:3]},
		{"recipient, any case", maillog.Query{Recipient: "user3@domain0.example", Limit: 1000},
			filter(func(i int) bool { return i%7 == 3 && i%3 == 0 })},
		{"recipient domain", maillog.Query{Recipient: "@DOMAIN2.example", Limit: 1000}, filter(func(i int) bool { return i%3 == 2 })},
		{"sender", maillog.Query{Sender: "sender1@shop.example", Limit: 1000}, filter(func(i int) bool { return i%2 == 1 && i%5 != 0 })},
		{"null sender", maillog.Query{Sender: "<>", Limit: 1000}, filter(func(i int) bool { return i%5 == 0 })},
		{"queue id", maillog.Query{QueueID: "Q0007", Limit: 1000}, []int{15, 14}},
		{"result", maillog.Query{Result: "bounced", Limit: 1000}, filter(func(i int) bool { return i%3 == 2 })},
		{"time range", maillog.Query{Since: t0.Add(10 * time.Minute), Until: t0.Add(13 * time.Minute)}, []int{12, 11, 10}},
		{"combined", maillog.Query{Recipient: "@domain1.example", Result: "deferred", Since: t0.Add(30 * time.Minute)},
			filter(func(i int) bool { return i%3 == 1 && i >= 30 })},
	}
	for _, tc := range tests {
		got, err := l.Search(context.Background(), tc.q)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if g := times(got); !slices.Equal(g, tc.want) {
			t.Errorf("%s: got records %v, want %v", tc.name, g, tc.want)
		}
	}
	if got, err := l.Search(context.Background(), maillog.Query{Limit: 1 << 40}); err != nil || len(got) != n {
		t.Errorf("a huge limit: %d records, %v; want all %d (the limit capped, not an error)", len(got), err, n)
	}
	if _, err := l.Search(context.Background(), maillog.Query{Result: "lost"}); err == nil {
		t.Error("Search accepted an unknown result")
	}
}

func TestRotationKeepsBoundedFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "delivery.log")
	l, err := maillog.Open(path, maillog.WithRotation(4096, 2))
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l, 200) // about 50 KiB
	l.Close()
	files, _ := filepath.Glob(path + "*")
	slices.Sort(files)
	if want := []string{path, path + ".1", path + ".2"}; !slices.Equal(files, want) {
		t.Errorf("files %v, want %v", files, want)
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || fi.Size() > 4096 {
			t.Errorf("%s: %v bytes (err %v), want at most 4096", f, fi.Size(), err)
		}
	}
	// Reopened, the log goes on where it was and finds the newest.
	l, err = maillog.Open(path, maillog.WithRotation(4096, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got, err := l.Search(context.Background(), maillog.Query{Limit: 1})
	if err != nil || len(got) != 1 || got[0].QueueID != "Q0099" {
		t.Errorf("newest record after reopening: %+v, %v; want Q0099", got, err)
	}
}

func TestTornLineIsSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "delivery.log")
	l, err := maillog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fill(t, l, 2)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"time":"2026-11-01T12:05:00Z","queue_id":"Q`) // a crash mid-write
	f.Close()
	got, err := l.Search(context.Background(), maillog.Query{})
	if err != nil || len(got) != 2 {
		t.Errorf("got %d records, %v; want the 2 whole ones", len(got), err)
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	if _, err := maillog.Open(filepath.Join(t.TempDir(), "x"), maillog.WithRotation(10, 1)); err == nil {
		t.Error("Open accepted a 10-byte rotation size")
	}
	if _, err := maillog.Open(filepath.Join(t.TempDir(), "missing", "x")); err == nil {
		t.Error("Open succeeded in a missing directory")
	}
	if _, err := maillog.Open(filepath.Join(t.TempDir(), "x"), maillog.WithWriteDelay(-time.Second)); err == nil {
		t.Error("Open accepted a negative write delay")
	}
}

// TestWriteDelay: with a write delay, records wait in memory (the file
// stays empty), and Search, rotation and Close write them first, so none
// is missing from a search or from the files, and each file stays within
// the rotation size.
func TestWriteDelay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "delivery.log")
	l, err := maillog.Open(path, maillog.WithWriteDelay(time.Minute), maillog.WithRotation(8192, 10))
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l, 3)
	if b, err := os.ReadFile(path); err != nil || len(b) != 0 {
		t.Fatalf("file holds %d bytes (err %v) before the delay, want none", len(b), err)
	}
	got, err := l.Search(context.Background(), maillog.Query{})
	if err != nil || !slices.Equal(times(got), []int{2, 1, 0}) {
		t.Fatalf("search found %v, %v; want the 3 waiting records", times(got), err)
	}
	for i := 3; i < 100; i++ { // about 26 KiB: three rotations
		l.Record(context.Background(), record(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(path + "*")
	lines := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || len(b) > 8192 {
			t.Errorf("%s: %d bytes (err %v), want at most 8192", f, len(b), err)
		}
		lines += bytes.Count(b, []byte("\n"))
	}
	if len(files) < 4 || lines != 100 {
		t.Errorf("%d files with %d lines, want at least 4 files and 100 lines", len(files), lines)
	}
	l, err = maillog.Open(path, maillog.WithRotation(8192, 10))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got, err := l.Search(context.Background(), maillog.Query{Limit: 1000}); err != nil || len(got) != 100 {
		t.Errorf("search after reopening found %d records, %v; want 100", len(got), err)
	}
}
