package sluice

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// EnhancedCode is an RFC 3463 enhanced status code, class.subject.detail,
// such as {5, 1, 1}. The zero value means "no enhanced code".
type EnhancedCode [3]int

// String formats c as "5.1.1", or "" for the zero value.
func (c EnhancedCode) String() string {
	if c == (EnhancedCode{}) {
		return ""
	}
	b := make([]byte, 0, 11)
	b = strconv.AppendInt(b, int64(c[0]), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(c[1]), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(c[2]), 10)
	return string(b)
}

// ParseEnhancedCode parses "X.Y.Z" with X in 2, 4 or 5 and Y, Z in 0..999.
func ParseEnhancedCode(s string) (EnhancedCode, error) {
	var parts [3]string
	rest, n := s, 0
	for ; n < 3; n++ {
		var more bool
		parts[n], rest, more = strings.Cut(rest, ".")
		if !more {
			break
		}
	}
	if n != 2 { // exactly two dots
		return EnhancedCode{}, fmt.Errorf("sluice: enhanced code %q: want class.subject.detail", s)
	}
	var c EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 || len(p) > 3 {
			return EnhancedCode{}, fmt.Errorf("sluice: enhanced code %q: bad field %q", s, p)
		}
		c[i] = n
	}
	if c[0] != 2 && c[0] != 4 && c[0] != 5 {
		return EnhancedCode{}, fmt.Errorf("sluice: enhanced code %q: class must be 2, 4 or 5", s)
	}
	return c, nil
}

// Reply is an SMTP reply: a three-digit code, an optional enhanced status
// code and a human-readable text. It is the one reply type of sluice: it is
// returned as an error by every package (the acceptor sends it to the client,
// delivery records the remote server's reply in it) and read with
// [errors.As]. Use [ReplyOf] to find one in a wrapped chain.
type Reply struct {
	Code     int          // 2xx, 4xx or 5xx
	Enhanced EnhancedCode // zero if none
	Message  string       // text without the codes; may contain newlines for multi-line replies
}

// NewReply returns a Reply with the message formatted by fmt.Sprintf.
func NewReply(code int, enhanced EnhancedCode, format string, args ...any) *Reply {
	return &Reply{Code: code, Enhanced: enhanced, Message: fmt.Sprintf(format, args...)}
}

// Error formats the reply as it would appear on one line of the wire:
// "550 5.1.1 no such user".
func (r *Reply) Error() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(r.Code))
	if e := r.Enhanced.String(); e != "" {
		b.WriteByte(' ')
		b.WriteString(e)
	}
	if r.Message != "" {
		b.WriteByte(' ')
		b.WriteString(strings.ReplaceAll(r.Message, "\n", " "))
	}
	return b.String()
}

// Temporary reports whether the reply is a transient failure (4xx).
func (r *Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// Permanent reports whether the reply is a permanent failure (5xx).
func (r *Reply) Permanent() bool { return r.Code >= 500 && r.Code < 600 }

// Positive reports whether the reply is a success (2xx or 3xx).
func (r *Reply) Positive() bool { return r.Code >= 200 && r.Code < 400 }

// ReplyOf returns the first *Reply in err's chain, if any.
func ReplyOf(err error) (*Reply, bool) {
	var r *Reply
	if errors.As(err, &r) {
		return r, true
	}
	return nil, false
}

// Outcome is how a delivery attempt or a transaction ended for one recipient.
type Outcome int

// The outcomes of an attempt. The zero value is OutcomeDeferred so that an
// unset outcome retries rather than loses or bounces mail.
const (
	OutcomeDeferred  Outcome = iota // temporary failure: try again later
	OutcomeDelivered                // accepted by the next hop
	OutcomeBounced                  // permanent failure: notify the sender
)

// String returns "deferred", "delivered" or "bounced".
func (o Outcome) String() string {
	switch o {
	case OutcomeDelivered:
		return "delivered"
	case OutcomeBounced:
		return "bounced"
	default:
		return "deferred"
	}
}

// Classify is the one place that decides what an error means for a
// recipient: nil or a 2xx [Reply] is delivered, a 5xx [Reply] anywhere in
// the chain is bounced, anything else (4xx replies, network errors,
// timeouts, unknown errors) is deferred. Unknown errors defer because
// retrying is safe and bouncing is not reversible. A 3xx is deferred too:
// where a final reply is due (to RCPT, or after the final dot) it is a
// next hop out of step, not a delivery.
func Classify(err error) Outcome {
	if err == nil {
		return OutcomeDelivered
	}
	if r, ok := ReplyOf(err); ok {
		switch {
		case r.Code >= 200 && r.Code < 300:
			return OutcomeDelivered
		case r.Permanent():
			return OutcomeBounced
		}
	}
	return OutcomeDeferred
}
