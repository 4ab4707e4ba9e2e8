package smtp_test

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/smtp"
)

// FuzzDataReader sends arbitrary message data in one DATA and checks what
// the server makes of it. The data has every real end of data
// ("\r\n.\r\n", or ".\r\n" first) cut out, so for a strict reader the
// message ends only at the "\r\n.\r\n" the test appends. Properties:
//   - no input yields more than one message per DATA, and nothing in it
//     is run as a command: the client gets exactly one reply to the DATA
//     and then 221 to its QUIT, or the connection closes after a 550
//     5.5.2 (bare CR or LF), or, only after ".\r" and a byte other than
//     LF, after the DATA timeout's 421 4.4.2, nothing queued;
//   - a queued message has only CRLF line endings and no line over the
//     limit;
//   - strictly valid data (CRLF only, short lines) is queued, unchanged
//     except for the dot-stuffing.
func FuzzDataReader(f *testing.F) {
	for _, s := range []string{
		"Subject: hi\r\n\r\nhello",
		"hello\n.\nMAIL FROM:<m@evil.example>\r\nRCPT TO:<v@example.net>\r\nDATA\r\nsmuggled",
		"hello\r.\rMAIL FROM:<m@evil.example>",
		"hello\r\n.\rMAIL FROM:<m@evil.example>",
		"hello\r\n..\r\n.x\r\n",
		"a\r\r\n.\r\r\nb",
		strings.Repeat("x", 120),
	} {
		f.Add([]byte(s))
	}
	const maxLine = 100
	q := &recorder{}
	_, addr := startServer(f, q, smtp.WithMaxLineLength(maxLine), smtp.WithMaxCommandsWithoutMail(1000),
		smtp.WithDataTimeout(300*time.Millisecond))

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return
		}
		data = withoutEnd(data)
		before := len(q.messages())

		c := dial(t, addr)
		c.run(append(hello, transaction...))
		c.send(string(data) + "\r\n.\r\nQUIT")
		lines, err := c.reply()
		if err != nil {
			t.Fatalf("reading the reply to DATA: %v (got %q)", err, lines)
		}
		reply := lines[len(lines)-1]
		switch {
		case strings.HasPrefix(reply, "550 5.5.2 "):
			c.expectClosed() // a bare CR or LF ends the session
		case strings.HasPrefix(reply, "550 5.6.0 ") && len(data) > 1900:
			// A line too long for go-smtp too ends the session; a
			// shorter one may not.
			if next, err := c.reply(); err == nil && !strings.HasPrefix(next[0], "221 ") {
				t.Fatalf("after %q got %q, want 221 or the end", reply, next)
			}
		case strings.HasPrefix(reply, "421 4.4.2 "):
			// go-smtp lost the end after ".\r" and a byte other than
			// LF (see strictReader): the data timed out.
			if !hasDotCR(data) {
				t.Fatalf("DATA timed out, reply %q", reply)
			}
			c.expectClosed()
		default:
			c.expect("221 ")
			c.expectClosed()
		}

		msgs := q.messages()[before:]
		if len(msgs) > 1 {
			t.Fatalf("one DATA queued %d messages", len(msgs))
		}
		queued := len(msgs) == 1
		if queued != strings.HasPrefix(reply, "250 ") {
			t.Fatalf("reply %q but %d messages queued", reply, len(msgs))
		}
		if queued {
			checkCRLF(t, withoutReceived(t, msgs[0].body), maxLine)
		}
		if valid(data, maxLine) {
			if !queued {
				t.Fatalf("valid data refused with %q", reply)
			}
			body := withoutReceived(t, msgs[0].body)
			if want := unstuff(data); body != want {
				t.Fatalf("queued %q, want %q", body, want)
			}
		}
	})
}

// ourReceived is the trace field the server adds: it ends with the date's
// zone. (cutReceived would take a message line starting with white space
// for a continuation of it.)
var ourReceived = regexp.MustCompile(`^(?s)Received: .*?; [^\r\n]*[+-]\d{4}\r\n`)

func withoutReceived(t *testing.T, msg string) string {
	t.Helper()
	loc := ourReceived.FindStringIndex(msg)
	if loc == nil {
		t.Fatalf("queued message %q does not start with our Received field", msg)
	}
	return msg[loc[1]:]
}

// hasDotCR reports whether data, followed by the final CRLF, has ".\r"
// followed by a byte other than LF, which go-smtp's reader reads as that
// byte alone.
func hasDotCR(data []byte) bool {
	s := string(data) + "\r\n"
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '.' && s[i+1] == '\r' && s[i+2] != '\n' {
			return true
		}
	}
	return false
}

// withoutEnd removes every "\r\n.\r\n" (and a leading ".\r\n") from b,
// and a final "\r\n." or "." that the appended CRLF would complete.
func withoutEnd(b []byte) []byte {
	for {
		switch {
		case bytes.HasPrefix(b, []byte(".\r\n")):
			b = b[3:]
		case string(b) == "." || bytes.HasSuffix(b, []byte("\r\n.")):
			b = b[:len(b)-1]
		case bytes.Contains(b, []byte("\r\n.\r\n")):
			b = bytes.ReplaceAll(b, []byte("\r\n.\r\n"), []byte("\r\n"))
		default:
			return b
		}
	}
}

// valid reports whether data (followed by the CRLF before the final
// dot) has CRLF line endings only and no line longer than maxLine.
func valid(data []byte, maxLine int) bool {
	s := string(data)
	for _, line := range strings.Split(s, "\r\n") {
		if strings.ContainsAny(line, "\r\n") || len(strings.TrimPrefix(line, ".")) > maxLine {
			return false
		}
	}
	return true
}

// unstuff is the message a strict reader gets from data: each line's
// leading dot removed, a CRLF at the end.
func unstuff(data []byte) string {
	lines := strings.Split(string(data), "\r\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, ".")
	}
	return strings.Join(lines, "\r\n") + "\r\n"
}

func checkCRLF(t *testing.T, body string, maxLine int) {
	t.Helper()
	if !strings.HasSuffix(body, "\r\n") {
		t.Fatalf("queued body %q does not end with CRLF", body)
	}
	for _, line := range strings.Split(strings.TrimSuffix(body, "\r\n"), "\r\n") {
		if strings.ContainsAny(line, "\r\n") {
			t.Fatalf("queued body has a bare CR or LF in %q", line)
		}
		if len(line) > maxLine {
			t.Fatalf("queued body has a line of %d octets", len(line))
		}
	}
}
