package delivery_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

// faultServer serves every connection accepted on addr with handle, in
// its own goroutine, until the test ends. handle must return once the
// connection is closed. It returns the address and a count of accepted
// connections.
func faultServer(t *testing.T, addr string, handle func(net.Conn)) (string, *atomic.Int32, error) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	var accepted atomic.Int32
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns
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
				handle(c)
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
	return l.Addr().String(), &accepted, nil
}

// The faults a next hop can show. Each handler returns when the client
// closes the connection.
var (
	neverGreets  = func(c net.Conn) { io.Copy(io.Discard, c) }
	hangsAfter   = func(c net.Conn) { fmt.Fprint(c, "220 fault.test ESMTP\r\n"); io.Copy(io.Discard, c) }
	greets421    = func(c net.Conn) { fmt.Fprint(c, "421 4.7.0 fault.test too many connections, try later\r\n") }
	resetMidData = func(c net.Conn) { dialog(c, false, reset) }
)

// dialog plays a minimal ESMTP server: it accepts every command, offers
// STARTTLS when starttls is set (and then answers 220 and breaks the
// handshake by writing plain text), and hands the connection to data
// after "354".
func dialog(c net.Conn, starttls bool, data func(net.Conn, *bufio.Reader)) {
	br := bufio.NewReader(c)
	fmt.Fprint(c, "220 fault.test ESMTP\r\n")
	for range 100 {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		cmd, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(line)), " ")
		switch cmd {
		case "EHLO":
			if starttls {
				fmt.Fprint(c, "250-fault.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
			} else {
				fmt.Fprint(c, "250-fault.test\r\n250 8BITMIME\r\n")
			}
		case "STARTTLS":
			fmt.Fprint(c, "220 2.0.0 go ahead\r\nthis is not a TLS record\r\n")
			return
		case "DATA":
			fmt.Fprint(c, "354 go ahead\r\n")
			data(c, br)
			return
		case "QUIT":
			fmt.Fprint(c, "221 2.0.0 bye\r\n")
			return
		default:
			fmt.Fprint(c, "250 2.0.0 ok\r\n")
		}
	}
}

// reset reads a little of the message and resets the connection (RST).
func reset(c net.Conn, br *bufio.Reader) {
	io.ReadFull(br, make([]byte, 4096))
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// accept reads the message up to the final dot and accepts it.
func accept(n *atomic.Int32) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == ".\r\n" {
				n.Add(1)
				fmt.Fprint(c, "250 2.0.0 queued\r\n")
				return
			}
		}
	}
}

// bigBody is larger than the socket buffers, so a reset mid-DATA is seen
// while writing.
var bigBody = "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 998)+"\r\n", 4096)

// timed delivers msg and fails the test if the attempt overran limit.
func timed(t *testing.T, a *delivery.Agent, msg string, limit time.Duration, rcpt string) sluice.Outcome {
	t.Helper()
	start := time.Now()
	r := deliver(t, a, newMessage(msg, "a@x.test", rcpt))[0]
	if d := time.Since(start); d > limit {
		t.Errorf("attempt took %v, want under %v with 200ms timeouts", d, limit)
	}
	if r.Outcome == sluice.OutcomeDeferred && (r.Reply == nil || !r.Reply.Temporary()) {
		t.Errorf("deferred with reply %v, want a 4xx", r.Reply)
	}
	if r.Outcome != sluice.OutcomeDelivered {
		t.Logf("outcome %v, reply %v", r.Outcome, r.Reply)
	}
	return r.Outcome
}

func TestFaultsDeferWithinDeadline(t *testing.T) {
	tests := []struct {
		name   string
		handle func(net.Conn)
		body   string
		code   int // expected reply code, 0: any 4xx
	}{
		{"banner never sent", neverGreets, "x: y\r\n\r\nhi\r\n", 451},
		{"accepted then hung after greeting", hangsAfter, "x: y\r\n\r\nhi\r\n", 451},
		{"421 greeting", greets421, "x: y\r\n\r\nhi\r\n", 421},
		{"reset mid-DATA", resetMidData, bigBody, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, conns, err := faultServer(t, "127.0.0.1:0", tt.handle)
			if err != nil {
				t.Fatal(err)
			}
			e := newAgent(t, delivery.WithSmarthost(addr))
			start := time.Now()
			r := deliver(t, e.agent, newMessage(tt.body, "a@x.test", "b@y.test"))[0]
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("attempt took %v, want under 2s with 200ms timeouts", d)
			}
			if r.Outcome != sluice.OutcomeDeferred || r.Reply == nil || !r.Reply.Temporary() ||
				(tt.code != 0 && r.Reply.Code != tt.code) {
				t.Errorf("got %v %v, want deferred with a 4xx (code %d)", r.Outcome, r.Reply, tt.code)
			}
			if conns.Load() == 0 {
				t.Error("the faulty server was never reached")
			}
			if got := e.logs.records(t, "delivery")[0]["result"]; got != "deferred" {
				t.Errorf("log result %v, want deferred", got)
			}
		})
	}
}

// twoHosts starts a healthy sink on 127.0.0.2 and a faulty server on
// 127.0.0.1 on the same port, and returns DNS records naming them as the
// preference 10 (faulty) and 20 (healthy) MX hosts of mx2.test.
func twoHosts(t *testing.T, handle func(net.Conn)) (*smtptest.Sink, *atomic.Int32, int) {
	t.Helper()
	for range 10 { // the port free on 127.0.0.2 may be taken on 127.0.0.1
		sink := newSink(t, smtptest.WithListenAddr("127.0.0.2:0"))
		p := port(t, sink.Addr())
		_, conns, err := faultServer(t, fmt.Sprintf("127.0.0.1:%d", p), handle)
		if err == nil {
			return sink, conns, p
		}
		sink.Close()
	}
	t.Fatal("no port free on both 127.0.0.1 and 127.0.0.2")
	return nil, nil, 0
}

func TestConnectionFailureMovesToNextMX(t *testing.T) {
	tests := []struct {
		name   string
		handle func(net.Conn)
		body   string
	}{
		{"banner never sent", neverGreets, "x: y\r\n\r\nhi\r\n"},
		{"accepted then hung after greeting", hangsAfter, "x: y\r\n\r\nhi\r\n"},
		{"421 greeting", greets421, "x: y\r\n\r\nhi\r\n"},
		{"reset mid-DATA", resetMidData, bigBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink, conns, p := twoHosts(t, tt.handle)
			srv := newDNS(t,
				"mx2.test. 60 IN MX 10 bad.mx2.test.",
				"mx2.test. 60 IN MX 20 good.mx2.test.",
				"bad.mx2.test. 60 IN A 127.0.0.1",
				"good.mx2.test. 60 IN A 127.0.0.2",
			)
			// The faulty host meets the 200ms deadlines; the good one gets
			// time to take a 4 MiB body on a loaded, race-instrumented
			// machine (the reply after the final dot was seen to miss 200ms).
			slow := fast
			slow.Data = 5 * time.Second
			e := newAgent(t, delivery.WithResolvers(srv.Addr()), delivery.WithPort(p), delivery.WithTimeouts(slow))
			if got := timed(t, e.agent, tt.body, 6*time.Second, "b@mx2.test"); got != sluice.OutcomeDelivered {
				t.Fatalf("got %v, want delivered through the second MX host", got)
			}
			if conns.Load() == 0 {
				t.Error("the first MX host was never tried")
			}
			msgs := sink.Messages()
			if len(msgs) != 1 || string(msgs[0].Data) != tt.body {
				t.Errorf("second MX host got %d messages, want 1 with the whole body", len(msgs))
			}
			if got := e.logs.records(t, "delivery")[0]["relay"]; got != "good.mx2.test" {
				t.Errorf("log relay %v, want good.mx2.test", got)
			}
		})
	}
}

func Test421StormDefersEverythingQuickly(t *testing.T) {
	addr, conns, err := faultServer(t, "127.0.0.1:0", greets421)
	if err != nil {
		t.Fatal(err)
	}
	e := newAgent(t, delivery.WithSmarthost(addr))
	const n = 20
	start := time.Now()
	var wg sync.WaitGroup
	outcomes := make([]sluice.Outcome, n)
	codes := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r := e.agent.Deliver(ctx, newMessage("x: y\r\n\r\nhi\r\n", "a@x.test", "b@y.test"))[0]
			outcomes[i] = r.Outcome
			if r.Reply != nil {
				codes[i] = r.Reply.Code
			}
		}()
	}
	wg.Wait()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("%d attempts against a 421 storm took %v", n, d)
	}
	for i := range n {
		if outcomes[i] != sluice.OutcomeDeferred || codes[i] != 421 {
			t.Errorf("message %d: got %v %d, want deferred with the 421", i, outcomes[i], codes[i])
		}
	}
	if got := conns.Load(); got != n {
		t.Errorf("server saw %d connections, want %d (one per attempt)", got, n)
	}
}

func TestTempFailThenSuccessAndPermanentFailure(t *testing.T) {
	var calls atomic.Int32
	sink := newSink(t, smtptest.WithRcptFunc(func(from, to string) error {
		switch {
		case strings.HasPrefix(to, "gone@"):
			return sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no such user")
		case calls.Add(1) == 1:
			return sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1}, "greylisted, try again")
		}
		return nil
	}))
	e := newAgent(t, delivery.WithSmarthost(sink.Addr()))
	if got := timed(t, e.agent, "x: y\r\n\r\nhi\r\n", 2*time.Second, "b@y.test"); got != sluice.OutcomeDeferred {
		t.Fatalf("first attempt: got %v, want deferred on 451", got)
	}
	if got := timed(t, e.agent, "x: y\r\n\r\nhi\r\n", 2*time.Second, "b@y.test"); got != sluice.OutcomeDelivered {
		t.Fatalf("second attempt: got %v, want delivered", got)
	}
	if got := timed(t, e.agent, "x: y\r\n\r\nhi\r\n", 2*time.Second, "gone@y.test"); got != sluice.OutcomeBounced {
		t.Fatalf("550: got %v, want bounced", got)
	}
	if got := sink.Count(); got != 1 {
		t.Errorf("sink has %d messages, want 1", got)
	}
	recs := e.logs.records(t, "delivery")
	for i, want := range []string{"deferred", "delivered", "bounced"} {
		if recs[i]["result"] != want {
			t.Errorf("log record %d result %v, want %s", i, recs[i]["result"], want)
		}
	}
}

func TestTLSHandshakeFailureFallsBackToPlain(t *testing.T) {
	var delivered atomic.Int32
	addr, conns, err := faultServer(t, "127.0.0.1:0", func(c net.Conn) { dialog(c, true, accept(&delivered)) })
	if err != nil {
		t.Fatal(err)
	}
	e := newAgent(t, delivery.WithSmarthost(addr))
	if got := timed(t, e.agent, "x: y\r\n\r\nhi\r\n", 2*time.Second, "b@y.test"); got != sluice.OutcomeDelivered {
		t.Fatalf("got %v, want delivered in plain text after the failed handshake", got)
	}
	if got := conns.Load(); got != 2 {
		t.Errorf("server saw %d connections, want 2 (TLS attempt, plain retry)", got)
	}
	if got := delivered.Load(); got != 1 {
		t.Errorf("server accepted %d messages, want 1", got)
	}
	if got := e.logs.records(t, "delivery")[0]["tls"]; got != false {
		t.Errorf("log tls = %v, want false", got)
	}
}
