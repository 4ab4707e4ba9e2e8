package spamd_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/spamd"
	"github.com/sluicemta/sluice/health"
)

// TestInteropRealSpamd runs the filter against SpamAssassin's own spamd
// (Debian package spamd), started by the test on a Unix socket in the
// test's temporary directory. scripts/test installs spamd and sets
// SLUICE_INTEROP=1, which turns a missing spamd into a failure; elsewhere
// the test is skipped without it.
func TestInteropRealSpamd(t *testing.T) {
	addr := startSpamd(t)
	pool := newPool(t, []string{addr}, health.WithProbeOptions(health.WithProbeDeadline(5*time.Second)))
	tests := []struct {
		name   string
		opts   []spamd.Option
		body   string
		action filter.Action
		want   map[string]string // header name -> substring of its value
	}{
		{"GTUBE is flagged", nil, gtube, filter.Reject,
			map[string]string{"X-Spam-Flag": "YES", "X-Spam-Status": "tests=GTUBE"}},
		{"a clean message passes", nil, cleanFull, filter.Accept,
			map[string]string{"X-Spam-Flag": "NO", "X-Spam-Status": "No, score="}},
		{"no trailing newline completes", nil, strings.TrimSuffix(cleanFull, "\r\n"), filter.Accept,
			map[string]string{"X-Spam-Flag": "NO"}},
		{"GTUBE without trailing newline", nil, strings.TrimSuffix(gtube, "\r\n"), filter.Reject,
			map[string]string{"X-Spam-Flag": "YES"}},
		{"REPORT", []spamd.Option{spamd.WithCommand(spamd.Report)}, gtube, filter.Reject,
			map[string]string{"X-Spam-Report": "GTUBE"}},
		{"HEADERS, tag only", []spamd.Option{spamd.WithCommand(spamd.Headers), spamd.WithRejectScore(1e9)}, gtube, filter.Accept,
			map[string]string{"X-Spam-Flag": "YES", "X-Spam-Status": "Yes, score=", "X-Spam-Checker-Version": "SpamAssassin"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFilter(t, pool, tc.opts...)
			// Generous: a real spamd under -race load on two shared cores.
			// Without the trailing-newline fix the check hangs to this deadline.
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			v, err := f.Check(ctx, message(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if v.Action != tc.action {
				t.Errorf("action = %v, want %v (headers %v)", v.Action, tc.action, v.Headers)
			}
			got := headerMap(v.Headers)
			for name, want := range tc.want {
				if !strings.Contains(got[name], want) {
					t.Errorf("%s = %q, want it to contain %q", name, got[name], want)
				}
			}
		})
	}
}

// An empty message (a caller of the filter's own, after the queue:
// mail from SMTP always has a Received field) gets its line break too:
// spamd waited on Content-length: 0 until the deadline.
func TestInteropRealSpamdEmptyMessage(t *testing.T) {
	addr := startSpamd(t)
	pool := newPool(t, []string{addr}, health.WithProbeOptions(health.WithProbeDeadline(5*time.Second)))
	for _, cmd := range []spamd.Command{spamd.Symbols, spamd.Headers} {
		f := newFilter(t, pool, spamd.WithCommand(cmd))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_, err := f.Check(ctx, message(""))
		cancel()
		if err != nil {
			t.Errorf("%v of an empty message: %v", cmd, err)
		}
	}
}

const cleanFull = "Received: from mail.example.org (mail.example.org [192.0.2.1])\r\n" +
	"\tby mx.example.com with ESMTP id 4Fxyz; Sun, 29 Nov 2026 14:00:00 +0000\r\n" +
	"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.com>\r\nSubject: lunch tomorrow\r\n" +
	"Date: Sun, 29 Nov 2026 14:00:00 +0000\r\nMessage-ID: <20261129140000.1234@mail.example.org>\r\n" +
	"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
	"Hi Bob,\r\n\r\nare we still on for lunch tomorrow at noon?\r\n\r\nAlice\r\n"

// startSpamd starts spamd on a Unix socket in a temporary directory, with
// one child, no network tests and no user configuration, waits until it
// answers PING and stops it when the test ends.
func startSpamd(t *testing.T) string {
	t.Helper()
	bin := findSpamd(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "spamd.sock")
	args := []string{"--socketpath=" + sock, "--local", "--nouser-config", "--max-children=1",
		"--syslog=stderr", "--pidfile=" + filepath.Join(dir, "spamd.pid")}
	if os.Geteuid() == 0 {
		// spamd refuses to run its children as root.
		args = append(args, "--username="+unprivilegedUser(t))
	}
	cmd := exec.Command(bin, args...)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start spamd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("spamd log:\n%s", logs.String())
		}
	})

	addr := "unix:" + sock
	ping := health.SpamdPing()
	deadline := time.Now().Add(90 * time.Second)
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := ping(ctx, addr)
		cancel()
		if err == nil {
			t.Logf("spamd answered PING after %v", time.Since(start).Round(time.Millisecond))
			return addr
		}
		select {
		case err := <-exited:
			t.Fatalf("spamd exited: %v\n%s", err, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("spamd did not answer PING within 90s: %v\n%s", err, logs.String())
		}
	}
}

func findSpamd(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("spamd"); err == nil {
		return p
	}
	// Debian installs spamd in /usr/sbin, which is not on every PATH.
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, "spamd")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("SLUICE_INTEROP") == "1" {
		t.Fatal("spamd not found and SLUICE_INTEROP=1: install the Debian package spamd (scripts/test does)")
	}
	t.Skip("spamd not found; set SLUICE_INTEROP=1 to make this a failure")
	return ""
}

// unprivilegedUser is the account spamd's children run as when the test
// runs as root: Debian's debian-spamd, else nobody.
func unprivilegedUser(t *testing.T) string {
	for _, name := range []string{"debian-spamd", "nobody"} {
		if _, err := user.Lookup(name); err == nil {
			return name
		}
	}
	t.Fatal("running as root and neither debian-spamd nor nobody exists for spamd's children")
	return ""
}

// syncBuffer collects spamd's log from its stdout and stderr.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
