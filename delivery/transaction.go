package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// send runs one transaction for rcpts. It records final replies in rcpts;
// a non-nil error (a *hopError) is a connection-level failure after which
// the connection is unusable and the recipients without a final reply
// should be tried at the next address (or, if it is stale, again on a new
// connection).
func (cn *conn) send(ctx context.Context, msg *queue.Message, rcpts []*rcptState) error {
	for _, r := range rcpts {
		r.relay, r.ip, r.tls, r.source = cn.h.name, cn.h.addr.String(), cn.tlsVer, cn.local
	}
	stop := context.AfterFunc(ctx, func() { cn.raw.Close() })
	err := cn.transaction(msg, rcpts)
	if !stop() { // ctx ended and closed the connection
		cn.broken = true
		if err == nil {
			err = newHopError(cn.h, "DATA", ctx.Err())
		}
	}
	if err != nil {
		cn.broken = true
		return err
	}
	cn.msgs++
	return nil
}

// hopErr is newHopError for this connection, marked stale when the
// failure is the first thing a cached connection met.
func (cn *conn) hopErr(phase string, err error) *hopError {
	e := newHopError(cn.h, phase, err)
	e.stale = cn.cached
	return e
}

// transaction runs MAIL, RCPT and DATA for rcpts. When the next hop
// offers PIPELINING (RFC 2920) they go out in one write and their replies
// are read in order; otherwise each command waits for its reply. Either
// way the outcome is the same: a 5xx to MAIL bounces every recipient, each
// RCPT reply is recorded, a 421 anywhere ends the session, and the body
// goes to the accepted recipients.
//
// No RSET precedes MAIL on a reused connection: MAIL starts a new
// transaction after a completed one (RFC 5321 section 3.3), and a transaction that
// is abandoned after a successful MAIL is reset then and there (abandon).
// A cached connection that the next hop closed while it was idle fails at
// its first reply; that error is stale and the message is tried again on
// a new connection (Agent.deliverGroup).
func (cn *conn) transaction(msg *queue.Message, rcpts []*rcptState) error {
	env := msg.Envelope
	if env.SMTPUTF8 && !cn.ext.smtpUTF8 {
		finishAll(rcpts, sluice.NewReply(553, sluice.EnhancedCode{5, 6, 7},
			"next hop %s does not support SMTPUTF8, required by this message", cn.h))
		return nil
	}
	if rcpts = sendable(env.From, rcpts); len(rcpts) == 0 {
		return nil
	}
	// Opened before MAIL, so a damaged spool costs the session nothing.
	body, err := msg.Open()
	if err != nil {
		finishAll(rcpts, sluice.NewReply(451, sluice.EnhancedCode{4, 3, 0}, "cannot open queued message: %v", err))
		return nil
	}
	defer body.Close()
	accepted, mailOK, err := cn.envelope(msg, rcpts)
	if err != nil {
		return err
	}
	t := cn.a.cfg.timeouts
	if !cn.ext.pipelining {
		if len(accepted) == 0 {
			if mailOK {
				cn.rset()
			}
			return nil
		}
		cn.writeCommands("DATA")
		if err := cn.flush(t.DataStart); err != nil {
			return cn.hopErr("DATA", err)
		}
	}
	r, err := cn.readReply(t.DataStart)
	if err != nil {
		return cn.hopErr("DATA", err)
	}
	if r.Code == 421 {
		return cn.hopErr("DATA", r)
	}
	if len(accepted) == 0 {
		cn.abandon(r, mailOK)
		return nil
	}
	switch r.Code / 100 {
	case 3:
		return cn.data(msg, body, accepted)
	case 4, 5:
		finishAll(accepted, r)
		cn.rset()
		return nil
	}
	return cn.hopErr("DATA", fmt.Errorf("unexpected reply to DATA: %d %s", r.Code, r.Message))
}

// sendable returns the recipients that can be put on the wire, and
// bounces those that cannot: a CR or LF in an address would end the
// command line (go-smtp refuses such lines too; the acceptor never queues
// them).
func sendable(from string, rcpts []*rcptState) []*rcptState {
	if strings.ContainsAny(from, "\r\n") {
		finishAll(rcpts, sluice.NewReply(553, sluice.EnhancedCode{5, 1, 7}, "sender address contains a line break"))
		return nil
	}
	bad := func(r *rcptState) bool { return strings.ContainsAny(r.rcpt.Address, "\r\n") }
	if !slices.ContainsFunc(rcpts, bad) {
		return rcpts // the usual case, without a copy per message
	}
	var out []*rcptState
	for _, r := range rcpts {
		if bad(r) {
			r.finish(sluice.NewReply(553, sluice.EnhancedCode{5, 1, 3}, "recipient address contains a line break"))
			continue
		}
		out = append(out, r)
	}
	return out
}

// envelope sends MAIL and the RCPTs (and, pipelining, DATA, whose reply is
// left unread) and reads their replies. It returns the recipients the next
// hop accepted and whether it accepted MAIL; recipients it refused have
// their reply, or all of them the refusal of MAIL.
func (cn *conn) envelope(msg *queue.Message, rcpts []*rcptState) (accepted []*rcptState, mailOK bool, err error) {
	t := cn.a.cfg.timeouts
	// A group of many RCPTs outgrows the write buffer, which then writes
	// before flush would set the deadline: set it first, and drop the
	// previous body's DataRate bound.
	cn.wd.timeout, cn.wd.end = t.Mail, time.Time{}
	cn.writeCommands(mailCommand(msg, cn.ext))
	if cn.ext.pipelining {
		for _, r := range rcpts {
			cn.writeCommands(rcptCommand(r.rcpt, cn.ext))
		}
		cn.writeCommands("DATA")
	}
	if err := cn.flush(t.Mail); err != nil {
		return nil, false, cn.hopErr("MAIL", err)
	}
	mail, err := cn.readReply(t.Mail)
	if err != nil || mail.Code == 421 {
		return nil, false, cn.hopErr("MAIL", replyOrErr(mail, err))
	}
	cn.cached = false // it answered: from here on, failures are the host's
	if mail.Code/100 != 2 {
		if !mail.Permanent() { // anything else moves the recipients on
			return nil, false, cn.hopErr("MAIL", mail)
		}
		finishAll(rcpts, mail)
		if !cn.ext.pipelining {
			return nil, false, nil
		}
	}
	mailOK = mail.Code/100 == 2
	for _, r := range rcpts {
		if !cn.ext.pipelining {
			cn.writeCommands(rcptCommand(r.rcpt, cn.ext))
			if err := cn.flush(t.Rcpt); err != nil {
				return nil, false, cn.hopErr("RCPT", err)
			}
		}
		reply, err := cn.readReply(t.Rcpt)
		if err != nil || reply.Code == 421 { // the session is over
			return nil, false, cn.hopErr("RCPT", replyOrErr(reply, err))
		}
		switch {
		case !mailOK: // read to stay in step; the recipient has MAIL's reply
		case reply.Code/100 == 2:
			accepted = append(accepted, r)
		default:
			r.finish(reply)
		}
	}
	return accepted, mailOK, nil
}

func replyOrErr(r *sluice.Reply, err error) error {
	if err != nil {
		return err
	}
	return r
}

// abandon ends a pipelined transaction that has no recipient left, given
// the reply to DATA. A server that answered DATA with 354 anyway waits for
// a body: it gets none, only the final dot (RFC 2920 section 3.1), and its
// reply is read and ignored, which ends the transaction. A server that
// refused DATA after accepting MAIL still has the transaction open, which
// RSET ends. If either fails the connection is not reused.
func (cn *conn) abandon(dataReply *sluice.Reply, mailOK bool) {
	t := cn.a.cfg.timeouts
	switch {
	case dataReply.Code == 354:
		cn.bw.WriteString(".\r\n")
		if err := cn.flush(t.Command); err != nil {
			cn.broken = true
			return
		}
		if _, err := cn.readReply(t.Data); err != nil {
			cn.broken = true
		}
	case mailOK:
		cn.rset()
	}
}

// data sends the body to the accepted recipients, dot-stuffed in bulk,
// and records the final reply (for LMTP, each recipient's).
func (cn *conn) data(msg *queue.Message, body io.Reader, accepted []*rcptState) error {
	t := cn.a.cfg.timeouts
	cn.wd.timeout, cn.wd.end = t.Command, time.Time{}
	if t.DataRate > 0 {
		cn.wd.rate = t.DataRate
		cn.wd.end = time.Now().Add(t.Command + time.Duration(float64(msg.Size)/float64(t.DataRate)*float64(time.Second)))
	}
	src := &errReader{r: body}
	w := newDotWriter(cn.bw)
	buf := copyBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(w, src, *buf)
	copyBufs.Put(buf)
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		cn.broken = true
		cn.raw.Close() // abort without the final dot, so nothing is delivered
		if src.err != nil {
			cn.a.log.Error("queued message unreadable", "queue_id", msg.Envelope.ID, "err", src.err)
			finishAll(accepted, sluice.NewReply(451, sluice.EnhancedCode{4, 3, 0}, "cannot read queued message: %v", src.err))
			return nil
		}
		return cn.hopErr("DATA", err)
	}
	if cn.pol.transport == LMTP {
		cn.lmtpReplies(accepted)
		return nil
	}
	r, err := cn.readReply(t.Data)
	if err != nil {
		// The next hop may have the message already: retry later rather
		// than at another address now.
		var ne net.Error
		cn.broken, cn.hung = true, errors.As(err, &ne) && ne.Timeout()
		finishAll(accepted, sluice.NewReply(451, sluice.EnhancedCode{4, 4, 2},
			"%s: no reply after end of data: %v", cn.h, err))
		return nil
	}
	finishAll(accepted, r)
	cn.broken = cn.broken || r.Code == 421
	return nil
}

// lmtpReplies records the per-recipient replies of an LMTP server, one
// for each accepted recipient in the order of the RCPTs (RFC 2033 section
// 4.2), all within the Data timeout.
func (cn *conn) lmtpReplies(accepted []*rcptState) {
	cn.raw.SetReadDeadline(time.Now().Add(cn.a.cfg.timeouts.Data))
	for i, r := range accepted {
		code, text, err := cn.tr.ReadResponse(0)
		if err != nil {
			cn.broken = true
			finishAll(accepted[i:], sluice.NewReply(451, sluice.EnhancedCode{4, 4, 2}, "%s: no LMTP reply for this recipient: %v", cn.h, err))
			return
		}
		r.finish(parseReply(code, text))
		cn.broken = cn.broken || code == 421
	}
}
