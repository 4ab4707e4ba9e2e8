package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// runCLI runs the binary's entry point and returns its exit status and
// output.
func runCLI(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func fillSpool(t *testing.T, dir string, rcpts ...string) []string {
	t.Helper()
	q, err := queue.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var ids []string
	for _, r := range rcpts {
		env := &sluice.Envelope{From: "sender@example.org", Recipients: []sluice.Recipient{{Address: r}}, Received: time.Now()}
		id, err := q.Enqueue(context.Background(), env, strings.NewReader("Subject: t\r\n\r\nbody\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func TestQueueCommands(t *testing.T) {
	dir := t.TempDir()
	ids := fillSpool(t, dir, "a@one.example", "b@two.example")
	code, out, errOut := runCLI("queue", "list", "--spool", dir)
	if code != exitOK || !strings.Contains(out, ids[0]) || !strings.Contains(out, ids[1]) {
		t.Fatalf("list: exit %d, out %q, err %q", code, out, errOut)
	}
	if code, out, _ = runCLI("queue", "list", "--spool", dir, "--domain", "two.example"); code != exitOK || strings.Contains(out, ids[0]) || !strings.Contains(out, ids[1]) {
		t.Errorf("list --domain two.example: exit %d, out %q", code, out)
	}
	if code, out, errOut = runCLI("queue", "hold", "--spool", dir, ids[0]); code != exitOK || out != ids[0]+" held\n" {
		t.Errorf("hold: exit %d, out %q, err %q", code, out, errOut)
	}
	if code, out, _ = runCLI("queue", "show", "--spool", dir, ids[0]); code != exitOK || !strings.Contains(out, "state:     held") ||
		!strings.Contains(out, "a@one.example") {
		t.Errorf("show of a held message: exit %d, out %q", code, out)
	}
	if code, out, _ = runCLI("queue", "stats", "--spool", dir, "--json"); code != exitOK || !strings.Contains(out, `"Held":1`) ||
		!strings.Contains(out, `"Pending":1`) {
		t.Errorf("stats --json: exit %d, out %q", code, out)
	}
	if code, _, _ = runCLI("queue", "delete", "--spool", dir, ids[1]); code != exitOK {
		t.Errorf("delete: exit %d", code)
	}
	if code, _, errOut = runCLI("queue", "show", "--spool", dir, ids[1]); code != exitFailure || !strings.Contains(errOut, "no message "+ids[1]) {
		t.Errorf("show of a deleted message: exit %d, err %q", code, errOut)
	}
}

func TestQueueCommandRefusesALockedSpool(t *testing.T) {
	dir := t.TempDir()
	q, err := queue.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	code, _, errOut := runCLI("queue", "list", "--spool", dir)
	if code != exitFailure || !strings.Contains(errOut, "in use by another process") {
		t.Errorf("list on a spool in use: exit %d, err %q", code, errOut)
	}
}

func TestQueueCommandUsage(t *testing.T) {
	for _, args := range [][]string{{"queue"}, {"queue", "nope"}, {"queue", "show"}, {"queue", "show", "A", "B"}, {"queue", "flush", "X"}} {
		if code, _, _ := runCLI(args...); code != exitUsage {
			t.Errorf("sluice %v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// Hold, requeue and delete by filter act on every message that matches,
// over several pages, and report progress.
func TestQueueBulkOperations(t *testing.T) {
	dir := t.TempDir()
	q, err := queue.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	// 16 writers share fsyncs (group commit): a second, not five.
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < 1300; i += 16 {
				rcpt := "x@bulk.example"
				if i%13 == 0 {
					rcpt = "x@other.example"
				}
				env := &sluice.Envelope{From: "s@example.org", Recipients: []sluice.Recipient{{Address: rcpt}}}
				if _, err := q.Enqueue(context.Background(), env, strings.NewReader("Subject: t\r\n\r\nbody\r\n")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	q.Close()

	code, out, errOut := runCLI("queue", "hold", "--spool", dir, "--domain", "bulk.example")
	if code != exitOK || out != "1200 messages held\n" || !strings.Contains(errOut, "1000 messages held so far...") {
		t.Fatalf("hold --domain: %d %q %q", code, out, errOut)
	}
	code, out, _ = runCLI("queue", "stats", "--spool", dir, "--json")
	if code != exitOK || !strings.Contains(out, `"Pending":100,`) || !strings.Contains(out, `"Held":1200,`) {
		t.Errorf("stats after hold: %s", out)
	}
	if code, out, errOut = runCLI("queue", "delete", "--spool", dir, "--state", "pending"); code != exitOK || out != "100 messages deleted\n" {
		t.Errorf("delete --state pending: %d %q %q", code, out, errOut)
	}
	if code, out, errOut = runCLI("queue", "release", "--spool", dir, "--all"); code != exitOK || out != "1200 messages released\n" {
		t.Errorf("release --all: %d %q %q", code, out, errOut)
	}
	if code, _, errOut = runCLI("queue", "hold", "--spool", dir, "--all", "06H0BU7564U5DJ4D7S3G"); code != exitUsage {
		t.Errorf("hold with IDs and filters: %d %q, want a usage error", code, errOut)
	}
}
