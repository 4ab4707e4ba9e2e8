package delivery_test

import (
	"testing"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
)

func TestCategorize(t *testing.T) {
	r := func(code int, ec sluice.EnhancedCode, text string) *sluice.Reply {
		return sluice.NewReply(code, ec, "%s", text)
	}
	tests := []struct {
		reply *sluice.Reply
		want  delivery.Category
	}{
		// Enhanced codes.
		{r(550, sluice.EnhancedCode{5, 1, 1}, "go away"), delivery.CategoryBadMailbox},
		{r(553, sluice.EnhancedCode{5, 1, 3}, "syntax"), delivery.CategoryBadMailbox},
		{r(550, sluice.EnhancedCode{5, 2, 1}, "disabled"), delivery.CategoryBadMailbox},
		{r(550, sluice.EnhancedCode{5, 1, 2}, "bad host"), delivery.CategoryRouting},
		{r(556, sluice.EnhancedCode{5, 1, 10}, "null MX"), delivery.CategoryRouting},
		{r(452, sluice.EnhancedCode{4, 2, 2}, "try later"), delivery.CategoryQuota},
		{r(452, sluice.EnhancedCode{4, 3, 1}, "disk"), delivery.CategoryQuota},
		{r(552, sluice.EnhancedCode{5, 3, 4}, "too big"), delivery.CategoryContent},
		{r(554, sluice.EnhancedCode{5, 6, 0}, "bad MIME"), delivery.CategoryContent},
		{r(451, sluice.EnhancedCode{4, 4, 1}, "dial tcp: connection refused"), delivery.CategoryNetwork},
		{r(451, sluice.EnhancedCode{4, 4, 2}, "reset"), delivery.CategoryNetwork},
		{r(451, sluice.EnhancedCode{4, 4, 3}, "DNS lookup failed: SERVFAIL"), delivery.CategoryRouting},
		{r(554, sluice.EnhancedCode{5, 4, 6}, "loop"), delivery.CategoryRouting},
		{r(550, sluice.EnhancedCode{5, 7, 1}, "relaying denied"), delivery.CategoryPolicy},
		{r(550, sluice.EnhancedCode{5, 7, 26}, "DMARC"), delivery.CategoryPolicy},
		{r(550, sluice.EnhancedCode{5, 7, 25}, "PTR"), delivery.CategoryReputation},
		{r(501, sluice.EnhancedCode{5, 5, 4}, "bad args"), delivery.CategoryOther},
		// Texts override generic codes.
		{r(554, sluice.EnhancedCode{5, 7, 1}, "Service unavailable; client host [192.0.2.1] blocked using zen.spamhaus.org"), delivery.CategoryReputation},
		{r(550, sluice.EnhancedCode{5, 7, 1}, "Our system has detected that this message is likely unsolicited mail (spam)"), delivery.CategoryContent},
		{r(550, sluice.EnhancedCode{5, 0, 0}, "User unknown"), delivery.CategoryBadMailbox},
		{r(552, sluice.EnhancedCode{5, 0, 0}, "Mailbox full"), delivery.CategoryQuota},
		{r(421, sluice.EnhancedCode{4, 7, 0}, "IP listed on a block list"), delivery.CategoryReputation},
		// No enhanced code.
		{r(550, sluice.EnhancedCode{}, "no such user here"), delivery.CategoryBadMailbox},
		{r(421, sluice.EnhancedCode{}, "closing connection"), delivery.CategoryNetwork},
		{r(554, sluice.EnhancedCode{}, "transaction failed"), delivery.CategoryOther},
		// Not failures.
		{nil, delivery.CategoryOther},
		{r(250, sluice.EnhancedCode{2, 0, 0}, "ok, no such user problems"), delivery.CategoryOther},
	}
	for _, tt := range tests {
		name := "nil"
		if tt.reply != nil {
			name = tt.reply.Error()
		}
		if got := delivery.Categorize(tt.reply); got != tt.want {
			t.Errorf("Categorize(%s) = %s, want %s", name, got, tt.want)
		}
	}
}
