package smtp_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/smtp"
)

// recorder is an Enqueuer that keeps what it is given in memory.
type recorder struct {
	mu    sync.Mutex // guards msgs and next
	msgs  []recorded
	next  int
	err   error                     // returned instead of queueing, if set
	hook  func(ctx context.Context) // called before queueing, if set
	panic bool                      // panic instead of queueing
}

type recorded struct {
	env  *sluice.Envelope
	body string
}

func (r *recorder) Enqueue(ctx context.Context, env *sluice.Envelope, body io.Reader) (string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", fmt.Errorf("recorder: read body: %w", err)
	}
	if r.hook != nil {
		r.hook(ctx)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("recorder: %w", err)
	}
	if r.panic {
		panic("recorder: boom")
	}
	if r.err != nil {
		return "", r.err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	r.msgs = append(r.msgs, recorded{env: env.Clone(), body: string(b)})
	return fmt.Sprintf("ID%d", r.next), nil
}

func (r *recorder) messages() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.msgs...)
}

// startServer serves a new Server on 127.0.0.1:0 until the test ends and
// returns its address.
func startServer(t testing.TB, q smtp.Enqueuer, opts ...smtp.Option) (*smtp.Server, string) {
	t.Helper()
	opts = append([]smtp.Option{smtp.WithHostname("mx.test")}, opts...)
	s, err := smtp.New(q, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		select {
		case err := <-done:
			if !errors.Is(err, smtp.ErrServerClosed) {
				t.Errorf("Serve = %v, want ErrServerClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return s, l.Addr().String()
}

// client is a raw SMTP client for dialog tests.
type client struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// send writes text (CRLF added) without reading a reply.
func (c *client) send(text string) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.nc, text+"\r\n"); err != nil {
		c.t.Fatalf("send %q: %v", text, err)
	}
}

// reply reads one (possibly multi-line) reply and returns its lines.
func (c *client) reply() ([]string, error) {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return lines, err
		}
		line = strings.TrimSuffix(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return lines, nil
		}
	}
}

// expect reads a reply and checks that its last line starts with want.
func (c *client) expect(want string) []string {
	c.t.Helper()
	lines, err := c.reply()
	if err != nil {
		c.t.Fatalf("reading reply, want %q: %v (got %q)", want, err, lines)
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, want) {
		c.t.Fatalf("reply %q, want %q", last, want)
	}
	return lines
}

// expectEventually reads replies until one starts with want (at most
// five).
func (c *client) expectEventually(want string) {
	c.t.Helper()
	var got []string
	for range 5 {
		lines, err := c.reply()
		if err != nil {
			c.t.Fatalf("reading replies, want %q: %v (got %q)", want, err, got)
		}
		last := lines[len(lines)-1]
		if strings.HasPrefix(last, want) {
			return
		}
		got = append(got, last)
	}
	c.t.Fatalf("replies %q, want one starting %q", got, want)
}

// step is one exchange of a dialog: a line to send (none if empty) and
// the prefix of the reply expected (none if empty).
type step struct{ send, expect string }

func (c *client) run(steps []step) {
	c.t.Helper()
	for _, s := range steps {
		if s.send != "" {
			c.send(s.send)
		}
		if s.expect != "" {
			c.expect(s.expect)
		}
	}
}

// expectClosed checks that the server closed the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := c.r.ReadString('\n'); err == nil {
		c.t.Fatalf("read %q, want the connection closed", b)
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		c.t.Fatalf("read error %v, want EOF", err)
	}
}

// hello is the start of most dialogs.
var hello = []step{{"", "220 mx.test"}, {"EHLO client.test", "250 "}}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
