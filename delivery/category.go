package delivery

import (
	"regexp"

	"github.com/sluicemta/sluice"
)

// Category is the broad reason a recipient was not delivered, for the
// delivery log, notifications and metrics: the same reply reads very
// differently across providers, and an operator asks "is this our IP's
// reputation, or bad addresses?" rather than "which 5.7.x was it?".
type Category string

// The categories [Categorize] returns.
const (
	CategoryBadMailbox Category = "bad-mailbox" // the address does not exist or is disabled
	CategoryPolicy     Category = "policy"      // refused by the receiver's policy (authentication, relaying, ...)
	CategoryContent    Category = "content"     // the message itself was refused (spam, virus, size, format)
	CategoryReputation Category = "reputation"  // our sending IP or domain is blocklisted or throttled for reputation
	CategoryQuota      Category = "quota"       // mailbox or system full, or a rate or volume limit
	CategoryRouting    Category = "routing"     // no route: bad domain, null MX, DNS failure, loop
	CategoryNetwork    Category = "network"     // the next hop could not be reached or the connection broke
	CategoryOther      Category = "other"       // none of the above, or not enough information
)

// Reply texts that decide a category whatever the enhanced code says:
// receivers often send a generic 5.7.1 or 5.0.0 and put the reason in the
// text. Checked in this order.
var textRules = []struct {
	re  *regexp.Regexp
	cat Category
}{
	{regexp.MustCompile(`(?i)block ?list|black ?list|spamhaus|spamcop|barracuda|\b(rbl|dnsbl)\b|reputation|listed (at|on|in)|poor sender|sender score`), CategoryReputation},
	{regexp.MustCompile(`(?i)quota|mailbox (is )?full|over ?(the )?limit|insufficient (system )?storage|too many (messages|recipients)|rate limit`), CategoryQuota},
	{regexp.MustCompile(`(?i)user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|unknown recipient|invalid recipient|recipient not found|mailbox (unavailable|not found|disabled)|account (disabled|suspended)`), CategoryBadMailbox},
	{regexp.MustCompile(`(?i)spam|virus|malware|content|message (too big|too large|size)|attachment`), CategoryContent},
}

// Categorize returns the category of a failure reply (4xx or 5xx). Known
// reply texts decide first (a blocklist named in a 5.7.1 is reputation,
// a "mailbox full" in a 5.0.0 is quota); then the enhanced status code
// (RFC 3463); then the reply code for connection-level replies. A nil or
// positive reply is [CategoryOther].
func Categorize(r *sluice.Reply) Category {
	if r == nil || r.Positive() {
		return CategoryOther
	}
	for _, rule := range textRules {
		if rule.re.MatchString(r.Message) {
			return rule.cat
		}
	}
	if c := categoryOfCode(r.Enhanced); c != CategoryOther {
		return c
	}
	if r.Code == 421 {
		return CategoryNetwork // service not available, closing the channel
	}
	return CategoryOther
}

// categoryOfCode maps an enhanced status code's subject and detail.
func categoryOfCode(ec sluice.EnhancedCode) Category {
	subject, detail := ec[1], ec[2]
	switch subject {
	case 1: // addressing
		switch detail {
		case 1, 3, 6: // bad mailbox, bad syntax, mailbox moved
			return CategoryBadMailbox
		case 2, 10: // bad destination system, null MX
			return CategoryRouting
		}
		return CategoryBadMailbox
	case 2: // mailbox
		switch detail {
		case 2:
			return CategoryQuota
		case 3:
			return CategoryContent // message longer than the mailbox accepts
		}
		return CategoryBadMailbox // 2.1 disabled, 2.0 other mailbox status
	case 3: // mail system
		switch detail {
		case 1:
			return CategoryQuota // system full
		case 4:
			return CategoryContent // message too big for the system
		}
	case 4: // network and routing
		switch detail {
		case 1, 2, 7: // no answer, bad connection, delivery time expired
			return CategoryNetwork
		case 3, 4, 6: // DNS failure, unable to route, loop
			return CategoryRouting
		case 5:
			return CategoryQuota // congestion
		}
	case 5: // protocol
		return CategoryOther
	case 6: // content
		return CategoryContent
	case 7: // security and policy
		switch detail {
		case 25: // reverse DNS of our IP failed
			return CategoryReputation
		}
		return CategoryPolicy
	}
	return CategoryOther
}
