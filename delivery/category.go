package delivery

import (
	"regexp"

	"github.com/sluicemta/sluice"
)

// Category is why a recipient failed, in terms an operator acts on: a
// bad mailbox is removed from a list, a reputation block is taken to the
// receiving provider, a full mailbox is retried later.
type Category string

// The categories of [Categorize].
const (
	CategoryNone       Category = ""            // delivered, or no reply
	CategoryBadMailbox Category = "bad-mailbox" // no such user, disabled mailbox
	CategoryRouting    Category = "routing"     // no such domain, null MX, unroutable
	CategoryQuota      Category = "quota"       // mailbox full, over quota
	CategoryPolicy     Category = "policy"      // refused by the receiver's policy
	CategoryReputation Category = "reputation"  // our IP or domain is blocklisted or throttled
	CategoryContent    Category = "content"     // spam, virus, message too large, bad format
	CategoryNetwork    Category = "network"     // connection refused, timed out, reset
	CategoryProtocol   Category = "protocol"    // syntax errors, unsupported extensions
	CategoryOther      Category = "other"
)

// Text patterns checked before the enhanced code: many receivers say
// 5.7.1 for everything, and their text is the only clue.
var categoryText = []struct {
	re  *regexp.Regexp
	cat Category
}{
	{regexp.MustCompile(`(?i)\b(blocklist|blacklist|block ?list|listed|spamhaus|spamcop|barracuda|rbl|dnsbl|reputation|ip .*blocked|blocked .*ip|too many connections|rate limit|throttl|deferred due to)`), CategoryReputation},
	{regexp.MustCompile(`(?i)(quota|mailbox (is )?full|over ?quota|insufficient (system )?storage|mailbox size)`), CategoryQuota},
	{regexp.MustCompile(`(?i)(user unknown|unknown user|no such user|no such (mailbox|recipient)|does not exist|doesn't exist|recipient (address )?rejected|invalid recipient|unknown recipient|mailbox (unavailable|not found|disabled)|account (disabled|inactive))`), CategoryBadMailbox},
	{regexp.MustCompile(`(?i)(spam|virus|malware|content|message (too large|size exceeds)|too big)`), CategoryContent},
}

// Categorize sorts a failure reply into a [Category], from its text (for
// well-known phrases) and its RFC 3463 enhanced status code.
func Categorize(r *sluice.Reply) Category {
	if r == nil || sluice.Classify(r) == sluice.OutcomeDelivered { // a 3xx where a final reply was due is a failure
		return CategoryNone
	}
	for _, t := range categoryText {
		if t.re.MatchString(r.Message) {
			return t.cat
		}
	}
	ec := r.Enhanced
	switch {
	case ec[1] == 1 && (ec[2] == 2 || ec[2] == 10): // bad domain, null MX
		return CategoryRouting
	case ec[1] == 1: // addressing: bad mailbox, moved, ambiguous
		return CategoryBadMailbox
	case ec[1] == 2 && ec[2] == 2:
		return CategoryQuota
	case ec[1] == 2 && ec[2] == 3, ec[1] == 3 && ec[2] == 4: // too large
		return CategoryContent
	case ec[1] == 2: // mailbox disabled or otherwise unavailable
		return CategoryBadMailbox
	case ec[1] == 4 && (ec[2] == 1 || ec[2] == 2): // no answer, bad connection
		return CategoryNetwork
	case ec[1] == 4:
		return CategoryRouting
	case ec[1] == 5:
		return CategoryProtocol
	case ec[1] == 6:
		return CategoryContent
	case ec[1] == 7:
		return CategoryPolicy
	}
	switch r.Code {
	case 421:
		return CategoryReputation
	case 550, 551, 553:
		return CategoryBadMailbox
	case 552:
		return CategoryQuota
	case 554:
		return CategoryPolicy
	}
	return CategoryOther
}
