package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
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

// /debug/pprof/ is served only when [http] pprof is on; the health
// endpoints are served either way.
func TestHTTPHandlerPprofOptIn(t *testing.T) {
	h, err := health.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, on := range []bool{false, true} {
		handler := httpHandler(h, on)
		for path, want := range map[string]int{
			"/livez":              http.StatusOK,
			"/debug/pprof/":       map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on],
			"/debug/pprof/allocs": map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on],
		} {
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
			if rec.Code != want {
				t.Errorf("pprof %v: GET %s = %d, want %d", on, path, rec.Code, want)
			}
		}
	}
}
