package main

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice/smtp/smtptest"
)

// TestRelay runs the example end to end: a go-smtp client submits a
// message, the example queues it and relays it to a recording sink.
func TestRelay(t *testing.T) {
	sink, err := smtptest.NewSink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, l, t.TempDir(), sink.Addr(), slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})

	c, err := gosmtp.Dial(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.CommandTimeout, c.SubmissionTimeout = 5*time.Second, 5*time.Second
	body := "Subject: relay example\r\n\r\nhello through the relay\r\n"
	if err := c.SendMail("alice@example.org", []string{"bob@example.com"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := sink.WaitFor(wctx, 1); err != nil {
		t.Fatalf("message never reached the sink: %v", err)
	}
	m := sink.Messages()[0]
	if !strings.HasSuffix(string(m.Data), body) || m.From != "alice@example.org" {
		t.Errorf("sink got from %q data %q, want the body %q", m.From, m.Data, body)
	}
}
