package smtp_test

import (
	"context"
	"testing"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/smtp"
)

// MAIL inside a transaction is refused (503, RFC 5321 section 4.1.4), and
// the transaction goes on as it was: go-smtp would let it restart the
// transaction, and a second MAIL that a MAIL filter refused then cleared
// the first's filter verdicts (discard, quarantine) and kept its
// recipients, so the DATA after it was queued as if no filter had spoken.
func TestNestedMailIsRefused(t *testing.T) {
	mail := filter.FilterFunc(func(_ context.Context, m *filter.Message) (filter.Verdict, error) {
		if m.Envelope.From == "blocked@example.org" {
			return filter.Verdict{Action: filter.Reject, Reply: sluice.NewReply(550, sluice.EnhancedCode{5, 7, 1}, "sender blocked")}, nil
		}
		return filter.Verdict{}, nil
	})
	rcpt := filter.FilterFunc(func(_ context.Context, m *filter.Message) (filter.Verdict, error) {
		switch m.Envelope.Recipients[len(m.Envelope.Recipients)-1].Address {
		case "trap@example.net":
			return filter.Verdict{Action: filter.Discard}, nil
		case "held@example.net":
			return filter.Verdict{Action: filter.Quarantine}, nil
		}
		return filter.Verdict{}, nil
	})
	chain, err := filter.New(
		filter.WithFilter("mail", mail, filter.AtStage(filter.StageMail)),
		filter.WithFilter("rcpt", rcpt, filter.AtStage(filter.StageRcpt)))
	if err != nil {
		t.Fatal(err)
	}
	q := &recorder{} // no HoldEnqueuer: a quarantined message must get 451
	_, addr := startServer(t, q, smtp.WithFilters(chain), smtp.WithLocalDomains("example.net"),
		smtp.WithTrustedNetworks())
	c := dial(t, addr)
	c.run(append(hello,
		step{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		step{"RCPT TO:<trap@example.net>", "250 2.0.0"},
		step{"MAIL FROM:<blocked@example.org>", "503 5.5.1"},
		step{"DATA", "354 "},
		step{"Subject: x\r\n\r\nspam\r\n.", ""},
	))
	c.reply()
	if n := len(q.messages()); n != 0 {
		t.Errorf("discarded message was queued (%d messages)", n)
	}
	c.run([]step{
		{"RSET", "250"},
		{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		{"RCPT TO:<held@example.net>", "250 2.0.0"},
		{"MAIL FROM:<blocked@example.org>", "503 5.5.1"},
		{"DATA", "354 "},
		{"Subject: x\r\n\r\nspam\r\n.", "451 4.3.0"},
	})
}
