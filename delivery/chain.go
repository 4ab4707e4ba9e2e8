package delivery

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/sluicemta/sluice/queue"
)

// Chaining: pipelining across transactions.
//
// A transaction with a next hop that offers PIPELINING takes two round
// trips: MAIL, the RCPTs and DATA in one write, then the body and its
// final dot in another. A message for a destination that already has a
// transaction in progress can ride that connection instead: its MAIL,
// RCPTs and DATA go out in the same write as the other transaction's body
// and final dot, and their replies come back with the reply to the dot,
// so a busy connection carries each message in one round trip. RFC 2920
// section 3.1 allows it: the message content may be the first "command"
// of a group, and DATA the last.
//
// The message waiting for its turn is the connection's follower; the
// transaction in progress, the leader. A connection takes one follower,
// from the leader's start until the leader writes its final dot
// (takeFollower): a message that arrives later opens or reuses another
// connection as before. Once the leader has the reply to its dot, it hands
// the connection, and its lease, to the follower, which reads the replies
// to its own commands and goes on as any transaction does, taking a
// follower of its own. A leader whose connection failed or must not be
// reused gives the follower nothing instead (handOff): whatever the next
// hop made of the follower's commands, it never received a body for them,
// so the follower starts again on a connection of its own, and nothing
// counts against the next hop for it.
//
// A message joins a busy connection in preference to an idle one only
// while the leader's message is small (chainMaxSize): behind a large body
// on a slow link the follower would wait longer than a round trip.

// chainMaxSize is the largest message a follower queues behind. At 64 KiB
// a link of 10 Mbit/s sends the body in about 50 ms, a typical round trip
// on the Internet: a follower behind a larger message could wait longer
// than the round trip it saves.
const chainMaxSize = 64 << 10

// follower is a message waiting for its turn on a connection.
type follower struct {
	cmds  string // MAIL, the RCPTs and DATA, formatted for the connection
	body  io.ReadCloser
	rcpts []*rcptState // the recipients the commands name
	turn  chan *lease  // the connection (lease.conn) when the leader is done; a nil lease if the follower must start again
}

// offer lets a follower join cn while its transaction for msg runs, if cn
// can take one. withdraw ends the offer.
func (d *destination) offer(cn *conn, msg *queue.Message, probe bool) {
	if probe || !cn.ext.pipelining || cn.pol.transport != SMTP || msg.Size > chainMaxSize || cn.a.cfg.noChaining {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if cn.msgs+2 <= d.s.MaxPerConnection { // room for this transaction and the follower's
		cn.chain = d
		d.chains = append(d.chains, cn)
	}
}

// takeFollower ends cn's offer before its final dot, and returns the
// follower whose commands must now be written after the dot, if any.
func (cn *conn) takeFollower() *follower {
	d := cn.chain
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	f := cn.endOfferLocked()
	cn.next = f
	return f
}

// withdraw ends cn's offer after its transaction. A follower that joined
// but whose commands were never written is told to start again.
func (cn *conn) withdraw() {
	d := cn.chain
	if d == nil {
		return
	}
	d.mu.Lock()
	f := cn.endOfferLocked()
	d.mu.Unlock()
	if f != nil {
		f.turn <- nil
	}
}

// endOfferLocked takes cn out of its destination's chains and returns its
// follower, if one joined.
func (cn *conn) endOfferLocked() *follower {
	d := cn.chain
	d.chains = slices.DeleteFunc(d.chains, func(c *conn) bool { return c == cn })
	cn.chain = nil
	f := cn.joined
	cn.joined = nil
	return f
}

// slot returns the lease of a connection for g once the destination's
// message rate allows msg: either a follower's turn (f is set, l.conn is
// the connection, and f's commands are on the wire) or a lease from
// acquire. A nil lease without an error means that every recipient has
// its reply already.
func (a *Agent) slot(ctx context.Context, t *target, hops []hop, msg *queue.Message, g *group) (l *lease, f *follower, err error) {
	d := t.dest
	f, rated, err := a.join(ctx, t, hops, msg, pendingOf(g.rcpts))
	if err != nil {
		return nil, nil, fmt.Errorf("message rate: %w", err)
	}
	if f != nil {
		if l := f.wait(ctx, d); l != nil {
			return l, f, nil
		}
		f.body.Close()
	}
	if len(pendingOf(g.rcpts)) == 0 {
		return nil, nil, nil
	}
	if l, err = d.acquire(ctx); err != nil {
		return nil, nil, err
	}
	if !rated {
		if err := d.msgs.Wait(ctx); err != nil {
			l.release(l.conn, true)
			return nil, nil, fmt.Errorf("message rate: %w", err)
		}
	}
	return l, nil, nil
}

// join makes msg the follower of a connection of t's destination that is
// in a transaction and suits it, and returns the follower, or nil if no
// connection does. rcpts are the recipients to send; ones that cannot be
// sent are finished here, as the transaction would. rated reports whether
// the message rate was waited for (it is, before a follower joins); err is
// that wait's error.
func (a *Agent) join(ctx context.Context, t *target, hops []hop, msg *queue.Message, rcpts []*rcptState) (f *follower, rated bool, err error) {
	d := t.dest
	if a.cfg.noChaining || t.pol.transport != SMTP {
		return nil, false, nil
	}
	suits := func(c *conn) bool {
		return c.joined == nil && c.pol == t.pol && (!msg.Envelope.SMTPUTF8 || c.ext.smtpUTF8) &&
			slices.ContainsFunc(hops, func(h hop) bool { return h.addr == c.h.addr })
	}
	d.mu.Lock()
	i := slices.IndexFunc(d.chains, suits)
	if i < 0 || !d.parkedUntil.IsZero() {
		d.mu.Unlock()
		return nil, false, nil
	}
	cn := d.chains[i]
	d.mu.Unlock()

	if err := d.msgs.Wait(ctx); err != nil {
		return nil, true, err
	}
	// Everything the transaction would check before MAIL is checked
	// now: once the commands are out, the message is committed to them.
	if rcpts = sendable(msg.Envelope.From, rcpts); len(rcpts) == 0 {
		return nil, true, nil
	}
	body, err := msg.Open()
	if err != nil {
		return nil, true, nil // the transaction on a connection of its own reports it
	}
	var cmds strings.Builder
	cmds.WriteString(mailCommand(msg, cn.ext))
	cmds.WriteString("\r\n")
	for _, r := range rcpts {
		cmds.WriteString(rcptCommand(r.rcpt, cn.ext))
		cmds.WriteString("\r\n")
	}
	cmds.WriteString("DATA\r\n")
	f = &follower{cmds: cmds.String(), body: body, rcpts: rcpts, turn: make(chan *lease, 1)}

	d.mu.Lock()
	defer d.mu.Unlock()
	if cn.chain != d || !suits(cn) || !d.parkedUntil.IsZero() {
		body.Close() // the leader got to its dot, or another follower came first
		return nil, true, nil
	}
	cn.joined = f
	return f, true, nil
}

// leave takes f back from its connection if its commands were not
// written yet, and reports whether it did.
func (d *destination) leave(f *follower) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.chains {
		if c.joined == f {
			c.joined = nil
			return true
		}
	}
	return false
}

// wait waits for f's turn and returns the lease of the connection, or nil
// if f must start again on a connection of its own. Once f's commands
// were written it waits for the leader even if ctx ends: the leader's own
// deadlines bound the wait, and the connection must not be left to
// nobody.
func (f *follower) wait(ctx context.Context, d *destination) *lease {
	select {
	case l := <-f.turn:
		return l
	case <-ctx.Done():
		if d.leave(f) {
			return nil
		}
		return <-f.turn
	}
}

// dropNext tells the follower whose commands went out after cn's last
// dot, if any, to start again: cn failed.
func (cn *conn) dropNext() {
	if f := cn.next; f != nil {
		cn.next = nil
		f.turn <- nil
	}
}

// handOff ends the leader's use of cn. If a follower's commands went out
// after cn's last dot, the follower gets the connection and the lease
// when the connection can be kept; otherwise it starts again, and the
// lease is released with cn as usual.
func (l *lease) handOff(cn *conn, reusable bool) {
	if cn == nil || cn.next == nil {
		l.release(cn, reusable)
		return
	}
	f := cn.next
	cn.next = nil
	d := l.d
	d.mu.Lock()
	keep := reusable && d.keepLocked(cn)
	d.mu.Unlock()
	if keep {
		l.conn, l.probe = cn, false
		f.turn <- l
		return
	}
	f.turn <- nil
	// The follower's commands wait on cn for replies and a body: it
	// must never be used again, whatever release would decide now.
	cn.broken = true
	l.release(cn, false)
}
