package filter

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/sluicemta/sluice"
)

// Filter inspects one message and returns a [Verdict]. Check must honour
// ctx: the [Chain] gives every filter its own deadline and abandons a
// filter that has not returned by then. Check may be called concurrently
// for different messages.
//
// An error means the filter could not decide (a dead spamd, a refused
// connection); the chain then applies the filter's [OnError] policy. A
// rejection is not an error: it is a Verdict with [Reject].
type Filter interface {
	Check(ctx context.Context, m *Message) (Verdict, error)
}

// FilterFunc is an adapter to use an ordinary function as a [Filter].
type FilterFunc func(ctx context.Context, m *Message) (Verdict, error)

var _ Filter = FilterFunc(nil)

// Check calls f(ctx, m).
func (f FilterFunc) Check(ctx context.Context, m *Message) (Verdict, error) { return f(ctx, m) }

// Stage is the point where a filter runs: one of the points of an SMTP
// transaction, before the message is queued, so its verdict is the reply
// the client gets; or after the message is queued ([StagePostQueue]), so
// its verdict becomes a delivery status notification.
type Stage int

// The stages. The zero value is StageData.
const (
	// StageData runs at the end of DATA, with the whole message.
	StageData Stage = iota
	// StageConnect runs when a client connects, before the greeting: the
	// envelope holds only Client.Addr. A Reject or Tempfail refuses the
	// connection (554 or 421); Discard means nothing here.
	StageConnect
	// StageMail runs at MAIL FROM: the envelope holds the sender and the
	// client, no recipients. A Reject or Tempfail refuses the sender.
	StageMail
	// StageRcpt runs at each RCPT TO: the envelope's last recipient is the
	// one being checked. A Reject or Tempfail refuses that recipient.
	StageRcpt
	// StagePostQueue runs after the message was accepted and queued, in
	// the queue's worker before each delivery attempt, with the whole
	// message and the recipients due in that attempt (see
	// delivery.WithPostQueue). A slow scanner placed here never delays
	// acceptance. A Reject (whole message or per recipient) bounces the
	// recipients with a delivery status notification to the sender, a
	// Tempfail defers them, a Discard drops them with a log record and a
	// Quarantine holds the message for an operator.
	StagePostQueue
)

// String returns "data", "connect", "mail", "rcpt" or "postqueue".
func (s Stage) String() string {
	switch s {
	case StageData:
		return "data"
	case StageConnect:
		return "connect"
	case StageMail:
		return "mail"
	case StageRcpt:
		return "rcpt"
	case StagePostQueue:
		return "postqueue"
	}
	return "Stage(" + strconv.Itoa(int(s)) + ")"
}

func (s Stage) valid() bool { return s >= StageData && s <= StagePostQueue }

// ParseStage returns the Stage named s, as written by [Stage.String].
func ParseStage(s string) (Stage, error) {
	for st := StageData; st <= StagePostQueue; st++ {
		if st.String() == s {
			return st, nil
		}
	}
	return 0, fmt.Errorf("filter: unknown stage %q (want connect, mail, rcpt, data or postqueue)", s)
}

// Message is what a filter sees of a message: its envelope and, at
// [StageData] and [StagePostQueue], the whole message as received (header
// and body, CRLF line endings, the trace header of the receiving server
// included). At the earlier stages Body is nil and Size 0.
type Message struct {
	// Stage is the stage the filter is running at; the chain sets it.
	Stage Stage
	// Envelope is the SMTP envelope. Filters must not modify it.
	Envelope *sluice.Envelope
	// Body is the message; it is safe for concurrent ReadAt calls, so
	// filters may read it at the same time.
	Body io.ReaderAt
	// Size is the length of Body in bytes.
	Size int64
}

// Account returns the sending account of env, as the built-in filters
// that keep per-account state (filter/suppress, filter/limit) see it: the
// user the SMTP session authenticated as (RFC 4954), lower case, if any;
// else the lower-cased domain of the envelope sender; "" for the null
// sender, which belongs to no account.
func Account(env *sluice.Envelope) string {
	if env.Client.AuthUser != "" {
		return strings.ToLower(env.Client.AuthUser)
	}
	return strings.ToLower(sluice.Domain(env.From))
}

// Reader returns a new reader over the whole of m.Body, independent of any
// other reader (an empty one before StageData).
func (m *Message) Reader() io.Reader {
	if m.Body == nil {
		return strings.NewReader("")
	}
	return io.NewSectionReader(m.Body, 0, m.Size)
}

// Action is what a verdict asks the receiver to do with a message.
type Action int

// The actions of a verdict. The zero value is Accept, so a filter that has
// nothing to say returns Verdict{}.
const (
	Accept     Action = iota // continue with the next filter, then queue the message
	Reject                   // refuse the message permanently (5xx)
	Tempfail                 // refuse the message for now (4xx); the client retries
	Discard                  // answer success but drop the message
	Quarantine               // accept the message but hold it in the queue for an operator
)

// String returns "accept", "reject", "tempfail", "discard" or
// "quarantine".
func (a Action) String() string {
	switch a {
	case Accept:
		return "accept"
	case Reject:
		return "reject"
	case Tempfail:
		return "tempfail"
	case Discard:
		return "discard"
	case Quarantine:
		return "quarantine"
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

func (a Action) valid() bool { return a >= Accept && a <= Quarantine }

// Header is a header field a filter asks to prepend to the message, such
// as an X-Spam-Status. Value is unfolded text; the receiver folds and
// sanitises it.
type Header struct {
	Name  string
	Value string
}

// Verdict is the decision of a filter or of a whole [Chain].
type Verdict struct {
	// Action is what to do with the message.
	Action Action
	// Reply is the reply the client sees for Reject, Tempfail, Discard
	// and Quarantine. A filter may leave it nil; [Chain.Run] always fills
	// it in, with 550 5.7.1 for Reject, 451 4.7.1 for Tempfail and 250
	// 2.0.0 for Discard and Quarantine (a reply of the wrong class is
	// replaced the same way).
	Reply *sluice.Reply
	// Headers are header fields to prepend to the message when it is
	// accepted. [Chain.Run] returns the headers of every filter that ran,
	// in the order the filters were added, whichever finished first.
	Headers []Header
	// Recipients are verdicts about single recipients, for a filter that
	// judges recipients apart (a suppression list refuses some recipients
	// and not others). They are honoured at [StagePostQueue], where each
	// recipient gets the first non-Accept verdict any filter gave it (a
	// whole-message verdict other than Accept overrides them), and at
	// [StageRcpt], where a verdict about the recipient being checked
	// becomes the stage's verdict. At the other stages, where SMTP has no
	// way to refuse one recipient, they are ignored.
	Recipients []RecipientVerdict
}

// RecipientVerdict is a verdict about one recipient of the envelope.
// Quarantine is not a per-recipient action: the chain treats it as a
// whole-message Quarantine.
type RecipientVerdict struct {
	// Address is the recipient's address as in the envelope.
	Address string
	// Action is what to do with this recipient.
	Action Action
	// Reply is the reason; the chain fills in a default as for [Verdict].
	Reply *sluice.Reply
}

// Policy is what a filter failure means for the message: the filter
// returned an error, panicked, or did not answer before its timeout.
type Policy int

// The failure policies. The zero value, PolicyTempfail, is the safe
// default: the client keeps the message and retries later.
const (
	// PolicyTempfail refuses the message with 451 4.7.1.
	PolicyTempfail Policy = iota
	// PolicyAccept lets the message through, tagged with the header
	// "X-Sluice-Filter: <name> <error|timeout>", and goes on with the
	// next filter.
	PolicyAccept
	// PolicyReject refuses the message with 554 5.7.1.
	PolicyReject
	// PolicyQuarantine accepts the message but holds it in the queue
	// for an operator, tagged with the X-Sluice-Filter header.
	PolicyQuarantine
)

// String returns "tempfail", "accept", "reject" or "quarantine".
func (p Policy) String() string {
	switch p {
	case PolicyTempfail:
		return "tempfail"
	case PolicyAccept:
		return "accept"
	case PolicyReject:
		return "reject"
	case PolicyQuarantine:
		return "quarantine"
	}
	return "Policy(" + strconv.Itoa(int(p)) + ")"
}

func (p Policy) valid() bool { return p >= PolicyTempfail && p <= PolicyQuarantine }

// ParsePolicy returns the Policy named s, as written by [Policy.String].
func ParsePolicy(s string) (Policy, error) {
	for p := PolicyTempfail; p <= PolicyQuarantine; p++ {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("filter: unknown policy %q (want tempfail, accept, reject or quarantine)", s)
}
