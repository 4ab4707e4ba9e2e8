package delivery

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// nopEnqueuer takes no notifications; the chaining tests make none.
type nopEnqueuer struct{}

func (nopEnqueuer) Enqueue(context.Context, *sluice.Envelope, io.Reader) (string, error) {
	return "", nil
}

// writeLog records what the agent writes to each connection, one entry
// per Write call, and counts the connections it opens.
type writeLog struct {
	mu     sync.Mutex
	writes []string
	dials  int
}

func (w *writeLog) dial(ctx context.Context, network, laddr, raddr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, raddr)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.dials++
	w.mu.Unlock()
	return &loggedConn{Conn: c, log: w}, nil
}

func (w *writeLog) snapshot() (writes []string, dials int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...), w.dials
}

type loggedConn struct {
	net.Conn
	log *writeLog
}

func (c *loggedConn) Write(p []byte) (int, error) {
	c.log.mu.Lock()
	c.log.writes = append(c.log.writes, string(p))
	c.log.mu.Unlock()
	return c.Conn.Write(p)
}

// scriptServer listens on 127.0.0.1:0 and hands each connection to the
// next of handlers (later connections get the last one), all stopped at
// cleanup.
func scriptServer(t *testing.T, handlers ...func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			h := handlers[min(i, len(handlers)-1)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second)) // bounds a forgotten peer
				h(c, bufio.NewReader(c))
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
	return l.Addr().String()
}

// readLines reads n command lines; false if the client went away.
func readLines(r *bufio.Reader, n int) bool {
	for range n {
		if _, err := r.ReadString('\n'); err != nil {
			return false
		}
	}
	return true
}

// readBody reads up to and including the final dot.
func readBody(r *bufio.Reader) bool {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return false
		}
		if line == ".\r\n" {
			return true
		}
	}
}

// gate is a channel that a test opens once, or its cleanup does, so that
// a handler waiting on it never outlives a failed test.
type gate struct {
	once sync.Once
	ch   chan struct{}
}

func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// unexpected is the handler of a connection a test does not expect.
func unexpected(t *testing.T) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, r *bufio.Reader) {
		t.Error("the agent opened a connection the test does not expect")
		serveAll(c, r)
	}
}

func greet(c net.Conn, r *bufio.Reader) bool {
	io.WriteString(c, "220 hop.test ESMTP\r\n")
	if !readLines(r, 1) {
		return false
	}
	_, err := io.WriteString(c, "250-hop.test\r\n250 PIPELINING\r\n")
	return err == nil
}

// serveAll plays a pipelining server that takes any number of messages.
func serveAll(c net.Conn, r *bufio.Reader) {
	if !greet(c, r) {
		return
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil || strings.HasPrefix(line, "QUIT") {
			io.WriteString(c, "221 bye\r\n")
			return
		}
		switch {
		case strings.HasPrefix(line, "DATA"):
			io.WriteString(c, "354 go\r\n")
			if !readBody(r) {
				return
			}
			io.WriteString(c, "250 2.0.0 queued\r\n")
		default:
			io.WriteString(c, "250 ok\r\n")
		}
	}
}

func chainAgent(t *testing.T, addr string, w *writeLog, opts ...Option) *Agent {
	t.Helper()
	ms := 500 * time.Millisecond
	base := []Option{
		WithHostname("mta.test"), WithSmarthost(addr), WithDialer(w.dial),
		WithTimeouts(Timeouts{Connect: ms, Greeting: ms, Hello: ms, StartTLS: ms, Mail: ms, Rcpt: ms, DataStart: ms, Data: ms, Command: ms, DNS: ms}),
		WithLogger(slog.New(slog.DiscardHandler)),
	}
	a, err := New(nopEnqueuer{}, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func chainMessage(id, to string) *queue.Message {
	body := "Subject: " + id + "\r\n\r\nhello\r\n"
	env := &sluice.Envelope{ID: id, From: "a@x.test", Recipients: []sluice.Recipient{{Address: to}}}
	return queue.NewMessage(env, int64(len(body)), func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(body)), nil
	})
}

// deliverAsync delivers msg on its own goroutine; the channel gets the
// first recipient's result.
func deliverAsync(ctx context.Context, a *Agent, msg *queue.Message) <-chan queue.Result {
	ch := make(chan queue.Result, 1)
	go func() { ch <- a.Deliver(ctx, msg)[0] }()
	return ch
}

// within waits for ch, at most 10s.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// waitFor polls cond until it holds or 5s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// joined reports whether a follower waits on a connection of the
// agent's smarthost destination.
func joined(a *Agent) bool {
	a.shaper.mu.Lock()
	var ds []*destination
	for _, d := range a.shaper.dests {
		ds = append(ds, d)
	}
	a.shaper.mu.Unlock()
	for _, d := range ds {
		d.mu.Lock()
		for _, c := range d.chains {
			if c.joined != nil {
				d.mu.Unlock()
				return true
			}
		}
		d.mu.Unlock()
	}
	return false
}

// leaderHeld is the first connection of the chaining tests: it takes A's
// commands, tells the test, and answers DATA only when released. After
// A's body it reads three more command lines (B's, which the agent sends
// with A's dot) and then does what after says.
func leaderHeld(gotA chan<- struct{}, release *gate, after func(c net.Conn, r *bufio.Reader)) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, r *bufio.Reader) {
		if !greet(c, r) || !readLines(r, 3) {
			return
		}
		close(gotA)
		<-release.ch
		io.WriteString(c, "250 ok\r\n250 ok\r\n354 go\r\n")
		if !readBody(r) || !readLines(r, 3) {
			return
		}
		after(c, r)
	}
}

func TestChainedTransactionRidesTheLeadersWrite(t *testing.T) {
	gotA, release := make(chan struct{}), newGate()
	addr := scriptServer(t, leaderHeld(gotA, release, func(c net.Conn, r *bufio.Reader) {
		// A's reply, then B's three, as a pipelining server sends them.
		io.WriteString(c, "250 2.0.0 A queued\r\n250 ok\r\n250 ok\r\n354 go\r\n")
		if !readBody(r) {
			return
		}
		io.WriteString(c, "250 2.0.0 B queued\r\n")
		serveAll(c, r) // without a greeting: EOF or QUIT end it
	}), unexpected(t))
	t.Cleanup(release.open) // runs before the server's cleanup, which waits for its handlers
	w := &writeLog{}
	a := chainAgent(t, addr, w)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resA := deliverAsync(ctx, a, chainMessage("A", "a@y.test"))
	within(t, gotA, "A's commands")
	resB := deliverAsync(ctx, a, chainMessage("B", "b@y.test"))
	waitFor(t, "B to join A's connection", func() bool { return joined(a) })
	release.open()
	for name, ch := range map[string]<-chan queue.Result{"A": resA, "B": resB} {
		if r := within(t, ch, name+"'s result"); r.Outcome != sluice.OutcomeDelivered || !strings.Contains(r.Reply.Message, name+" queued") {
			t.Errorf("%s: %v %v, want delivered with its own reply", name, r.Outcome, r.Reply)
		}
	}
	writes, dials := w.snapshot()
	if dials != 1 {
		t.Errorf("%d connections for two messages, want 1", dials)
	}
	found := false
	for _, s := range writes {
		if strings.Contains(s, "hello\r\n.\r\nMAIL FROM:<a@x.test>") && strings.HasSuffix(s, "RCPT TO:<b@y.test>\r\nDATA\r\n") {
			found = true
		}
	}
	if !found {
		t.Errorf("A's final dot and B's commands never went out in one write; writes: %q", writes)
	}
}

func TestChainedFollowerStartsAgain(t *testing.T) {
	tests := []struct {
		name  string
		after func(c net.Conn, r *bufio.Reader) // what A's connection does once B's commands are in
		wantA sluice.Outcome
	}{
		{"connection closed after A's reply", func(c net.Conn, r *bufio.Reader) {
			io.WriteString(c, "250 2.0.0 A queued\r\n")
		}, sluice.OutcomeDelivered},
		{"421 to A's dot", func(c net.Conn, r *bufio.Reader) {
			io.WriteString(c, "421 4.3.2 shutting down\r\n")
		}, sluice.OutcomeDeferred},
		{"no reply to A's dot", func(c net.Conn, r *bufio.Reader) {}, sluice.OutcomeDeferred},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotA, release := make(chan struct{}), newGate()
			addr := scriptServer(t, leaderHeld(gotA, release, tt.after), serveAll)
			t.Cleanup(release.open) // runs before the server's cleanup, which waits for its handlers
			w := &writeLog{}
			a := chainAgent(t, addr, w)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resA := deliverAsync(ctx, a, chainMessage("A", "a@y.test"))
			within(t, gotA, "A's commands")
			resB := deliverAsync(ctx, a, chainMessage("B", "b@y.test"))
			waitFor(t, "B to join A's connection", func() bool { return joined(a) })
			release.open()
			if r := within(t, resA, "A's result"); r.Outcome != tt.wantA {
				t.Errorf("A: %v %v, want %v", r.Outcome, r.Reply, tt.wantA)
			}
			// B's commands went out but it never sent a body: it is
			// sent again on a connection of its own, in the same
			// attempt, and its recipient is delivered once.
			if r := within(t, resB, "B's result"); r.Outcome != sluice.OutcomeDelivered {
				t.Errorf("B: %v %v, want delivered", r.Outcome, r.Reply)
			}
			if _, dials := w.snapshot(); dials != 2 {
				t.Errorf("%d connections, want 2", dials)
			}
		})
	}
}

func TestFollowerLeavesBeforeItsTurn(t *testing.T) {
	gotA, release := make(chan struct{}), newGate()
	var afterDot string
	done := make(chan struct{})
	addr := scriptServer(t, func(c net.Conn, r *bufio.Reader) {
		defer close(done)
		if !greet(c, r) || !readLines(r, 3) {
			return
		}
		close(gotA)
		<-release.ch
		io.WriteString(c, "250 ok\r\n250 ok\r\n354 go\r\n")
		if !readBody(r) {
			return
		}
		io.WriteString(c, "250 2.0.0 A queued\r\n")
		afterDot, _ = r.ReadString('\n') // QUIT when the agent closes, not B's MAIL
		io.WriteString(c, "221 bye\r\n")
	}, unexpected(t))
	t.Cleanup(release.open) // runs before the server's cleanup, which waits for its handlers
	w := &writeLog{}
	a := chainAgent(t, addr, w)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resA := deliverAsync(ctx, a, chainMessage("A", "a@y.test"))
	within(t, gotA, "A's commands")
	bctx, bcancel := context.WithCancel(ctx)
	resB := deliverAsync(bctx, a, chainMessage("B", "b@y.test"))
	waitFor(t, "B to join A's connection", func() bool { return joined(a) })
	bcancel()
	if r := within(t, resB, "B's result"); r.Outcome != sluice.OutcomeDeferred {
		t.Errorf("B: %v %v, want deferred", r.Outcome, r.Reply)
	}
	if joined(a) {
		t.Error("B still waits on A's connection after its attempt ended")
	}
	release.open()
	if r := within(t, resA, "A's result"); r.Outcome != sluice.OutcomeDelivered {
		t.Errorf("A: %v %v, want delivered", r.Outcome, r.Reply)
	}
	a.Close()
	within(t, done, "the server to finish")
	if afterDot != "QUIT\r\n" {
		t.Errorf("after A's dot the server read %q, want QUIT", afterDot)
	}
	if _, dials := w.snapshot(); dials != 1 {
		t.Errorf("%d connections, want 1", dials)
	}
}

func TestChainingOff(t *testing.T) {
	gotA, release := make(chan struct{}), newGate()
	secondConn := make(chan struct{})
	addr := scriptServer(t,
		func(c net.Conn, r *bufio.Reader) {
			if !greet(c, r) || !readLines(r, 3) {
				return
			}
			close(gotA)
			<-release.ch
			io.WriteString(c, "250 ok\r\n250 ok\r\n354 go\r\n")
			if !readBody(r) {
				return
			}
			io.WriteString(c, "250 2.0.0 A queued\r\n")
			serveAll(c, r)
		},
		func(c net.Conn, r *bufio.Reader) {
			close(secondConn)
			serveAll(c, r)
		})
	t.Cleanup(release.open) // runs before the server's cleanup, which waits for its handlers
	w := &writeLog{}
	a := chainAgent(t, addr, w, WithChaining(false))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resA := deliverAsync(ctx, a, chainMessage("A", "a@y.test"))
	within(t, gotA, "A's commands")
	resB := deliverAsync(ctx, a, chainMessage("B", "b@y.test"))
	within(t, secondConn, "B's connection") // B opens a connection of its own while A's waits
	if r := within(t, resB, "B's result"); r.Outcome != sluice.OutcomeDelivered {
		t.Errorf("B: %v %v, want delivered", r.Outcome, r.Reply)
	}
	release.open()
	if r := within(t, resA, "A's result"); r.Outcome != sluice.OutcomeDelivered {
		t.Errorf("A: %v %v, want delivered", r.Outcome, r.Reply)
	}
	writes, _ := w.snapshot()
	for _, s := range writes {
		if strings.Contains(s, ".\r\nMAIL") {
			t.Errorf("a dot and a MAIL went out in one write with chaining off: %q", s)
		}
	}
}

// TestChainingUnderLoad delivers many messages from many goroutines at
// once over few connections: every one is delivered exactly once.
func TestChainingUnderLoad(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int{}
	addr := scriptServer(t, func(c net.Conn, r *bufio.Reader) {
		if !greet(c, r) {
			return
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil || strings.HasPrefix(line, "QUIT") {
				io.WriteString(c, "221 bye\r\n")
				return
			}
			if !strings.HasPrefix(line, "DATA") {
				io.WriteString(c, "250 ok\r\n")
				continue
			}
			io.WriteString(c, "354 go\r\n")
			subject, _ := r.ReadString('\n')
			if !readBody(r) {
				return
			}
			mu.Lock()
			got[strings.TrimSpace(subject)]++
			mu.Unlock()
			io.WriteString(c, "250 2.0.0 queued\r\n")
		}
	})
	w := &writeLog{}
	a := chainAgent(t, addr, w, WithShaping(Shaping{Concurrency: 4, InitialConcurrency: 4}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 400
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			id := fmt.Sprintf("M%03d", i)
			if r := a.Deliver(ctx, chainMessage(id, "r@y.test"))[0]; r.Outcome != sluice.OutcomeDelivered {
				t.Errorf("%s: %v %v", id, r.Outcome, r.Reply)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n {
		t.Errorf("server got %d distinct messages, want %d", len(got), n)
	}
	for s, k := range got {
		if k != 1 {
			t.Errorf("%s arrived %d times", s, k)
		}
	}
	writes, dials := w.snapshot()
	chained := 0
	for _, s := range writes {
		if strings.Contains(s, ".\r\nMAIL FROM:") {
			chained++
		}
	}
	t.Logf("%d messages over %d connections; %d dots carried the next message's commands", n, dials, chained)
	if chained == 0 {
		t.Error("no transaction was chained")
	}
}
