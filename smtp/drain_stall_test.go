package smtp_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/smtp"
)

// A client that stalls past the DATA timeout in the middle of a message
// refused early (too large) must have its session ended: what it sends
// after the stall is still message text. Message text must never be read
// as commands.
func TestStallDuringDrainEndsSession(t *testing.T) {
	rec := &recorder{}
	_, addr := startServer(t, rec, smtp.WithMaxMessageBytes(1000), smtp.WithDataTimeout(time.Second))
	c := dial(t, addr)
	c.run(append(hello, transaction...))
	line := strings.Repeat("x", 70) + "\r\n"
	io.WriteString(c.nc, "Subject: big\r\n\r\n"+strings.Repeat(line, 20))
	time.Sleep(1500 * time.Millisecond) // stalls past the DATA timeout, mid-message
	// the rest of the message body, which happens to hold SMTP commands
	io.WriteString(c.nc, "MAIL FROM:<mallory@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\nSubject: smuggled\r\n\r\nhi\r\n.\r\n")
	c.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	var got []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			break
		}
		got = append(got, strings.TrimSpace(l))
	}
	t.Logf("replies: %q", got)
	rec.mu.Lock()
	n := len(rec.msgs)
	rec.mu.Unlock()
	if n > 0 {
		t.Errorf("message text after the stall was run as commands: %d message(s) queued", n)
	}
	for _, l := range got {
		if strings.HasPrefix(l, "354") {
			t.Errorf("message text read as a DATA command: %q", got)
			break
		}
	}
}
