package smtptest_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

func newSink(t *testing.T, opts ...smtptest.Option) *smtptest.Sink {
	t.Helper()
	s, err := smtptest.NewSink(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dial connects a go-smtp client with deadlines on every step.
func dial(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout = 5 * time.Second
	c.SubmissionTimeout = 5 * time.Second
	t.Cleanup(func() { c.Close() })
	return c
}

// dialText connects a raw protocol client and reads the greeting.
func dialText(t *testing.T, addr string) *textproto.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	tc := textproto.NewConn(conn)
	t.Cleanup(func() { tc.Close() })
	if _, _, err := tc.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return tc
}

func TestSinkRecordsMessage(t *testing.T) {
	s := newSink(t)
	body := "Subject: hi\r\n\r\nline one\r\n.leading dot\r\n"
	c := dial(t, s.Addr())
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("a@x.test", []string{"b@y.test", "c@y.test"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "a@x.test" || strings.Join(m.To, ",") != "b@y.test,c@y.test" {
		t.Errorf("got envelope %q -> %q", m.From, m.To)
	}
	if string(m.Data) != body {
		t.Errorf("got data %q, want %q", m.Data, body)
	}
	if m.Helo != "client.test" || m.TLS || m.RemoteAddr == "" || m.Received.IsZero() {
		t.Errorf("got helo %q tls %v remote %q received %v", m.Helo, m.TLS, m.RemoteAddr, m.Received)
	}
	if got := s.Count(); got != 1 {
		t.Errorf("Count() = %d, want 1", got)
	}
	// Messages returns copies.
	msgs[0].Data[0] = 'X'
	if s.Messages()[0].Data[0] != 'S' {
		t.Error("Messages shares its buffers with the sink")
	}
}

func TestSinkHookRepliesOnTheWire(t *testing.T) {
	s := newSink(t,
		smtptest.WithMailFunc(func(from string) error {
			if from == "spammer@x.test" {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "go away"}
			}
			return nil
		}),
		smtptest.WithRcptFunc(func(from, to string) error {
			if to == "nobody@y.test" {
				return sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no such user")
			}
			if to == "later@y.test" {
				return sluice.NewReply(451, sluice.EnhancedCode{4, 2, 0}, "try later")
			}
			return nil
		}),
		smtptest.WithDataFunc(func(m *smtptest.Message) error {
			if bytes.Contains(m.Data, []byte("virus")) {
				return sluice.NewReply(554, sluice.EnhancedCode{5, 7, 1}, "infected")
			}
			return nil
		}),
	)
	tc := dialText(t, s.Addr())
	steps := []struct{ send, want string }{
		{"EHLO c.test", "250"},
		{"MAIL FROM:<spammer@x.test>", "550 5.7.1 go away"},
		{"MAIL FROM:<a@x.test>", "250"},
		{"RCPT TO:<nobody@y.test>", "550 5.1.1 no such user"},
		{"RCPT TO:<later@y.test>", "451 4.2.0 try later"},
		{"RCPT TO:<ok@y.test>", "250"},
		{"DATA", "354"},
		{"virus\r\n.", "554 5.7.1 infected"},
	}
	for _, st := range steps {
		if err := tc.PrintfLine("%s", st.send); err != nil {
			t.Fatal(err)
		}
		code, msg, err := tc.ReadResponse(0)
		if err != nil {
			t.Fatalf("%s: %v", st.send, err)
		}
		if line := fmt.Sprintf("%d %s", code, msg); !strings.HasPrefix(line, st.want) {
			t.Errorf("%s: got %q, want prefix %q", st.send, line, st.want)
		}
	}
	if got := s.Count(); got != 0 {
		t.Errorf("Count() = %d after refused DATA, want 0", got)
	}
}

func TestSinkWaitFor(t *testing.T) {
	s := newSink(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.WaitFor(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor on an empty sink: got %v, want deadline exceeded", err)
	}

	errc := make(chan error, 1)
	go func() {
		c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
		if err != nil {
			errc <- err
			return
		}
		cl := smtp.NewClient(c)
		cl.CommandTimeout = 5 * time.Second
		defer cl.Close()
		for i := range 2 {
			if err := cl.SendMail("a@x.test", []string{"b@y.test"}, strings.NewReader("n: "+string(rune('0'+i))+"\r\n\r\n")); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := s.WaitFor(ctx2, 2); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := s.Count(); got != 2 {
		t.Errorf("Count() = %d, want 2", got)
	}
}

func TestSinkMaxConcurrent(t *testing.T) {
	s := newSink(t)
	for range 3 {
		dialText(t, s.Addr()) // each holds its session open until cleanup
	}
	if got := s.MaxConcurrent(); got != 3 {
		t.Errorf("MaxConcurrent() = %d, want 3", got)
	}
}

func TestSinkSTARTTLS(t *testing.T) {
	cfg, err := smtptest.NewTLSConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := newSink(t, smtptest.WithTLS(cfg), smtptest.WithSMTPUTF8(true))
	conn, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("ü@x.test", &smtp.MailOptions{UTF8: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@y.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x: y\r\n\r\nbody\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m := s.Messages()[0]
	if !m.TLS || !m.SMTPUTF8 {
		t.Errorf("got TLS %v SMTPUTF8 %v, want both true", m.TLS, m.SMTPUTF8)
	}
}

func TestSinkCloseIdempotent(t *testing.T) {
	s, err := smtptest.NewSink()
	if err != nil {
		t.Fatal(err)
	}
	tc := dialText(t, s.Addr())
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := tc.ReadLine(); err == nil {
		t.Error("connection still open after Close")
	}
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Error("listener still accepting after Close")
	}
}

func TestSinkCloseRightAfterStart(t *testing.T) {
	for range 50 {
		s, err := smtptest.NewSink()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close right after NewSink did not return")
		}
	}
}

func TestQueueKeepsWhatIsQueued(t *testing.T) {
	var q smtptest.Queue
	env := &sluice.Envelope{From: "a@x.test", Recipients: []sluice.Recipient{{Address: "b@y.test"}}}
	for i, body := range []string{"one\r\n", "two\r\n"} {
		id, err := q.Enqueue(context.Background(), env, strings.NewReader(body))
		if want := fmt.Sprintf("ID%d", i+1); err != nil || id != want {
			t.Fatalf("Enqueue = %q, %v; want %q", id, err, want)
		}
	}
	env.From = "changed@x.test" // the queue keeps its own copy
	msgs := q.Messages()
	if len(msgs) != 2 || msgs[0].Body != "one\r\n" || msgs[1].ID != "ID2" || msgs[1].Envelope.From != "a@x.test" {
		t.Fatalf("Messages = %+v", msgs)
	}
}
