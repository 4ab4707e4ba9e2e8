package smtp_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/queue"
	"github.com/sluicemta/sluice/smtp"
)

// TestQuarantineQueuesHeld: a message a DATA filter quarantines is
// answered 250 and stored held in a real queue; one it accepts is not.
// Without a queue that can hold, a quarantined message gets 451.
func TestQuarantineQueuesHeld(t *testing.T) {
	quarantine := filter.FilterFunc(func(_ context.Context, m *filter.Message) (filter.Verdict, error) {
		b := make([]byte, m.Size)
		m.Body.ReadAt(b, 0)
		if strings.Contains(string(b), "suspicious") {
			return filter.Verdict{Action: filter.Quarantine, Headers: []filter.Header{{Name: "X-Held", Value: "yes"}}}, nil
		}
		return filter.Verdict{}, nil
	})
	mail := filter.FilterFunc(func(_ context.Context, m *filter.Message) (filter.Verdict, error) {
		if m.Envelope.From == "suspect@example.org" {
			return filter.Verdict{Action: filter.Quarantine}, nil
		}
		return filter.Verdict{}, nil
	})
	chain, err := filter.New(filter.WithFilter("q", quarantine), filter.WithFilter("mail", mail, filter.AtStage(filter.StageMail)))
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	_, addr := startServer(t, q, smtp.WithFilters(chain), smtp.WithLocalDomains("example.net"))
	c := dial(t, addr)
	c.run(append(hello,
		step{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		step{"RCPT TO:<bob@example.net>", "250 2.0.0"},
		step{"DATA", "354 "},
		step{"Subject: x\r\n\r\nsuspicious\r\n.", "250 2.0.0 queued as"},
		step{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		step{"RCPT TO:<bob@example.net>", "250 2.0.0"},
		step{"DATA", "354 "},
		step{"Subject: x\r\n\r\nfine\r\n.", "250 2.0.0 queued as"},
		step{"MAIL FROM:<suspect@example.org>", "250 2.0.0"},
		step{"RCPT TO:<bob@example.net>", "250 2.0.0"},
		step{"DATA", "354 "},
		step{"Subject: x\r\n\r\nfine\r\n.", "250 2.0.0 queued as"},
	))
	ctx := context.Background()
	page, err := q.List(ctx, queue.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, s := range page.Messages {
		if s.State == queue.StateHeld {
			held++
		}
	}
	if len(page.Messages) != 3 || held != 2 {
		t.Fatalf("queue holds %d messages, %d held; want 3 and 2 (quarantined at DATA and at MAIL)", len(page.Messages), held)
	}

	_, addr = startServer(t, &recorder{}, smtp.WithFilters(chain), smtp.WithLocalDomains("example.net"))
	c = dial(t, addr)
	c.run(append(hello,
		step{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		step{"RCPT TO:<bob@example.net>", "250 2.0.0"},
		step{"DATA", "354 "},
		step{"Subject: x\r\n\r\nsuspicious\r\n.", "451 4.3.0"},
	))
}
