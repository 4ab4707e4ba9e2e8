package smtp_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/smtp"
)

// TestFilterStages: filters at connect, MAIL and RCPT answer in the
// dialogue with their own replies; headers asked for at every stage reach
// the queued message; a discard at RCPT drops the message after DATA.
func TestFilterStages(t *testing.T) {
	connect := filter.FilterFunc(func(_ context.Context, m *filter.Message) (filter.Verdict, error) {
		switch m.Envelope.Client.Addr.Addr() {
		case netip.MustParseAddr("192.0.2.66"):
			return filter.Verdict{Action: filter.Reject, Reply: sluice.NewReply(550, sluice.EnhancedCode{5, 7, 1}, "go away")}, nil
		case netip.MustParseAddr("192.0.2.67"):
			return filter.Verdict{Action: filter.Tempfail}, nil
		}
		return filter.Verdict{Headers: []filter.Header{{Name: "X-Connect", Value: m.Envelope.Client.Addr.Addr().String()}}}, nil
	})
	mail := filter.FilterFunc(func(_ context.Context, m *filter.Message) (filter.Verdict, error) {
		if m.Envelope.From == "over-quota@example.org" {
			return filter.Verdict{Action: filter.Tempfail, Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1}, "account over its limit")}, nil
		}
		return filter.Verdict{Headers: []filter.Header{{Name: "X-Mail", Value: "helo=" + m.Envelope.Client.Helo}}}, nil
	})
	rcpt := filter.FilterFunc(func(_ context.Context, m *filter.Message) (filter.Verdict, error) {
		switch last := m.Envelope.Recipients[len(m.Envelope.Recipients)-1].Address; last {
		case "unsubscribed@example.net":
			return filter.Verdict{Action: filter.Reject, Reply: sluice.NewReply(550, sluice.EnhancedCode{5, 7, 1}, "recipient unsubscribed")}, nil
		case "trap@example.net":
			return filter.Verdict{Action: filter.Discard}, nil
		}
		return filter.Verdict{}, nil
	})
	chain, err := filter.New(
		filter.WithFilter("connect", connect, filter.AtStage(filter.StageConnect)),
		filter.WithFilter("mail", mail, filter.AtStage(filter.StageMail)),
		filter.WithFilter("rcpt", rcpt, filter.AtStage(filter.StageRcpt)),
	)
	if err != nil {
		t.Fatal(err)
	}
	q := &recorder{}
	_, addr := startServer(t, q, smtp.WithFilters(chain),
		smtp.WithProxyNetworks(netip.MustParsePrefix("127.0.0.0/8")),
		smtp.WithTrustedNetworks(netip.MustParsePrefix("192.0.2.0/24")))
	from := func(src string) *client {
		c := dial(t, addr)
		c.send("PROXY TCP4 " + src + " 127.0.0.1 40000 25")
		return c
	}
	from("192.0.2.66").expect("554 5.7.1 go away")
	from("192.0.2.67").expect("421 4.7.1 message deferred, try again later")

	c := from("192.0.2.10")
	c.run(append(hello,
		step{"MAIL FROM:<over-quota@example.org>", "451 4.7.1 account over its limit"},
		step{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		step{"RCPT TO:<unsubscribed@example.net>", "550 5.7.1 recipient unsubscribed"},
		step{"RCPT TO:<bob@example.net>", "250 2.0.0"},
		step{"DATA", "354 "},
		step{"Subject: hi\r\n\r\nhello\r\n.", "250 2.0.0 queued as"},
		step{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		step{"RCPT TO:<trap@example.net>", "250 2.0.0"},
		step{"DATA", "354 "},
		step{"Subject: trapped\r\n\r\nhello\r\n.", "250 2.0.0 discarded"},
	))
	msgs := q.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages queued, want 1 (one refused recipient, one discarded message)", len(msgs))
	}
	if got := msgs[0].env.Recipients; len(got) != 1 || got[0].Address != "bob@example.net" {
		t.Errorf("recipients %+v, want only bob@example.net", got)
	}
	if !strings.Contains(msgs[0].body, "X-Connect: 192.0.2.10\r\nX-Mail: helo=client.test\r\n") {
		t.Errorf("body lacks the headers of the connect and MAIL filters:\n%s", msgs[0].body)
	}
}

// TestFilterBudgetIsSharedByTheTransaction: a MAIL filter that hangs past
// the transaction's budget gets the client a 451 4.3.0 at the budget, not
// at the filter's own (longer) timeout.
func TestFilterBudgetIsSharedByTheTransaction(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hang := filter.FilterFunc(func(ctx context.Context, _ *filter.Message) (filter.Verdict, error) {
		select {
		case <-ctx.Done():
			return filter.Verdict{}, ctx.Err()
		case <-release:
			return filter.Verdict{}, nil
		}
	})
	chain, err := filter.New(filter.WithFilter("slow", hang, filter.AtStage(filter.StageMail), filter.Timeout(time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, &recorder{}, smtp.WithFilters(chain), smtp.WithFilterBudget(300*time.Millisecond))
	c := dial(t, addr)
	c.run(hello)
	start := time.Now()
	c.run([]step{{"MAIL FROM:<alice@example.org>", "451 4.3.0"}})
	if took := time.Since(start); took < 250*time.Millisecond || took > 3*time.Second {
		t.Errorf("MAIL answered after %v, want about the 300ms budget", took)
	}
}
