package smtp_test

import (
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice/smtp"
)

// within checks that f, which waits for the server to act on a deadline,
// returns within limit.
func within(t *testing.T, limit time.Duration, f func()) {
	t.Helper()
	start := time.Now()
	f()
	if elapsed := time.Since(start); elapsed > limit {
		t.Errorf("took %v, want at most %v", elapsed, limit)
	}
}

func TestHangingClients(t *testing.T) {
	short := 200 * time.Millisecond
	tests := []struct {
		name  string
		opts  []smtp.Option
		steps []step
		hang  string // sent without CRLF, then nothing
		want  string
	}{
		{"silent after connecting", []smtp.Option{smtp.WithGreetingTimeout(short)},
			[]step{{"", "220 "}}, "", "421 4.4.2"},
		// Go's textproto hands go-smtp a partial line when the read
		// times out, so the half command is answered before the 421.
		{"half a command", []smtp.Option{smtp.WithCommandTimeout(short)},
			hello, "MAIL FROM:<alice@exa", "421 4.4.2"},
		{"silent in DATA", []smtp.Option{smtp.WithDataTimeout(short)},
			append(hello, transaction...), "Subject: hi", "421 4.4.2"},
		{"silent between transactions", []smtp.Option{smtp.WithCommandTimeout(short)},
			hello, "", "421 4.4.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &recorder{}
			_, addr := startServer(t, q, tt.opts...)
			c := dial(t, addr)
			c.run(tt.steps)
			if tt.hang != "" {
				io.WriteString(c.nc, tt.hang)
			}
			within(t, 2*time.Second, func() {
				c.expectEventually(tt.want)
				c.expectClosed()
			})
			if n := len(q.messages()); n != 0 {
				t.Errorf("%d messages queued, want 0", n)
			}
		})
	}
}

// dribble writes b one byte every interval until the connection fails or
// the bound passes; it reports how many bytes it wrote.
func dribble(nc net.Conn, b string, interval, bound time.Duration) int {
	deadline := time.Now().Add(bound)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; time.Now().Before(deadline); i++ {
		if _, err := nc.Write([]byte{b[i%len(b)]}); err != nil {
			return i
		}
		<-tick.C
	}
	return -1
}

// TestSlowLoris: a client that sends a byte now and then never holds a
// connection past its deadlines: a command line must be whole within the
// command timeout, and DATA, whose timeout is per read, ends with the
// session timeout.
func TestSlowLoris(t *testing.T) {
	tests := []struct {
		name  string
		opts  []smtp.Option
		steps []step
		limit time.Duration
	}{
		{"command dribbled", []smtp.Option{smtp.WithCommandTimeout(300 * time.Millisecond)}, hello, 1500 * time.Millisecond},
		{"data dribbled", []smtp.Option{smtp.WithDataTimeout(300 * time.Millisecond), smtp.WithSessionTimeout(time.Second)},
			append(hello, transaction...), 2500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &recorder{}
			_, addr := startServer(t, q, tt.opts...)
			c := dial(t, addr)
			c.run(tt.steps)
			done := make(chan int, 1)
			start := time.Now()
			go func() { done <- dribble(c.nc, "NOOP NOOP x", 50*time.Millisecond, 10*time.Second) }()
			// The connection is closed under the dribbler, whatever the
			// server managed to say first.
			c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, c.r)
			if n := <-done; n < 0 {
				t.Fatal("the server let a slow client dribble for 10s")
			}
			if elapsed := time.Since(start); elapsed > tt.limit {
				t.Errorf("slow client held the connection %v, want at most %v", elapsed, tt.limit)
			}
			if n := len(q.messages()); n != 0 {
				t.Errorf("%d messages queued, want 0", n)
			}
		})
	}
}

func openFiles(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(entries)
}

// TestManyConnections holds 2,000 connections open at once, at the
// server's cap, and checks that the process's file descriptors stay
// bounded by it: refused connections are closed at once and closed ones
// are released.
func TestManyConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 connections")
	}
	const cap = 2000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if need := uint64(2*cap + 200); lim.Cur < need {
		lim.Cur = min(need, lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < need {
			t.Skipf("RLIMIT_NOFILE %d is too low for %d connections (%v)", lim.Cur, cap, err)
		}
	}
	reg := prometheus.NewRegistry()
	_, addr := startServer(t, &recorder{}, smtp.WithMaxConnections(cap), smtp.WithRegisterer(reg),
		smtp.WithStressConnections(cap), smtp.WithStressTimeout(time.Minute))
	base := openFiles(t)

	conns := make([]net.Conn, cap)
	var wg sync.WaitGroup
	errs := make(chan error, cap)
	work := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range work {
				nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					errs <- err
					continue
				}
				conns[i] = nc
				nc.SetReadDeadline(time.Now().Add(30 * time.Second))
				buf := make([]byte, 64)
				if n, err := nc.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "220 ") {
					errs <- err
				}
			}
		})
	}
	for i := range cap {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("connection %v", err)
	}
	t.Cleanup(func() {
		for _, nc := range conns {
			nc.Close()
		}
	})
	if got := counter(t, reg, "sluice_smtp_sessions", ""); got != cap {
		t.Fatalf("%v sessions open, want %d", got, cap)
	}
	bound := base + 2*cap + 50 // both ends of each connection are ours
	if n := openFiles(t); n > bound {
		t.Errorf("%d files open with %d connections, want at most %d", n, cap, bound)
	}

	// Over the cap: refused at once, and nothing piles up.
	for range 50 {
		c := dial(t, addr)
		c.expect("421 4.7.0 too many connections")
		c.expectClosed()
		c.nc.Close()
	}
	if n := openFiles(t); n > bound {
		t.Errorf("%d files open after refusals, want at most %d", n, bound)
	}

	for _, nc := range conns {
		nc.Close()
	}
	waitFor(t, "sessions to close", func() bool { return counter(t, reg, "sluice_smtp_sessions", "") == 0 })
	waitFor(t, "files to be released", func() bool { return openFiles(t) <= base+50 })
}
