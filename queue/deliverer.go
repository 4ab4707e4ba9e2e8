package queue

import (
	"context"
	"io"

	"github.com/sluicemta/sluice"
)

// Deliverer attempts delivery of queued messages. The queue's runner calls
// Deliver from a bounded pool of workers; delivery.Agent is the standard
// implementation.
type Deliverer interface {
	// Deliver tries msg for the recipients in msg.Envelope.Recipients (only
	// those due in this attempt) and returns one Result per recipient, in
	// the same order. ctx carries the attempt's deadline and is cancelled
	// on Close. A missing or short result slice defers the recipients it
	// does not cover.
	Deliver(ctx context.Context, msg *Message) []Result
}

// Bouncer is an optional capability of a [Deliverer]: it notifies senders
// of final failures (a delivery status notification). The queue calls it
// before it records the failure, so a crash in between can duplicate a
// notification but never lose one. If Bounce returns an error the
// recipients stay queued and are tried again later.
type Bouncer interface {
	Bounce(ctx context.Context, msg *Message, failed []Failure) error
}

// DelayNotifier is an optional capability of a [Deliverer]: it tells
// senders that delivery to some recipients is delayed but still being
// tried (an RFC 3464 "delayed" notification). The queue calls it at most
// once per recipient, after an attempt that left the recipient deferred
// when the message is older than the warning age set by
// WithDelayWarning. If NotifyDelay returns an error the warning is tried
// again after the next attempt.
type DelayNotifier interface {
	NotifyDelay(ctx context.Context, msg *Message, delayed []Failure) error
}

// Result is the outcome of one recipient's delivery attempt.
type Result struct {
	Outcome sluice.Outcome
	// Reply is the reply that decided the outcome: the next hop's, or one
	// made up by delivery for local failures (DNS, connection). It may be
	// nil for a delivered recipient.
	Reply *sluice.Reply
}

// Failure is a recipient that will not be delivered, for a [Bouncer], or
// one whose delivery is delayed, for a [DelayNotifier].
type Failure struct {
	Recipient sluice.Recipient
	// Reply is the last reply received for the recipient.
	Reply *sluice.Reply
	// Expired is set when the recipient failed because it stayed in the
	// queue longer than the maximum age, rather than on a permanent reply.
	Expired bool
	// Delayed is set in a delay warning ([DelayNotifier]): the recipient
	// is still queued and will be tried again.
	Delayed bool
}

// Message is one queued message handed to a [Deliverer]: a copy of its
// envelope, holding only the recipients due now, and access to its body.
type Message struct {
	Envelope *sluice.Envelope
	// Attempt counts delivery attempts of this message, starting at 1.
	Attempt int
	// Size is the length of the body in bytes.
	Size int64
	// Released is set once an operator released the message from hold
	// ([Queue.Release], or [Queue.Requeue] of a held message): a
	// post-queue filter that quarantines it again is not obeyed.
	Released bool

	open func() (io.ReadCloser, error)
}

// Open returns a reader over the message body (header and body as
// received, CRLF line endings). The reader verifies the stored checksum as
// it goes: if the body is damaged, Read returns an error wrapping
// [ErrCorrupt] instead of io.EOF, so a damaged body is never delivered as
// complete. Each call returns an independent reader; the caller closes it.
func (m *Message) Open() (io.ReadCloser, error) { return m.open() }

// NewMessage returns a Message whose Open calls open. It exists so that
// other packages can test a [Deliverer] without a spool.
func NewMessage(env *sluice.Envelope, size int64, open func() (io.ReadCloser, error)) *Message {
	return &Message{Envelope: env, Attempt: 1, Size: size, open: open}
}
