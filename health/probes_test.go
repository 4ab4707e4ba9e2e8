package health

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/sluicemta/sluice/internal/blackhole"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

func TestProbeFuncs(t *testing.T) {
	sink, err := smtptest.NewSink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	silent := blackhole.Start(t, "127.0.0.1:0")
	httpOK := httpServer(t, http.StatusOK, "fine")
	http500 := httpServer(t, http.StatusInternalServerError, "broken")
	unixSpamd := newPingServer(t, "unix")

	tests := []struct {
		name    string
		probe   ProbeFunc
		addr    string
		healthy bool
	}{
		{"tcp: accepting port", TCPConnect(), silent, true},
		{"tcp: closed port", TCPConnect(), closedPort(t), false},
		{"smtp: working server", SMTPSession("probe.example"), sink.Addr(), true},
		{"smtp: never greets", SMTPSession(""), silent, false},
		{"smtp: LMTP server refuses EHLO", SMTPSession(""), lmtpServer(t), false},
		{"lmtp: working server", LMTPSession("probe.example"), lmtpServer(t), true},
		{"lmtp: never greets", LMTPSession(""), silent, false},
		{"spamd: PONG", SpamdPing(), newPingServer(t, "tcp").addr, true},
		{"spamd: PONG on a unix socket", SpamdPing(), unixSpamd.addr, true},
		{"spamd: never answers", SpamdPing(), silent, false},
		{"spamd: an SMTP server is not spamd", SpamdPing(), sink.Addr(), false},
		{"http: 200", HTTPStatus("/health"), httpOK, true},
		{"http: 500", HTTPStatus("health"), http500, false},
		{"http: never answers", HTTPStatus("/"), silent, false},
		{"rspamd: pong", RspamdPing(), httpServer(t, http.StatusOK, "pong\r\n"), true},
		{"rspamd: 200 without pong", RspamdPing(), httpOK, false},
		{"dns: NOERROR", DNSQuery("example.org"), dnsServer(t, dns.RcodeSuccess), true},
		{"dns: NXDOMAIN still answers", DNSQuery("nope.example"), dnsServer(t, dns.RcodeNameError), true},
		{"dns: SERVFAIL", DNSQuery("example.org"), dnsServer(t, dns.RcodeServerFailure), false},
		{"dns: silence", DNSQuery("example.org"), silentUDP(t), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const deadline = 500 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			err := tc.probe(ctx, tc.addr)
			if got := err == nil; got != tc.healthy {
				t.Fatalf("healthy = %v (err %v), want %v", got, err, tc.healthy)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "health: ") {
				t.Errorf("error %q lacks the health: prefix", err)
			}
			// Not the point here (TestSeed000 is): only that no probe hangs.
			if d := time.Since(start); d > deadline+5*time.Second {
				t.Errorf("probe took %v with a %v deadline", d, deadline)
			}
		})
	}
}

// TestSeed000 reproduces seed 000: a filter server that accepts TCP
// connections but never greets. A TCP check calls it healthy; the SMTP
// probe reports it down within its deadline.
func TestSeed000(t *testing.T) {
	addr := blackhole.Start(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := TCPConnect()(ctx, addr); err != nil {
		t.Fatalf("TCP check of the silent server: %v, want healthy (that is the trap)", err)
	}

	const deadline = 200 * time.Millisecond
	down := make(chan time.Time, 1)
	p, err := NewProbe(addr, SMTPSession(""), WithFall(1), WithProbeDeadline(deadline), WithProbeInterval(time.Hour),
		WithProbeOnChange(func(_ string, up bool, _ error) {
			if !up {
				down <- time.Now()
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.Start()
	t.Cleanup(func() { p.Close() })
	select {
	case at := <-down:
		if d := at.Sub(start); d > deadline+250*time.Millisecond {
			t.Errorf("marked down after %v, deadline %v", d, deadline)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the probe never marked the silent server down")
	}
	if p.Healthy() {
		t.Error("Healthy() = true after the transition to down")
	}
	if err := p.Check(ctx); err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("Check = %v, want the deadline error", err)
	}
}

// TestProbeRiseFall checks the hysteresis: down after exactly fall failed
// checks, up after exactly rise successful ones.
func TestProbeRiseFall(t *testing.T) {
	const rise, fall = 3, 2
	srv := newPingServer(t, "tcp")
	type event struct {
		up            bool
		stalls, pongs int64
	}
	events := make(chan event, 4)
	p, err := NewProbe(srv.addr, SpamdPing(),
		WithRise(rise), WithFall(fall), WithProbeInterval(10*time.Millisecond), WithProbeDeadline(100*time.Millisecond),
		WithProbeOnChange(func(_ string, up bool, _ error) {
			events <- event{up, srv.stalls.Load(), srv.pongs.Load()}
		}))
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(func() { p.Close() })
	waitFor(t, "two PONGs", func() bool { return srv.pongs.Load() >= 2 })
	if !p.Healthy() {
		t.Fatal("a probe of a working server is down")
	}

	srv.setHung(true)
	ev := next(t, events)
	if ev.up || ev.stalls != fall {
		t.Fatalf("got %+v, want down after %d stalled checks", ev, fall)
	}
	pongsWhenDown := ev.pongs
	srv.setHung(false)
	ev = next(t, events)
	if !ev.up || ev.pongs-pongsWhenDown != rise {
		t.Fatalf("got %+v, want up after %d PONGs since %d", ev, rise, pongsWhenDown)
	}
	if err := p.Check(context.Background()); err != nil {
		t.Errorf("Check after recovery = %v", err)
	}
}

func TestProbeMarkDownNeedsRise(t *testing.T) {
	srv := newPingServer(t, "tcp")
	ups := make(chan int64, 1)
	p, err := NewProbe(srv.addr, SpamdPing(), WithRise(2), WithProbeInterval(10*time.Millisecond),
		WithProbeOnChange(func(_ string, up bool, _ error) {
			if up {
				ups <- srv.pongs.Load()
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	p.MarkDown(nil)
	if p.Healthy() {
		t.Fatal("Healthy() after MarkDown")
	}
	before := srv.pongs.Load()
	p.Start()
	t.Cleanup(func() { p.Close() })
	select {
	case n := <-ups:
		if n-before != 2 {
			t.Errorf("up after %d PONGs, want 2", n-before)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never came back up")
	}
}

func TestProbeCloseStopsChecks(t *testing.T) {
	srv := newPingServer(t, "tcp")
	p, err := NewProbe(srv.addr, SpamdPing(), WithProbeInterval(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	p.Start() // a second Start does nothing
	waitFor(t, "a PONG", func() bool { return srv.pongs.Load() >= 1 })
	p.Close()
	p.Close()
	n := srv.pongs.Load()
	time.Sleep(50 * time.Millisecond) // ten intervals: no check may run
	if got := srv.pongs.Load(); got != n {
		t.Errorf("%d checks after Close", got-n)
	}
	p.Start() // after Close: nothing
}

func TestNewProbeRejectsBadOptions(t *testing.T) {
	for _, opt := range []ProbeOption{WithProbeInterval(0), WithProbeDeadline(-1), WithRise(0), WithFall(0), WithProbeLogger(nil)} {
		if _, err := NewProbe("127.0.0.1:1", TCPConnect(), opt); err == nil || !strings.HasPrefix(err.Error(), "health: probe ") {
			t.Errorf("NewProbe with a bad option: err = %v", err)
		}
	}
	if _, err := NewProbe("", TCPConnect()); err == nil {
		t.Error("NewProbe with no address: no error")
	}
	if _, err := NewProbe("127.0.0.1:1", nil); err == nil {
		t.Error("NewProbe with no ProbeFunc: no error")
	}
}

// pingServer speaks the PING part of the spamd protocol. While hung it
// accepts connections and never answers them.
type pingServer struct {
	addr   string
	hung   atomic.Bool
	pongs  atomic.Int64 // PONGs sent
	stalls atomic.Int64 // connections accepted while hung
}

func newPingServer(t *testing.T, network string) *pingServer {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "spamd.sock")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &pingServer{addr: l.Addr().String()}
	if network == "unix" {
		s.addr = "unix:" + addr
	}
	serve(t, l, s.handle)
	return s
}

func (s *pingServer) setHung(on bool) { s.hung.Store(on) }

func (s *pingServer) handle(c net.Conn) {
	if s.hung.Load() {
		s.stalls.Add(1)
		io.Copy(io.Discard, c) // until the client gives up
		return
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if line == "\r\n" {
			break
		}
	}
	s.pongs.Add(1) // before the answer, so a probe that has it sees the count
	io.WriteString(c, "SPAMD/1.5 0 PONG\r\n")
}

// serve accepts connections on l and runs handle on each, until the test
// ends; then it closes the listener and every connection and waits.
func serve(t *testing.T, l net.Listener, handle func(net.Conn)) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards conns
		conns = map[net.Conn]bool{}
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				c.SetDeadline(time.Now().Add(time.Minute))
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func httpServer(t *testing.T, code int, body string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func dnsServer(t *testing.T, rcode int) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetRcode(r, rcode)
			w.WriteMsg(m)
		})}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func silentUDP(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// lmtpServer is a go-smtp server in LMTP mode.
func lmtpServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := smtp.NewServer(lmtpBackend{})
	s.LMTP = true
	s.Domain = "lmtp.example"
	s.ReadTimeout = time.Minute
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(l) }()
	t.Cleanup(func() { s.Close(); <-done })
	return l.Addr().String()
}

type lmtpBackend struct{}

func (lmtpBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return lmtpSession{}, nil }

type lmtpSession struct{}

func (lmtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (lmtpSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (lmtpSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }
func (lmtpSession) Reset()                               {}
func (lmtpSession) Logout() error                        { return nil }

// waitFor polls cond until it holds, failing the test after 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func next[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a transition")
		var zero T
		return zero
	}
}
