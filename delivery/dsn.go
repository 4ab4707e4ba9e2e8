package delivery

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-message"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// Limits on what a notification quotes of the original message.
const (
	maxQuotedHeader  = 64 << 10 // text/rfc822-headers part
	maxQuotedMessage = 1 << 20  // message/rfc822 part (RET=FULL)
)

// dsnKind is what differs between a failure and a delay notification.
type dsnKind struct {
	notify  string // the RFC 3461 NOTIFY keyword that asks for it
	action  string // the Action field (RFC 3464 section 2.3.3)
	subject string
	intro   string // first line of the human-readable part
	full    bool   // RET=FULL may return the whole message
}

var (
	failedKind = dsnKind{
		notify:  "FAILURE",
		action:  "failed",
		subject: "Undelivered Mail Returned to Sender",
		intro:   "Your message could not be delivered to one or more recipients.",
		full:    true,
	}
	// RFC 3461 section 4.3: a notification without failures returns the
	// header only, whatever RET says.
	delayedKind = dsnKind{
		notify:  "DELAY",
		action:  "delayed",
		subject: "Delayed Mail (still being retried)",
		intro:   "Your message has not yet been delivered to one or more recipients.\r\nThe mail system will keep trying; you need not send it again.",
	}
)

// Bounce queues a delivery status notification (RFC 3464) to the sender
// of msg for the failed recipients that asked for one (RFC 3461 NOTIFY).
// Nothing is sent for the null sender. An error means no notification was
// queued; the queue then keeps the recipients and calls Bounce again.
func (a *Agent) Bounce(ctx context.Context, msg *queue.Message, failed []queue.Failure) error {
	return a.notify(ctx, msg, failed, failedKind)
}

// NotifyDelay queues a "delayed" delivery status notification (RFC 3464,
// Action: delayed) to the sender of msg for the recipients that asked for
// one: NOTIFY including DELAY, or no NOTIFY at all (RFC 3461 section
// 4.1). Nothing is sent for the null sender. The notification quotes the
// original header only. An error means no notification was queued.
func (a *Agent) NotifyDelay(ctx context.Context, msg *queue.Message, delayed []queue.Failure) error {
	return a.notify(ctx, msg, delayed, delayedKind)
}

func (a *Agent) notify(ctx context.Context, msg *queue.Message, fails []queue.Failure, kind dsnKind) error {
	env := msg.Envelope
	if env.From == "" {
		return nil // never notify about a notification (RFC 5321 section 4.5.5)
	}
	var notify []queue.Failure
	for _, f := range fails {
		if f.Recipient.NotifyOn(kind.notify) {
			notify = append(notify, f)
		}
	}
	if len(notify) == 0 {
		return nil
	}
	dsnEnv := &sluice.Envelope{
		From:       "",
		Recipients: []sluice.Recipient{{Address: env.From, Notify: []string{"NEVER"}}},
		Received:   time.Now(),
		SMTPUTF8:   env.SMTPUTF8,
	}
	full := kind.full && strings.EqualFold(env.Ret, "FULL") && msg.Size <= maxQuotedMessage
	if full && env.Body == "8BITMIME" {
		dsnEnv.Body = "8BITMIME"
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(a.writeDSN(pw, msg, notify, kind, full))
	}()
	id, err := a.dsn.Enqueue(ctx, dsnEnv, pr)
	pr.CloseWithError(errors.New("delivery: notification abandoned"))
	<-done
	if err != nil {
		return fmt.Errorf("delivery: queue %s notification for %s: %w", kind.action, env.ID, err)
	}
	a.log.InfoContext(ctx, "notification queued", "queue_id", env.ID, "dsn_id", id, "to", env.From,
		"action", kind.action, "recipients", len(notify))
	return nil
}

// writeDSN writes the notification: a multipart/report with a text part,
// the delivery-status part and the original header or message.
func (a *Agent) writeDSN(w io.Writer, msg *queue.Message, fails []queue.Failure, kind dsnKind, full bool) error {
	env := msg.Envelope
	var h message.Header
	h.Set("From", "Mail Delivery System <MAILER-DAEMON@"+a.cfg.hostname+">")
	h.Set("To", "<"+env.From+">")
	h.Set("Subject", kind.subject)
	h.Set("Date", time.Now().Format(time.RFC1123Z))
	h.Set("Message-ID", "<"+randomID()+"@"+a.cfg.hostname+">")
	h.Set("Auto-Submitted", "auto-replied")
	h.Set("MIME-Version", "1.0")
	h.SetContentType("multipart/report", map[string]string{"report-type": "delivery-status"})
	mw, err := message.CreateWriter(w, h)
	if err != nil {
		return err
	}
	if err := a.writeDSNText(mw, fails, kind); err != nil {
		return err
	}
	if err := a.writeDSNStatus(mw, env, fails, kind); err != nil {
		return err
	}
	if err := writeDSNOriginal(mw, msg, full); err != nil {
		return err
	}
	return mw.Close()
}

func (a *Agent) writeDSNText(mw *message.Writer, fails []queue.Failure, kind dsnKind) error {
	var h message.Header
	h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	h.Set("Content-Transfer-Encoding", "quoted-printable")
	pw, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "This is the mail system at host %s.\r\n\r\n", a.cfg.hostname)
	b.WriteString(kind.intro + "\r\n")
	b.WriteString("The attached delivery report has the details.\r\n\r\n")
	for _, f := range fails {
		fmt.Fprintf(&b, "<%s>: %s\r\n", f.Recipient.Address, failureText(f))
	}
	if _, err := io.WriteString(pw, b.String()); err != nil {
		return err
	}
	return pw.Close()
}

func failureText(f queue.Failure) string {
	switch {
	case f.Expired && f.Reply != nil:
		return "gave up after the maximum time in queue; last reply: " + f.Reply.Error()
	case f.Expired:
		return "gave up after the maximum time in queue"
	case f.Reply != nil:
		return f.Reply.Error()
	case f.Delayed:
		return "delivery delayed"
	}
	return "delivery failed"
}

func (a *Agent) writeDSNStatus(mw *message.Writer, env *sluice.Envelope, fails []queue.Failure, kind dsnKind) error {
	var h message.Header
	h.SetContentType("message/delivery-status", nil)
	pw, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Reporting-MTA: dns; %s\r\n", a.cfg.hostname)
	if env.EnvID != "" {
		fmt.Fprintf(&b, "Original-Envelope-Id: %s\r\n", oneLine(env.EnvID))
	}
	if !env.Received.IsZero() {
		fmt.Fprintf(&b, "Arrival-Date: %s\r\n", env.Received.Format(time.RFC1123Z))
	}
	for _, f := range fails {
		b.WriteString("\r\n")
		addrType := "rfc822"
		if !isPrintableASCII(f.Recipient.Address) {
			addrType = "utf-8"
		}
		fmt.Fprintf(&b, "Final-Recipient: %s; %s\r\n", addrType, f.Recipient.Address)
		if f.Recipient.ORcpt != "" {
			fmt.Fprintf(&b, "Original-Recipient: %s\r\n", oneLine(f.Recipient.ORcpt))
		}
		fmt.Fprintf(&b, "Action: %s\r\n", kind.action)
		fmt.Fprintf(&b, "Status: %s\r\n", dsnStatus(f, kind))
		if f.Reply != nil {
			fmt.Fprintf(&b, "Diagnostic-Code: smtp; %s\r\n", oneLine(f.Reply.Error()))
			// An extension field (RFC 3464 section 2.4): [Categorize].
			fmt.Fprintf(&b, "X-Sluice-Category: %s\r\n", Categorize(f.Reply))
		}
	}
	if _, err := io.WriteString(pw, b.String()); err != nil {
		return err
	}
	return pw.Close()
}

func dsnStatus(f queue.Failure, kind dsnKind) string {
	if kind.action == delayedKind.action {
		// A delay is transient by definition (RFC 3464 section 2.3.4).
		if f.Reply != nil && f.Reply.Enhanced[0] == 4 {
			return f.Reply.Enhanced.String()
		}
		return "4.0.0"
	}
	switch {
	case f.Expired:
		return "4.4.7"
	case f.Reply != nil && f.Reply.Enhanced != (sluice.EnhancedCode{}):
		return f.Reply.Enhanced.String()
	}
	return "5.0.0"
}

// writeDSNOriginal quotes the original message (RET=FULL) or its header.
func writeDSNOriginal(mw *message.Writer, msg *queue.Message, full bool) error {
	body, err := msg.Open()
	if err != nil {
		return fmt.Errorf("open original: %w", err)
	}
	defer body.Close()
	var h message.Header
	if full {
		h.SetContentType("message/rfc822", nil)
		h.Set("Content-Transfer-Encoding", "8bit")
	} else {
		h.SetContentType("text/rfc822-headers", nil)
	}
	pw, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if full {
		if _, err := io.Copy(pw, io.LimitReader(body, maxQuotedMessage)); err != nil {
			return fmt.Errorf("copy original: %w", err)
		}
		return pw.Close()
	}
	if err := copyHeader(pw, body); err != nil {
		return err
	}
	return pw.Close()
}

// copyHeader copies the header of the message in r, up to and excluding
// the blank line, and at most maxQuotedHeader bytes of it.
func copyHeader(w io.Writer, r io.Reader) error {
	br := bufio.NewReader(io.LimitReader(r, maxQuotedHeader))
	for {
		line, err := br.ReadString('\n')
		if line == "\r\n" || line == "\n" {
			return nil
		}
		if strings.HasSuffix(line, "\n") {
			if _, werr := io.WriteString(w, line); werr != nil {
				return werr
			}
		}
		switch {
		case err == io.EOF:
			return nil // header-only message, or cut at the limit
		case err != nil:
			return fmt.Errorf("read original header: %w", err)
		}
	}
}

func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
