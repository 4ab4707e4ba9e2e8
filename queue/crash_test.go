package queue

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
)

// crashChildEnv names the spool a crash-test child enqueues into.
const crashChildEnv = "SLUICE_QUEUE_CRASH_CHILD"

// crashBody is the body of message seq of trial trial: its content says
// which it is, so a body that came back as another message's is caught,
// and every 40th is large enough to be written in several batches.
func crashBody(trial, seq int) []byte {
	head := fmt.Sprintf("Subject: trial %d message %d\r\n\r\n", trial, seq)
	n := 2 << 10
	if seq%40 == 39 {
		n = 3*batchFlush/2 + seq
	}
	line := fmt.Sprintf("%d/%d ", trial, seq)
	return append([]byte(head), bytes.Repeat([]byte(line), n/len(line))...)
}

// TestCrashChild is the process the crash test kills: it enqueues from 16
// writers until it is killed, printing "ack <id> <trial> <seq>" after each
// Enqueue returns. It does nothing in a normal test run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("run by TestCrashLosesNothingAcknowledged")
	}
	trial, _ := strconv.Atoi(os.Getenv(crashChildEnv + "_TRIAL"))
	q, err := New(dir)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := 0
	deadline := time.Now().Add(time.Minute) // bounded even if nobody kills us
	for range 16 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				mu.Lock()
				seq := next
				next++
				mu.Unlock()
				env := &sluice.Envelope{From: "crash@example.org", Recipients: []sluice.Recipient{
					{Address: fmt.Sprintf("r%d@d%d.example.com", seq, seq%5)}}}
				id, err := q.Enqueue(context.Background(), env, bytes.NewReader(crashBody(trial, seq)))
				if err != nil {
					fmt.Println("enqueue:", err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Printf("ack %s %d %d\n", id, trial, seq) // one write(2) per line
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}

type ackedMessage struct{ trial, seq int }

// TestCrashLosesNothingAcknowledged kills a process that is enqueueing from
// 16 writers with SIGKILL, at a random point, ten times over the same
// spool. After every kill the spool is opened again and every message the
// child acknowledged must be there; at the end everything is delivered
// and every body must be the one acknowledged, read through its checksums.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	const trials = 10
	dir := t.TempDir()
	acked := map[string]ackedMessage{}
	for trial := range trials {
		killAfter := 20 + rand.IntN(300)
		got := runCrashChild(t, dir, trial, killAfter)
		for id, m := range got {
			acked[id] = m
		}
		q, err := New(dir)
		if err != nil {
			t.Fatalf("trial %d: reopen after SIGKILL: %v", trial, err)
		}
		lost := 0
		for id := range acked {
			if _, err := q.Show(context.Background(), id); err != nil {
				lost++
				t.Errorf("trial %d: acknowledged message %s lost: %v", trial, id, err)
			}
		}
		depth := q.Depth()
		t.Logf("trial %d: killed after %d acks (%d read); spool holds %d messages, %d acknowledged, %d lost, %d stored but never acknowledged",
			trial, killAfter, len(got), depth, len(acked), lost, depth-len(acked)+lost)
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Deliver everything and compare bodies.
	q := newTestQueue(t, dir)
	delivered := map[string]int{}
	var mu sync.Mutex
	d := newDeliverer(func(m *Message, _ string) Result {
		return Result{Outcome: sluice.OutcomeDelivered}
	})
	serve(t, q, d)
	d.waitForWithin(t, "every message delivered", time.Minute, func() bool { return q.Depth() == 0 })
	for _, a := range d.attempts() {
		mu.Lock()
		delivered[a.id]++
		mu.Unlock()
		m, ok := acked[a.id]
		if a.err != nil {
			t.Errorf("message %s: body read failed: %v", a.id, a.err)
			continue
		}
		if ok && !bytes.Equal(a.body, crashBody(m.trial, m.seq)) {
			t.Errorf("message %s: body is not the one acknowledged (trial %d message %d)", a.id, m.trial, m.seq)
		}
	}
	dups := 0
	for id := range acked {
		if delivered[id] == 0 {
			t.Errorf("acknowledged message %s never delivered", id)
		}
		dups += max(delivered[id]-1, 0)
	}
	t.Logf("%d trials: %d messages acknowledged, %d delivered, %d duplicate deliveries", trials, len(acked), len(delivered), dups)
}

// runCrashChild starts a child enqueueing into dir, kills it with SIGKILL
// once it has acknowledged killAfter messages, and returns every message
// it acknowledged (lines printed before it died included).
func runCrashChild(t *testing.T, dir string, trial, killAfter int) map[string]ackedMessage {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, fmt.Sprintf("%s_TRIAL=%d", crashChildEnv, trial))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() }) // a hung child fails the test, not CI
	defer timer.Stop()
	acked := map[string]ackedMessage{}
	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "ack" {
			t.Errorf("trial %d: child said %q", trial, sc.Text())
			continue
		}
		tr, _ := strconv.Atoi(f[2])
		seq, _ := strconv.Atoi(f[3])
		acked[f[1]] = ackedMessage{tr, seq}
		if !killed && len(acked) >= killAfter {
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("trial %d: child ended with %v after %d acks, want death by SIGKILL", trial, err, len(acked))
	}
	return acked
}
