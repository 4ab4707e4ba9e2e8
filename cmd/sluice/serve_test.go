package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice/health"
)

// syncBuffer is a bytes.Buffer safe for the server's log writes and the
// test's reads.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// listening waits for the "listening" log record and returns its addresses.
func listening(t *testing.T, log *syncBuffer, exited <-chan int) (smtpAddr, httpAddr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(log.String(), "\n") {
			var rec struct{ Msg, SMTP, HTTP string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				return rec.SMTP, rec.HTTP
			}
		}
		select {
		case code := <-exited:
			t.Fatalf("serve exited with %d before listening:\n%s", code, log)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no \"listening\" record within 10s:\n%s", log)
	return "", ""
}

func TestServeRelaysAndDrains(t *testing.T) {
	sink := newSink(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var log syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
			"--spool", t.TempDir(), "--smarthost", sink.Addr(), "--hostname", "sluice.test"},
			nil, io.Discard, &log)
	}()
	smtpAddr, httpAddr := listening(t, &log, exited)

	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/readyz = %d %s, want 200", resp.StatusCode, body)
	}

	code, stdout, stderr := runCmd(t, "hi\n", "send", "--server", smtpAddr, "--from", "a@example.org",
		"--to", "b@example.net", "--subject", "through serve", "--body", "-")
	if code != exitOK || !strings.HasPrefix(stdout, "250 ") {
		t.Fatalf("send: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sink.WaitFor(wctx, 1); err != nil {
		t.Fatalf("relayed message did not reach the sink: %v\n%s", err, log.String())
	}
	if got := sink.Messages()[0]; got.From != "a@example.org" || !bytes.Contains(got.Data, []byte("Subject: through serve\r\n")) {
		t.Errorf("sink got from %q:\n%s", got.From, got.Data)
	}

	resp, err = client.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(metrics, []byte("sluice_queue_")) {
		t.Errorf("/metrics has no sluice_queue_ metrics")
	}

	stop() // as SIGTERM does
	select {
	case code := <-exited:
		if code != exitOK {
			t.Errorf("serve exited with %d after shutdown, want 0:\n%s", code, log.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("serve did not exit within 40s of shutdown")
	}
}

func TestServeBadListenAddress(t *testing.T) {
	var log syncBuffer
	// 192.0.2.1 (TEST-NET-1) is not an address of this machine.
	code := run(context.Background(), []string{"serve", "--listen", "192.0.2.1:0", "--http", "127.0.0.1:0",
		"--spool", t.TempDir()}, nil, io.Discard, &log)
	if code != exitFailure || !strings.Contains(log.String(), "smtp listener") {
		t.Errorf("exit %d, log %s; want %d and an smtp listener error", code, log.String(), exitFailure)
	}
}

func TestServeConfigErrorExit2(t *testing.T) {
	var stderr syncBuffer
	code := run(context.Background(), []string{"serve", "--config", "testdata/bad.toml"}, nil, io.Discard, &stderr)
	want := "testdata/bad.toml:3: unknown key smtp.listn\n"
	if code != exitUsage || stderr.String() != want {
		t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr.String(), exitUsage, want)
	}
}

// TestReadyzFlips: /readyz answers 503 while the spool cannot be written
// (a full file system) and while the queue is over the health gate's
// watermark, and 200 again when each recovers. The spool is on a small
// tmpfs the test mounts, so it can be filled.
func TestReadyzFlips(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	spool := filepath.Join(mnt, "spool")

	down := refuseAll(t) // the next hop answers 421: mail stays queued
	conf := filepath.Join(t.TempDir(), "sluice.toml")
	if err := os.WriteFile(conf, []byte("[smtp.gate]\nqueue_depth_high = 2.0\nqueue_depth_low = 1.0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	var log syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"serve", "--config", conf, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
			"--spool", spool, "--smarthost", down, "--hostname", "sluice.test"}, nil, io.Discard, &log)
	}()
	t.Cleanup(func() { stop(); <-exited })
	smtpAddr, httpAddr := listening(t, &log, exited)

	client := &http.Client{Timeout: 10 * time.Second}
	readyz := func() (int, health.Readiness) {
		t.Helper()
		resp, err := client.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rd health.Readiness
		if err := json.NewDecoder(resp.Body).Decode(&rd); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, rd
	}
	waitFor := func(what string, code int, failing string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got, rd := readyz()
			_, has := rd.Failing[failing]
			if got == code && (failing == "" && len(rd.Failing) == 0 || failing != "" && has) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /readyz = %d %+v, want %d failing %q", what, got, rd, code, failing)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("at start", 200, "")

	// Fill the file system: the spool cannot take a byte.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for range 64 {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	waitFor("spool full", 503, "queue")
	os.Remove(filler)
	waitFor("space freed", 200, "")

	// Two queued messages reach the gate's high watermark.
	for i := range 2 {
		code, stdout, stderr := runCmd(t, "hi\n", "send", "--server", smtpAddr, "--from", "a@example.org",
			"--to", "b@example.net", "--subject", fmt.Sprint("m", i), "--body", "-")
		if code != exitOK {
			t.Fatalf("send %d: exit %d %q %q", i, code, stdout, stderr)
		}
	}
	waitFor("queue over its watermark", 503, "admission")
	code, stdout, stderr := runCmd(t, "", "queue", "list", "--api", httpAddr, "--json")
	if code != exitOK {
		t.Fatalf("queue list: %d %s", code, stderr)
	}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var m struct{ ID string }
		if json.Unmarshal([]byte(line), &m) == nil && m.ID != "" {
			if code, _, stderr := runCmd(t, "", "queue", "delete", "--api", httpAddr, m.ID); code != exitOK {
				t.Fatalf("queue delete %s: %s", m.ID, stderr)
			}
		}
	}
	waitFor("queue drained below the low watermark", 200, "")
}

// refuseAll is a next hop that answers 421 to every connection.
func refuseAll(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("421 4.3.2 down for the test\r\n"))
			c.Close()
		}
	})
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().String()
}

// TestAlertsReachWebhook: a queue-depth rule of [alerts] fires exactly one
// alert to the webhook when the queue stays over its threshold for the
// rule's periods, with the webhook's token, and one "resolved" notice once
// the queue is drained.
func TestAlertsReachWebhook(t *testing.T) {
	var mu sync.Mutex
	var got []health.Alert
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a health.Alert
		if r.Header.Get("Authorization") != "Bearer hook-secret" || json.NewDecoder(r.Body).Decode(&a) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, a)
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	alerts := func() []health.Alert { mu.Lock(); defer mu.Unlock(); return append([]health.Alert(nil), got...) }

	dir := t.TempDir()
	token := filepath.Join(dir, "hook.token")
	os.WriteFile(token, []byte("hook-secret\n"), 0o600)
	conf := filepath.Join(dir, "sluice.toml")
	doc := "[alerts]\ninterval = \"50ms\"\nwebhook = \"" + hook.URL + "\"\nwebhook_token_file = \"" + token + "\"\n" +
		"[[alerts.rule]]\nname = \"backlog\"\nmetric = \"queue_depth\"\nthreshold = 1.0\nperiods = 3\nresolve_periods = 2\n"
	if err := os.WriteFile(conf, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	var log syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"serve", "--config", conf, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
			"--spool", filepath.Join(dir, "spool"), "--smarthost", refuseAll(t), "--hostname", "sluice.test"}, nil, io.Discard, &log)
	}()
	t.Cleanup(func() { stop(); <-exited })
	smtpAddr, httpAddr := listening(t, &log, exited)
	var ids []string
	for i := range 2 {
		code, stdout, stderr := runCmd(t, "hi\n", "send", "--server", smtpAddr, "--from", "a@example.org",
			"--to", "b@example.net", "--subject", fmt.Sprint("m", i), "--body", "-")
		if code != exitOK {
			t.Fatalf("send: %d %q %q", code, stdout, stderr)
		}
		ids = append(ids, strings.Fields(stdout)[len(strings.Fields(stdout))-1])
	}
	waitAlerts := func(what string, n int) []health.Alert {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for len(alerts()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: webhook got %+v, want %d alerts\n%s", what, alerts(), n, log.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		return alerts()
	}
	a := waitAlerts("queue over its threshold", 1)[0]
	if a.Rule != "backlog" || a.State != health.StateFiring || a.Value != 2 || a.Periods != 3 {
		t.Errorf("alert %+v, want backlog firing at 2 queued", a)
	}
	for _, id := range ids {
		if code, _, stderr := runCmd(t, "", "queue", "delete", "--api", httpAddr, id); code != exitOK {
			t.Fatalf("delete %s: %s", id, stderr)
		}
	}
	all := waitAlerts("queue drained", 2)
	if r := all[1]; r.State != health.StateResolved || r.ID != a.ID {
		t.Errorf("second notice %+v, want the resolution of %s", r, a.ID)
	}
	// Still drained: no further notice for a while of periods (ten ticks).
	time.Sleep(500 * time.Millisecond)
	if n := len(alerts()); n != 2 {
		t.Errorf("webhook got %d notices, want exactly 2: %+v", n, alerts())
	}
}
