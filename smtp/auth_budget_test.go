package smtp_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sluicemta/sluice/smtp"
)

// The failed-AUTH budget is taken when an exchange starts: a client that
// starts AUTH on many connections while one failure is left gets one
// exchange, and so one guess, not one per connection.
func TestAuthBudgetTakenWhenTheExchangeStarts(t *testing.T) {
	opts := append(tlsOptions(t), smtp.WithAuthFailureLimit(1, 10*time.Minute),
		smtp.WithTrustedNetworks(netip.MustParsePrefix("192.0.2.0/24")))
	_, addr := startKind(t, &recorder{}, smtp.KindSubmissions, opts...)
	var started []*client
	for range 8 {
		c := dialTLS(t, addr)
		c.run([]step{{"", "220 "}, {"EHLO client.test", "250 "}})
		c.send("AUTH LOGIN " + b64(testUser))
		if l := c.expect(""); l[len(l)-1][:3] == "334" {
			started = append(started, c)
		}
	}
	if len(started) != 1 {
		t.Fatalf("%d AUTH exchanges started with a budget of 1 failure, want 1", len(started))
	}
	started[0].send(b64("guess"))
	started[0].expect("535 5.7.8")
}

// An exchange that succeeds gives its failure back: a client that logs in
// keeps its whole budget.
func TestAuthSuccessDoesNotSpendTheBudget(t *testing.T) {
	opts := append(tlsOptions(t), smtp.WithAuthFailureLimit(1, 10*time.Minute),
		smtp.WithTrustedNetworks(netip.MustParsePrefix("192.0.2.0/24")))
	_, addr := startKind(t, &recorder{}, smtp.KindSubmissions, opts...)
	for i := range 3 {
		c := dialTLS(t, addr)
		c.run([]step{{"", "220 "}, {"EHLO client.test", "250 "},
			{"AUTH PLAIN " + b64("\x00"+testUser+"\x00"+testPassword), "235 "}})
		if i == 2 {
			return
		}
	}
}

// An exchange that ends without a password checked gives its reservation
// back: an unknown mechanism (none is made), a malformed response (the
// mechanism fails), one the client cancels ("*": at its next command).
// Otherwise a few idle connections of a client would lock it out without
// a single failure.
func TestAuthExchangesWithoutAPasswordSpendNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"unknown mechanism", []step{{"AUTH CRAM-MD5", "504 "}}},
		{"malformed PLAIN", []step{{"AUTH PLAIN " + b64("no separators"), "454 "}}},
		{"cancelled, then MAIL", []step{{"AUTH LOGIN", "334 "}, {"*", "501 "}, {"MAIL FROM:<a@example.org>", "530 "}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append(tlsOptions(t), smtp.WithAuthFailureLimit(1, 10*time.Minute),
				smtp.WithTrustedNetworks(netip.MustParsePrefix("192.0.2.0/24")))
			_, addr := startKind(t, &recorder{}, smtp.KindSubmissions, opts...)
			a := dialTLS(t, addr)
			a.run(append([]step{{"", "220 "}, {"EHLO client.test", "250 "}}, tc.steps...))
			// a stays open; another connection of the client logs in.
			b := dialTLS(t, addr)
			b.run([]step{{"", "220 "}, {"EHLO client.test", "250 "},
				{"AUTH PLAIN " + b64("\x00"+testUser+"\x00"+testPassword), "235 "}})
		})
	}
}
