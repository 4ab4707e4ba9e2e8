package smtp_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/smtp"
)

// Past the size limit go-smtp drains the rest of the message after Data
// has returned. The drain's reads renew the DATA timeout as the message's
// did, so a client that keeps sending, never idle for the timeout, gets
// the 552 of its too-large message, not a 421 timeout (which it would
// retry for days instead of bouncing).
func TestOversizeMessageGetsItsReplyAfterASlowDrain(t *testing.T) {
	_, addr := startServer(t, &recorder{}, smtp.WithMaxMessageBytes(1000), smtp.WithDataTimeout(time.Second))
	c := dial(t, addr)
	c.run(append(hello, transaction...))
	line := strings.Repeat("x", 70) + "\r\n"
	io.WriteString(c.nc, "Subject: big\r\n\r\n"+strings.Repeat(line, 20))
	for range 15 { // 1.5s in all, never idle for more than 0.1s: a slow client
		time.Sleep(100 * time.Millisecond)
		if _, err := io.WriteString(c.nc, line); err != nil {
			break
		}
	}
	io.WriteString(c.nc, ".\r\n")
	lines, err := c.reply()
	if err != nil || !strings.HasPrefix(lines[len(lines)-1], "552 5.3.4") {
		t.Errorf("reply %q (%v), want 552 5.3.4", lines, err)
	}
}
