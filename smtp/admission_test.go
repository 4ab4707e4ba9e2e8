package smtp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
	"github.com/sluicemta/sluice/smtp"
)

// logBuffer is a slog destination tests can read.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() smtp.Option {
	return smtp.WithLogger(slog.New(slog.NewTextHandler(b, nil)))
}

func TestConnectionCap(t *testing.T) {
	var logs logBuffer
	reg := prometheus.NewRegistry()
	_, addr := startServer(t, &recorder{}, smtp.WithMaxConnections(2), logs.logger(), smtp.WithRegisterer(reg))
	a, b := dial(t, addr), dial(t, addr)
	a.run(hello)
	b.run(hello)

	c := dial(t, addr)
	c.expect("421 4.7.0 too many connections")
	c.expectClosed()
	if !strings.Contains(logs.String(), "too many connections") {
		t.Errorf("no log line for the refused connection:\n%s", logs.String())
	}
	if got := counter(t, reg, "sluice_smtp_refused_connections_total", "connections"); got != 1 {
		t.Errorf(`refused_connections_total{reason="connections"} = %v, want 1`, got)
	}

	// A closed connection frees its place.
	a.run([]step{{"QUIT", "221"}})
	a.expectClosed()
	waitFor(t, "a free place", func() bool {
		d := dial(t, addr)
		lines, err := d.reply()
		return err == nil && strings.HasPrefix(lines[0], "220 ")
	})
}

func TestPerClientLimits(t *testing.T) {
	t.Run("concurrent connections", func(t *testing.T) {
		var logs logBuffer
		_, addr := startServer(t, &recorder{}, untrusted, smtp.WithMaxConnectionsPerIP(2), logs.logger())
		dial(t, addr).run(hello)
		dial(t, addr).run(hello)
		c := dial(t, addr)
		c.expect("421 4.7.0 too many connections from your address")
		c.expectClosed()
		if !strings.Contains(logs.String(), "connection refused") {
			t.Errorf("no log line for the refused connection:\n%s", logs.String())
		}
	})
	t.Run("trusted clients are not limited", func(t *testing.T) {
		_, addr := startServer(t, &recorder{}, smtp.WithMaxConnectionsPerIP(1))
		dial(t, addr).run(hello)
		dial(t, addr).run(hello)
	})
	t.Run("connection rate", func(t *testing.T) {
		_, addr := startServer(t, &recorder{}, untrusted, smtp.WithConnectionRate(rate.Every(time.Hour), 2))
		for range 2 {
			c := dial(t, addr)
			c.run(append(hello, step{"QUIT", "221"}))
		}
		c := dial(t, addr)
		c.expect("421 4.7.0 too many connections from your address recently")
		c.expectClosed()
	})
	t.Run("message rate", func(t *testing.T) {
		_, addr := startServer(t, &recorder{}, untrusted, smtp.WithLocalDomains("example.net"),
			smtp.WithMessageRate(rate.Every(time.Hour), 2))
		c := dial(t, addr)
		c.run(hello)
		for range 2 {
			c.run(append(transaction, step{"Subject: hi\r\n\r\nhi\r\n.", "250 2.0.0"}))
		}
		c.run([]step{{"MAIL FROM:<alice@example.org>", "451 4.7.1 too many messages"}})
	})
}

// level is a Gauge whose value the test sets.
type level struct{ v atomic.Int64 }

func (l *level) Measure(context.Context) (float64, error) { return float64(l.v.Load()), nil }

func TestHealthGate(t *testing.T) {
	g := &level{}
	reg := prometheus.NewRegistry()
	_, addr := startServer(t, &recorder{}, smtp.WithGate("queue", g, 10, 5),
		smtp.WithGateInterval(time.Nanosecond), smtp.WithRegisterer(reg))

	busy := dial(t, addr) // a transaction in flight when the gate closes
	busy.run(append(hello, transaction[:2]...))
	idle := dial(t, addr) // a session between transactions
	idle.run(hello)

	g.v.Store(10)
	c := dial(t, addr)
	c.expect("421 4.3.2 system not accepting network messages")
	c.expectClosed()
	idle.run([]step{{"MAIL FROM:<alice@example.org>", "451 4.3.1 mail system full"}})
	busy.run([]step{{"DATA", "354 "}, {"Subject: hi\r\n\r\nhi\r\n.", "250 2.0.0"}})
	if got := counter(t, reg, "sluice_smtp_refused_connections_total", "gate"); got != 1 {
		t.Errorf(`refused_connections_total{reason="gate"} = %v, want 1`, got)
	}

	g.v.Store(6) // under high, above low: still closed
	dial(t, addr).expect("421 4.3.2")
	g.v.Store(5)
	dial(t, addr).run(append(hello, transaction...))
}

// memDeliverer records what the queue delivers.
type memDeliverer struct {
	mu     sync.Mutex // guards bodies
	bodies map[string]string
}

func (d *memDeliverer) Deliver(ctx context.Context, msg *queue.Message) []queue.Result {
	r, err := msg.Open()
	if err != nil {
		return nil
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil
	}
	d.mu.Lock()
	d.bodies[msg.Envelope.Recipients[0].Address] = string(b)
	d.mu.Unlock()
	res := make([]queue.Result, len(msg.Envelope.Recipients))
	for i := range res {
		res[i].Outcome = sluice.OutcomeDelivered
	}
	return res
}

func (d *memDeliverer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.bodies)
}

// TestBackpressure: with delivery stopped and a low watermark on the
// queue's depth, new sessions are refused with 421 while the mail already
// accepted stays in the spool, whole, and is delivered once delivery
// starts again.
func TestBackpressure(t *testing.T) {
	dir := t.TempDir()
	q, err := queue.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	depth := smtp.GaugeFunc(func(context.Context) (float64, error) { return float64(q.Depth()), nil })
	_, addr := startServer(t, q, smtp.WithGate("queue_depth", depth, 2, 1), smtp.WithGateInterval(time.Nanosecond))

	bodies := map[string]string{}
	for _, rcpt := range []string{"a@example.net", "b@example.net"} {
		c := dial(t, addr)
		body := "Subject: to " + rcpt + "\r\n\r\n" + strings.Repeat("line of "+rcpt+"\r\n", 100)
		bodies[rcpt] = body
		c.run(append(hello,
			step{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
			step{"RCPT TO:<" + rcpt + ">", "250 2.0.0"},
			step{"DATA", "354 "},
			step{body + ".", "250 2.0.0 queued as "},
			step{"QUIT", "221"},
		))
	}
	for range 3 {
		c := dial(t, addr)
		c.expect("421 4.3.2")
		c.expectClosed()
	}
	if got := q.Depth(); got != 2 {
		t.Fatalf("queue depth %d, want 2", got)
	}

	// Restart the queue from the spool and let it deliver.
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q2, err := queue.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := &memDeliverer{bodies: map[string]string{}}
	served := make(chan error, 1)
	go func() { served <- q2.Serve(d) }()
	waitFor(t, "both messages delivered", func() bool { return d.count() == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := q2.Shutdown(ctx); err != nil {
		t.Errorf("queue Shutdown: %v", err)
	}
	if err := <-served; err != nil && !errors.Is(err, queue.ErrClosed) {
		t.Errorf("queue Serve = %v", err)
	}
	q2.Close()
	for rcpt, want := range bodies {
		_, got, _ := cutReceived(d.bodies[rcpt])
		if got != want {
			t.Errorf("delivered to %s:\n%q\nwant\n%q", rcpt, got, want)
		}
	}
}

func TestStressShortensTimeouts(t *testing.T) {
	_, addr := startServer(t, &recorder{}, smtp.WithMaxConnections(10),
		smtp.WithStressConnections(2), smtp.WithStressTimeout(200*time.Millisecond), smtp.WithGreetingTimeout(time.Minute))
	a := dial(t, addr)
	a.expect("220 ")
	start := time.Now()
	b := dial(t, addr) // the second connection starts stress mode
	b.expect("220 ")
	b.expect("421 4.4.2")
	b.expectClosed()
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("idle client closed after %v under stress, want about 200ms", elapsed)
	}
}

// pacer is a recorder that is also a Pacer: each Pace call waits for a
// value on release and reports having waited that long.
type pacer struct {
	recorder
	max     chan time.Duration // the max of each call
	release chan time.Duration
}

func (p *pacer) Pace(ctx context.Context, max time.Duration) time.Duration {
	p.max <- max
	return <-p.release
}

// TestInFlowDelay: with a Pacer for a queue, MAIL is answered only after
// Pace returns, which is given the in-flow delay as its maximum; the time
// paced is counted. WithInFlowDelay(0) turns pacing off.
func TestInFlowDelay(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := &pacer{max: make(chan time.Duration, 10), release: make(chan time.Duration, 10)}
	_, addr := startServer(t, p, smtp.WithRegisterer(reg), untrusted, smtp.WithLocalDomains("example.net"),
		smtp.WithInFlowDelay(1500*time.Millisecond))
	c := dial(t, addr)
	c.run(hello)
	c.send("MAIL FROM:<alice@example.org>")
	select {
	case max := <-p.max:
		if max != 1500*time.Millisecond {
			t.Errorf("Pace given a maximum of %v, want the in-flow delay, 1.5s", max)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("MAIL did not call Pace")
	}
	p.release <- 250 * time.Millisecond
	c.expect("250 2.0.0")
	c.run(transaction[1:])
	c.run([]step{{"Subject: hi\r\n\r\nhello\r\n.", "250 2.0.0"}})
	if got := counter(t, reg, "sluice_smtp_paced_total", ""); got != 1 {
		t.Errorf("paced_total = %v, want 1", got)
	}
	if got := counter(t, reg, "sluice_smtp_paced_seconds_total", ""); got != 0.25 {
		t.Errorf("paced_seconds_total = %v, want 0.25", got)
	}

	off := &pacer{max: make(chan time.Duration, 10), release: make(chan time.Duration, 10)}
	_, addr = startServer(t, off, untrusted, smtp.WithLocalDomains("example.net"), smtp.WithInFlowDelay(0))
	c = dial(t, addr)
	c.run(append(hello, transaction...))
	c.run([]step{{"Subject: hi\r\n\r\nhello\r\n.", "250 2.0.0"}})
	if n := len(off.max); n != 0 {
		t.Errorf("Pace called %d times with the in-flow delay off", n)
	}
}
