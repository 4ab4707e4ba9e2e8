package spamd_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/spamd"
	"github.com/sluicemta/sluice/filter/spamd/spamdtest"
	"github.com/sluicemta/sluice/health"
)

const (
	clean = "From: a@example.org\r\nTo: b@example.org\r\nSubject: lunch\r\n\r\nLunch tomorrow?\r\n"
	gtube = "From: a@example.org\r\nTo: b@example.org\r\nSubject: test\r\n\r\n" + spamdtest.GTUBE + "\r\n"
)

func message(body string) *filter.Message {
	return &filter.Message{
		Envelope: &sluice.Envelope{From: "a@example.org", Recipients: []sluice.Recipient{{Address: "b@example.org"}}},
		Body:     strings.NewReader(body),
		Size:     int64(len(body)),
	}
}

func newServer(t *testing.T) *spamdtest.Server {
	t.Helper()
	s, err := spamdtest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newPool(t *testing.T, addrs []string, opts ...health.PoolOption) *health.Pool {
	t.Helper()
	p, err := health.NewPool("spamd", addrs, health.SpamdPing(), append([]health.PoolOption{health.WithFirstCheck(false)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newFilter(t *testing.T, p spamd.Pool, opts ...spamd.Option) *spamd.Filter {
	t.Helper()
	f, err := spamd.New(p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func headerMap(hs []filter.Header) map[string]string {
	m := make(map[string]string, len(hs))
	for _, h := range hs {
		m[h.Name] = h.Value
	}
	return m
}

func TestCheckVerdicts(t *testing.T) {
	srv := newServer(t)
	pool := newPool(t, []string{srv.Addr()})
	tests := []struct {
		name    string
		opts    []spamd.Option
		body    string
		action  filter.Action
		reply   string
		headers map[string]string
	}{
		{"GTUBE is rejected", nil, gtube, filter.Reject,
			"550 5.7.1 message rejected as spam (score 1000.0, required 5.0)",
			map[string]string{"X-Spam-Flag": "YES", "X-Spam-Score": "1000.0", "X-Spam-Status": "Yes, score=1000.0 required=5.0 tests=GTUBE"}},
		{"clean passes", nil, clean, filter.Accept, "",
			map[string]string{"X-Spam-Flag": "NO", "X-Spam-Score": "0.0", "X-Spam-Status": "No, score=0.0 required=5.0"}},
		{"tag only", []spamd.Option{spamd.WithRejectScore(math.Inf(1))}, gtube, filter.Accept, "",
			map[string]string{"X-Spam-Flag": "YES", "X-Spam-Status": "Yes, score=1000.0 required=5.0 tests=GTUBE"}},
		{"own threshold", []spamd.Option{spamd.WithRejectScore(2000)}, gtube, filter.Accept, "",
			map[string]string{"X-Spam-Flag": "YES"}},
		{"report", []spamd.Option{spamd.WithCommand(spamd.Report)}, gtube, filter.Reject,
			"550 5.7.1 message rejected as spam (score 1000.0, required 5.0)",
			map[string]string{"X-Spam-Report": "Content analysis details: (1000.0 points, 5.0 required)", "X-Spam-Status": "Yes, score=1000.0 required=5.0"}},
		{"headers", []spamd.Option{spamd.WithCommand(spamd.Headers), spamd.WithRejectScore(math.Inf(1))}, gtube, filter.Accept, "",
			map[string]string{"X-Spam-Flag": "YES", "X-Spam-Status": "Yes, score=1000.0 required=5.0 tests=GTUBE"}},
		{"over the size limit: not scanned", []spamd.Option{spamd.WithMaxSize(10)}, gtube, filter.Accept, "", map[string]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFilter(t, pool, tc.opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			v, err := f.Check(ctx, message(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if v.Action != tc.action {
				t.Errorf("action = %v, want %v", v.Action, tc.action)
			}
			if got := replyText(v.Reply); got != tc.reply {
				t.Errorf("reply = %q, want %q", got, tc.reply)
			}
			got := headerMap(v.Headers)
			for name, want := range tc.headers {
				if got[name] != want {
					t.Errorf("%s = %q, want %q (all: %v)", name, got[name], want, v.Headers)
				}
			}
			if len(tc.headers) == 0 && len(v.Headers) != 0 {
				t.Errorf("headers %v, want none", v.Headers)
			}
		})
	}
}

func replyText(r *sluice.Reply) string {
	if r == nil {
		return ""
	}
	return r.Error()
}

// TestNoTrailingNewline: spamd waits forever for a message without a final
// line break (seed 004); the filter appends one, so the check completes.
func TestNoTrailingNewline(t *testing.T) {
	srv := newServer(t)
	f := newFilter(t, newPool(t, []string{srv.Addr()}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := f.Check(ctx, message(strings.TrimSuffix(gtube, "\r\n")))
	if err != nil {
		t.Fatalf("Check of a message without a final newline: %v", err)
	}
	if v.Action != filter.Reject {
		t.Errorf("action = %v, want reject", v.Action)
	}
}

// TestHungReplicaDeadline: a replica that accepts and never answers costs
// the context's deadline and no more, and counts against the replica.
func TestHungReplicaDeadline(t *testing.T) {
	srv := newServer(t)
	srv.SetHung(true)
	pool := newPool(t, []string{srv.Addr()}, health.WithEjectAfter(1), health.WithProbeOptions(health.WithProbeInterval(time.Hour), health.WithFall(100)))
	f := newFilter(t, pool)
	const timeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	_, err := f.Check(ctx, message(clean))
	if d := time.Since(start); d > timeout+150*time.Millisecond {
		t.Errorf("Check took %v with a %v deadline", d, timeout)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
	if st := pool.Endpoints(); st[0].Up {
		t.Error("the hung replica is still up after a timed-out request")
	}
}

// TestCancelClosesConnection: cancelling the context (the client went
// away) ends the exchange at once and is not held against the replica.
func TestCancelClosesConnection(t *testing.T) {
	srv := newServer(t)
	srv.SetHung(true)
	pool := newPool(t, []string{srv.Addr()}, health.WithEjectAfter(1), health.WithProbeOptions(health.WithProbeInterval(time.Hour), health.WithFall(100)))
	f := newFilter(t, pool)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for srv.Stalls() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	done := make(chan error, 1)
	go func() { _, err := f.Check(ctx, message(clean)); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Check did not return after its context was cancelled")
	}
	if st := pool.Endpoints(); !st[0].Up {
		t.Error("a cancelled request ejected the replica")
	}
}

// TestDeadReplica: a replica whose port is closed is skipped within the
// same Check, then ejected; every message is scanned by the healthy one.
func TestDeadReplica(t *testing.T) {
	srv := newServer(t)
	dead := closedPort(t)
	pool := newPool(t, []string{dead, srv.Addr()}, health.WithStrategy(health.OrderedFailover),
		health.WithProbeOptions(health.WithProbeInterval(time.Hour), health.WithFall(100)))
	f := newFilter(t, pool)
	for i := range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		v, err := f.Check(ctx, message(gtube))
		cancel()
		if err != nil || v.Action != filter.Reject {
			t.Fatalf("message %d: %v, %v; want a rejection by the healthy replica", i, v.Action, err)
		}
	}
	if got := srv.Scans(); got != 10 {
		t.Errorf("healthy replica scanned %d, want 10", got)
	}
	if st := pool.Endpoints(); st[0].Up {
		t.Errorf("dead replica %+v still up", st[0])
	}
}

// TestHungReplicaEjected: with one of two replicas hung, one message pays
// the timeout, then the replica is ejected and the rest pass.
func TestHungReplicaEjected(t *testing.T) {
	hung, ok := newServer(t), newServer(t)
	hung.SetHung(true)
	pool := newPool(t, []string{hung.Addr(), ok.Addr()}, health.WithStrategy(health.OrderedFailover), health.WithEjectAfter(1),
		health.WithProbeOptions(health.WithProbeInterval(time.Hour), health.WithFall(100)))
	f := newFilter(t, pool, spamd.WithTimeout(200*time.Millisecond))
	var failed int
	for range 10 {
		if _, err := f.Check(context.Background(), message(clean)); err != nil {
			failed++
		}
	}
	if failed != 1 || ok.Scans() != 9 {
		t.Errorf("%d failed, %d scanned by the healthy replica; want 1 and 9", failed, ok.Scans())
	}
}

func TestSpamdErrors(t *testing.T) {
	tests := []struct {
		name, answer, want string
	}{
		{"spamd error code", "SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n", "spamd error 76 Bad header line"},
		{"not spamd", "HTTP/1.1 400 Bad Request\r\n\r\n", "is not spamd's"},
		{"no Spam header", "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", "no Spam header"},
		{"bad Spam header", "SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; 1 / 5\r\n\r\n", "Spam header"},
		{"short content", "SPAMD/1.1 0 EX_OK\r\nContent-length: 50\r\nSpam: True ; 9.0 / 5.0\r\n\r\nGTUBE", "read answer content"},
		{"closed early", "SPAMD/1.1 0 EX_OK\r\n", "read answer header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := fixedAnswer(t, tc.answer)
			f := newFilter(t, newPool(t, []string{addr}, health.WithProbeOptions(health.WithProbeInterval(time.Hour))))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := f.Check(ctx, message(clean))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "spamd ") {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	pool := newPool(t, []string{"127.0.0.1:1"}, health.WithProbeOptions(health.WithProbeInterval(time.Hour)))
	for _, opt := range []spamd.Option{spamd.WithCommand(9), spamd.WithUser("a\r\nb"), spamd.WithMaxSize(0), spamd.WithTimeout(0), spamd.WithAttempts(0)} {
		if _, err := spamd.New(pool, opt); err == nil || !strings.HasPrefix(err.Error(), "spamd: ") {
			t.Errorf("New with a bad option: err = %v", err)
		}
	}
	if _, err := spamd.New(nil); err == nil {
		t.Error("New(nil): no error")
	}
}

// fixedAnswer is a server that reads the request and writes answer.
func fixedAnswer(t *testing.T, answer string) string {
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
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				readRequest(c)
				io.WriteString(c, answer)
			})
		}
	})
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().String()
}

// readRequest reads a spamc request: header lines, a blank line and
// Content-length bytes.
func readRequest(c net.Conn) {
	r := bufio.NewReader(c)
	length := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if line == "\r\n" {
			break
		}
		if v, ok := strings.CutPrefix(line, "Content-length: "); ok {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	io.CopyN(io.Discard, r, int64(length))
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
