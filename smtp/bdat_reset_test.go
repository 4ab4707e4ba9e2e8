package smtp_test

import (
	"context"
	"io"
	"testing"

	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/smtp"
)

// RFC 3030: RSET ends a BDAT transfer, and the session goes on (it was
// ended with a 421, as if the data could not be read).
func TestRsetDuringBDAT(t *testing.T) {
	accept := filter.FilterFunc(func(context.Context, *filter.Message) (filter.Verdict, error) { return filter.Verdict{}, nil })
	chain, _ := filter.New(filter.WithFilter("a", accept))
	_, addr := startServer(t, &recorder{}, smtp.WithFilters(chain))
	c := dial(t, addr)
	c.run(append(hello,
		step{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		step{"RCPT TO:<bob@example.net>", "250 2.0.0"}))
	io.WriteString(c.nc, "BDAT 12\r\nSubject: x\r\n")
	c.expect("250 2.0.0")
	c.run([]step{{"RSET", "250 2.0.0"}, {"MAIL FROM:<alice@example.org>", "250 2.0.0"}, {"NOOP", "250 2.0.0"}})
}

// A BDAT chunk that takes the message over the size limit gets 552, not a
// 421 that makes the client retry forever.
func TestBDATChunkOverTheSizeLimit(t *testing.T) {
	_, addr := startServer(t, &recorder{}, smtp.WithMaxMessageBytes(1000))
	c := dial(t, addr)
	c.run(append(hello,
		step{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		step{"RCPT TO:<bob@example.net>", "250 2.0.0"}))
	chunk := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = 'x'
			if i%50 == 48 {
				b[i] = '\r'
			} else if i%50 == 49 {
				b[i] = '\n'
			}
		}
		return string(b)
	}
	io.WriteString(c.nc, "BDAT 500\r\n"+chunk(500))
	c.expect("250 2.0.0")
	io.WriteString(c.nc, "BDAT 600 LAST\r\n"+chunk(600))
	c.expect("552 5.3.4")
}
