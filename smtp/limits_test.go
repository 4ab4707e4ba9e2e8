package smtp_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluicemta/sluice/smtp"
)

// smuggled is a whole second transaction hidden in a message: if it ever
// shows up as a message of its own, the server was smuggled into.
const smuggled = "MAIL FROM:<mallory@evil.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"

// TestSmuggling sends each known end-of-data confusion (bare LF, bare CR
// and their mixes, CVE-2023-51764 and relatives) followed by a second
// transaction and then the real end of data. None may end the message
// early: the client gets one reply for the one DATA, the second
// transaction is never queued, and the session stays in step or, after a
// bare CR or LF, is closed.
func TestSmuggling(t *testing.T) {
	tests := []struct {
		name, end string
		want      string // the reply to the DATA
	}{
		{"LF.LF", "\n.\n", "550 5.5.2 "},
		{"LF.CRLF", "\n.\r\n", "550 5.5.2 "},
		{"CRLF.LF", "\r\n.\n", "550 5.5.2 "},
		{"CR.CR", "\r.\r", "550 5.5.2 "},
		{"CR.CRLF", "\r.\r\n", "550 5.5.2 "},
		{"LF.CR", "\n.\r", "550 5.5.2 "},
		{"CRCRLF.CRCRLF", "\r\r\n.\r\r\n", "550 5.5.2 "},
		{"bare LF alone", "\n", "550 5.5.2 "},
		{"bare CR alone", "\r", "550 5.5.2 "},
		// go-smtp reads ".\r" at the start of a line followed by
		// another byte as that byte, dropping the CR: not a bare CR we
		// can see, and not an end either. One message, with the
		// would-be second transaction as its text.
		{"CRLF.CR", "\r\n.\r", "250 2.0.0 "},
		{"NUL before the dot", "\r\n\x00.\r\n", "250 2.0.0 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &recorder{}
			_, addr := startServer(t, q)
			c := dial(t, addr)
			c.run(append(hello, transaction...))
			c.send("Subject: hi\r\n\r\nhello" + tt.end + smuggled + ".")
			c.expect(tt.want)
			if tt.want == "550 5.5.2 " {
				c.expectClosed()
			} else {
				c.run([]step{{"NOOP", "250 2.0.0"}, {"QUIT", "221 2.0.0"}})
				c.expectClosed()
			}
			msgs := q.messages()
			if tt.want[0] == '5' && len(msgs) != 0 {
				t.Errorf("%d messages queued, want 0", len(msgs))
			}
			if len(msgs) > 1 {
				t.Errorf("%d messages queued, want at most 1", len(msgs))
			}
			for _, m := range msgs {
				if m.env.From == "mallory@evil.example" {
					t.Errorf("the smuggled transaction was queued: %+v", m.env)
				}
			}
		})
	}
}

func TestContentLimits(t *testing.T) {
	received := strings.Repeat("Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n", 3)
	tests := []struct {
		name string
		opts []smtp.Option
		msg  string
		want string
	}{
		{"line at the limit", []smtp.Option{smtp.WithMaxLineLength(100)},
			"Subject: x\r\n\r\n" + strings.Repeat("x", 100) + "\r\n", "250 2.0.0"},
		{"line over the limit", []smtp.Option{smtp.WithMaxLineLength(100)},
			"Subject: x\r\n\r\n" + strings.Repeat("x", 101) + "\r\n", "550 5.6.0 message has a line longer than 100 octets"},
		{"hops at the limit", []smtp.Option{smtp.WithMaxHops(3)}, received + "Subject: x\r\n\r\nhi\r\n", "250 2.0.0"},
		{"hops over the limit", []smtp.Option{smtp.WithMaxHops(2)}, received + "Subject: x\r\n\r\nhi\r\n", "554 5.4.6"},
		{"received in the body is not a hop", []smtp.Option{smtp.WithMaxHops(2)}, "Subject: x\r\n\r\n" + received, "250 2.0.0"},
		{"received in any case", []smtp.Option{smtp.WithMaxHops(2)}, strings.ToUpper(received) + "\r\nhi\r\n", "554 5.4.6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &recorder{}
			_, addr := startServer(t, q, tt.opts...)
			c := dial(t, addr)
			c.run(append(hello, transaction...))
			c.send(tt.msg + ".")
			c.expect(tt.want)
			c.run([]step{{"NOOP", "250 2.0.0"}})
			if got, want := len(q.messages()), map[bool]int{true: 1, false: 0}[tt.want[0] == '2']; got != want {
				t.Errorf("%d messages queued, want %d", got, want)
			}
		})
	}
}

func TestTooManyErrorsCloses(t *testing.T) {
	_, addr := startServer(t, &recorder{}, untrusted, smtp.WithMaxErrors(3))
	c := dial(t, addr)
	c.run(append(hello,
		step{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		step{"RCPT TO:<a@example.net>", "554 5.7.1"},
		step{"RCPT TO:<b@example.net>", "554 5.7.1"},
		step{"RCPT TO:<c@example.net>", "554 5.7.1"},
		step{"", "421 4.7.0 too many errors"},
	))
	c.expectClosed()
}

func TestCommandsWithoutMailLimit(t *testing.T) {
	_, addr := startServer(t, &recorder{}, smtp.WithMaxCommandsWithoutMail(3))

	// EHLO and two NOOPs are three commands; the server refuses to read
	// a fourth.
	c := dial(t, addr)
	c.run(append(hello, step{"NOOP", "250 2.0.0"}, step{"NOOP", "250 2.0.0"}, step{"", "421 4.7.0 too many commands"}))
	c.expectClosed()

	// MAIL starts the count again, and commands inside a transaction do
	// not count.
	c = dial(t, addr)
	c.run(append(hello, step{"NOOP", "250 2.0.0"}))
	for i := range 3 {
		c.run([]step{
			{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
			{"RCPT TO:<a@example.net>", "250 2.0.0"},
			{"RCPT TO:<b@example.net>", "250 2.0.0"},
			{"RCPT TO:<c@example.net>", "250 2.0.0"},
			{"DATA", "354 "},
			{fmt.Sprintf("Subject: %d\r\n\r\nhi\r\n.", i), "250 2.0.0"},
			{"NOOP", "250 2.0.0"},
		})
	}
	c.run([]step{{"QUIT", "221 2.0.0"}})
}

// TestSmugglingNormalized: with WithNormalizeLineEndings, every smuggling
// variant is one message whose bare line endings became CRLF, and the
// would-be second transaction is text inside it.
func TestSmugglingNormalized(t *testing.T) {
	for _, tt := range []struct{ name, end, want string }{
		{"LF.LF", "\n.\n", "hello\r\n.\r\n"},
		{"LF.CRLF", "\n.\r\n", "hello\r\n.\r\n"},
		{"CR.CR", "\r.\r", "hello\r\n.\r\n"},
		{"CRCRLF.CRCRLF", "\r\r\n.\r\r\n", "hello\r\n\r\n.\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := &recorder{}
			_, addr := startServer(t, q, smtp.WithNormalizeLineEndings(true))
			c := dial(t, addr)
			c.run(append(hello, transaction...))
			c.send("Subject: hi\r\n\r\nhello" + tt.end + smuggled + ".")
			c.expect("250 2.0.0 ")
			c.run([]step{{"QUIT", "221 2.0.0"}})
			msgs := q.messages()
			if len(msgs) != 1 || msgs[0].env.From != "alice@example.org" {
				t.Fatalf("queued %d messages (%+v), want alice's one", len(msgs), msgs)
			}
			body := msgs[0].body
			if !strings.Contains(body, tt.want) || !strings.Contains(body, "mallory@evil.example") {
				t.Errorf("body %q lacks %q and the smuggled text", body, tt.want)
			}
			if strings.Contains(strings.ReplaceAll(body, "\r\n", ""), "\n") || strings.Contains(strings.ReplaceAll(body, "\r\n", ""), "\r") {
				t.Errorf("body %q still has a bare CR or LF", body)
			}
		})
	}
}
