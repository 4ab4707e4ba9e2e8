package smtp_test

import (
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/sluicemta/sluice/smtp"
)

// pipelined writes cmds in one write and returns the code of each reply
// until the server closes the connection.
func pipelined(t *testing.T, c *client, cmds string) []string {
	t.Helper()
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.nc, cmds); err != nil {
		t.Fatal(err)
	}
	var codes []string
	for {
		lines, err := c.reply()
		if err != nil {
			return codes
		}
		last := lines[len(lines)-1]
		codes = append(codes, last[:min(3, len(last))])
	}
}

func sameCodes(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("replies %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("replies %q, want %q", got, want)
		}
	}
}

// A pipelining client (RFC 2920) pairs replies with its commands by their
// order. When a session ends while it holds replies for the client's
// earlier commands, those replies go first and the closing one last: a
// 554 read as the reply to MAIL would bounce every recipient.
func TestPipelinedSessionEndKeepsReplyOrder(t *testing.T) {
	t.Run("too many errors", func(t *testing.T) {
		_, addr := startServer(t, &recorder{}, untrusted, smtp.WithLocalDomains("example.com"), smtp.WithMaxErrors(3))
		c := dial(t, addr)
		c.run(hello)
		got := pipelined(t, c, "MAIL FROM:<alice@example.org>\r\n"+
			"RCPT TO:<ok@example.com>\r\n"+
			"RCPT TO:<a@example.net>\r\n"+
			"RCPT TO:<b@example.net>\r\n"+
			"RCPT TO:<c@example.net>\r\n"+
			"DATA\r\n")
		sameCodes(t, got, "250", "250", "554", "554", "554", "421")
	})
	t.Run("too many commands", func(t *testing.T) {
		_, addr := startServer(t, &recorder{}, smtp.WithMaxCommandsWithoutMail(3))
		c := dial(t, addr)
		c.run(hello)
		got := pipelined(t, c, "NOOP\r\nNOOP\r\nNOOP\r\n")
		sameCodes(t, got, "250", "250", "421")
	})
	t.Run("queued message before the error that ends the session", func(t *testing.T) {
		// BDAT may be pipelined (RFC 3030): the 250 of a message that
		// is queued must reach the client even when the transaction
		// pipelined after it ends the session.
		q := &recorder{}
		_, addr := startServer(t, q, untrusted, smtp.WithLocalDomains("example.com"), smtp.WithMaxErrors(1))
		c := dial(t, addr)
		c.run(hello)
		body := "Subject: x\r\n\r\nhi\r\n"
		got := pipelined(t, c, "MAIL FROM:<alice@example.org>\r\n"+
			"RCPT TO:<ok@example.com>\r\n"+
			"BDAT "+strconv.Itoa(len(body))+" LAST\r\n"+body+
			"MAIL FROM:<alice@example.org>\r\n"+
			"RCPT TO:<x@example.net>\r\n")
		sameCodes(t, got, "250", "250", "250", "250", "554", "421")
		if n := len(q.messages()); n != 1 {
			t.Errorf("%d messages queued, want 1", n)
		}
	})
}
