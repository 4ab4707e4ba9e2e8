package delivery_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/delivery/dnstest"
	"github.com/sluicemta/sluice/queue"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

// fast are the timeouts of every test agent: a hung peer costs 200ms.
var fast = delivery.Timeouts{
	Connect:   200 * time.Millisecond,
	Greeting:  200 * time.Millisecond,
	Hello:     200 * time.Millisecond,
	StartTLS:  200 * time.Millisecond,
	Mail:      200 * time.Millisecond,
	Rcpt:      200 * time.Millisecond,
	DataStart: 200 * time.Millisecond,
	Data:      200 * time.Millisecond,
	Command:   200 * time.Millisecond,
	DNS:       200 * time.Millisecond,
}

// recorder is an Enqueuer that keeps what it is given.
type recorder struct {
	mu   sync.Mutex
	envs []*sluice.Envelope
	msgs [][]byte
	err  error
}

func (r *recorder) Enqueue(_ context.Context, env *sluice.Envelope, body io.Reader) (string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return "", r.err
	}
	r.envs = append(r.envs, env.Clone())
	r.msgs = append(r.msgs, b)
	return "DSN1", nil
}

// logBuffer collects JSON log records.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// records returns the records with the given message.
func (l *logBuffer) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bad log line %q: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

type env struct {
	agent *delivery.Agent
	dsn   *recorder
	logs  *logBuffer
}

func newAgent(t *testing.T, opts ...delivery.Option) env {
	t.Helper()
	e := env{dsn: &recorder{}, logs: &logBuffer{}}
	base := []delivery.Option{
		delivery.WithHostname("mta.test"),
		delivery.WithTimeouts(fast),
		delivery.WithLogger(slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}
	a, err := delivery.New(e.dsn, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	e.agent = a
	return e
}

func newSink(t *testing.T, opts ...smtptest.Option) *smtptest.Sink {
	t.Helper()
	s, err := smtptest.NewSink(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newDNS(t *testing.T, records ...string) *dnstest.Server {
	t.Helper()
	s, err := dnstest.NewServer(records...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range p {
		n = n*10 + int(c-'0')
	}
	return n
}

func newMessage(body string, from string, to ...string) *queue.Message {
	e := &sluice.Envelope{ID: "Q1", From: from, Received: time.Now().Add(-time.Second)}
	for _, a := range to {
		e.Recipients = append(e.Recipients, sluice.Recipient{Address: a})
	}
	return queue.NewMessage(e, int64(len(body)), func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(body)), nil
	})
}

func deliver(t *testing.T, a *delivery.Agent, msg *queue.Message) []queue.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := a.Deliver(ctx, msg)
	if len(res) != len(msg.Envelope.Recipients) {
		t.Fatalf("got %d results for %d recipients", len(res), len(msg.Envelope.Recipients))
	}
	return res
}

// failingReader returns data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

var errDamaged = errors.New("checksum mismatch")

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

// clock is a settable clock for WithClock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// dialer records the addresses the agent dials and redirects some of them
// (such as "[::1]:25") to real listeners.
type dialer struct {
	// writeBuffer, if set, is the send buffer size of every connection,
	// so that a peer that stops reading blocks the client's writes early.
	writeBuffer int

	mu       sync.Mutex
	redirect map[string]string
	dialed   []string
	sources  []string
}

func (d *dialer) dial(ctx context.Context, network, laddr, raddr string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, raddr)
	d.sources = append(d.sources, laddr)
	if to, ok := d.redirect[raddr]; ok {
		raddr = to
	}
	d.mu.Unlock()
	var nd net.Dialer
	if laddr != "" {
		nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(laddr)}
	}
	c, err := nd.DialContext(ctx, network, raddr)
	if err == nil && d.writeBuffer > 0 {
		err = c.(*net.TCPConn).SetWriteBuffer(d.writeBuffer)
	}
	return c, err
}

func (d *dialer) Dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dialed...)
}

// fakeServer accepts connections on addr and runs handle for each in its
// own goroutine; it stops them all at cleanup. It returns the listening
// address and a counter of accepted connections.
func fakeServer(t *testing.T, addr string, handle func(c net.Conn, r *bufio.Reader)) (string, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second)) // bounds a forgotten peer
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String(), &accepted
}

// converse plays a server's side of an SMTP dialogue: for each step it
// writes the reply, then reads one command line (none after the last).
// It returns false when the client went away.
func converse(c net.Conn, r *bufio.Reader, replies ...string) bool {
	for i, reply := range replies {
		if reply != "" {
			if _, err := io.WriteString(c, reply+"\r\n"); err != nil {
				return false
			}
		}
		if i == len(replies)-1 {
			break
		}
		if _, err := r.ReadString('\n'); err != nil {
			return false
		}
	}
	return true
}

// waitClosed blocks until the client closes the connection.
func waitClosed(r *bufio.Reader) { _, _ = io.Copy(io.Discard, r) }

// acceptOne plays a server that accepts one message per connection and
// then answers only QUIT (anything else closes the connection).
func acceptOne(c net.Conn, r *bufio.Reader) {
	if !converse(c, r, "220 one.test ESMTP", "250 one.test", "250 ok", "250 ok", "354 go") {
		return
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if line == ".\r\n" {
			break
		}
	}
	if !converse(c, r, "250 2.0.0 queued", "") {
		return
	}
	// converse read the next command: answer it if it is QUIT.
	io.WriteString(c, "221 bye\r\n")
}

// eventually polls cond until it holds or 5s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// metricValue returns the value of counter name (with label=value, if
// label is not empty) in reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no metric %s{%s=%q}", name, label, value)
	return 0
}
