package smtp_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/smtp"
)

// memQueue is a toy Enqueuer that keeps messages in memory; a real one
// (queue.Queue) fsyncs before it returns.
type memQueue struct{ n int }

func (q *memQueue) Enqueue(ctx context.Context, env *sluice.Envelope, body io.Reader) (string, error) {
	if _, err := io.Copy(io.Discard, body); err != nil {
		return "", err
	}
	q.n++
	return fmt.Sprintf("MSG%d", q.n), nil
}

func Example() {
	srv, err := smtp.New(&memQueue{},
		smtp.WithHostname("mx.example.com"),
		smtp.WithLocalDomains("example.com"),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(l)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()

	// Send one message with go-smtp's client.
	c, err := gosmtp.Dial(l.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	if err := c.Hello("client.example.org"); err != nil {
		fmt.Println(err)
		return
	}
	if err := c.Mail("alice@example.org", nil); err != nil {
		fmt.Println(err)
		return
	}
	if err := c.Rcpt("bob@example.com", nil); err != nil {
		fmt.Println(err)
		return
	}
	w, err := c.Data()
	if err != nil {
		fmt.Println(err)
		return
	}
	io.Copy(w, strings.NewReader("Subject: hello\r\n\r\nHi Bob.\r\n"))
	resp, err := w.CloseWithResponse()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.StatusText)
	c.Quit()
	// Output: 2.0.0 queued as MSG1
}
