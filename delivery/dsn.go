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

// dsnKind is the kind of a notification: a failure or a delay.
type dsnKind struct {
	notify  string // the RFC 3461 NOTIFY keyword that asks for it
	action  string // the RFC 3464 Action field
	subject string
	intro   string
}

var (
	dsnFailed = dsnKind{"FAILURE", "failed", "Undelivered Mail Returned to Sender",
		"Your message could not be delivered to one or more recipients.\r\n"}
	dsnDelayed = dsnKind{"DELAY", "delayed", "Delayed Mail (still being retried)",
		"Delivery of your message to one or more recipients is delayed.\r\n" +
			"No action is needed: delivery will be tried again until the message expires.\r\n"}
)

// Bounce queues a delivery status notification (RFC 3464) to the sender
// of msg for the failed recipients that asked for one (RFC 3461 NOTIFY).
// Nothing is sent for the null sender, which is also the sender of every
// notification, so a notification never loops. An error means no
// notification was queued; the queue then keeps the recipients and calls
// Bounce again.
func (a *Agent) Bounce(ctx context.Context, msg *queue.Message, failed []queue.Failure) error {
	return a.notify(ctx, msg, failed, dsnFailed)
}

// NotifyDelay queues a "delayed" notification (RFC 3464 Action: delayed,
// a 4.x.x Status) to the sender of msg for the recipients that asked for
// one (NOTIFY=DELAY, or no NOTIFY parameter). It quotes the original
// header only, whatever RET says, since the message is still queued.
func (a *Agent) NotifyDelay(ctx context.Context, msg *queue.Message, delayed []queue.Failure) error {
	return a.notify(ctx, msg, delayed, dsnDelayed)
}

func (a *Agent) notify(ctx context.Context, msg *queue.Message, list []queue.Failure, kind dsnKind) error {
	env := msg.Envelope
	if env.From == "" {
		return nil // never bounce a bounce (RFC 5321 section 4.5.5)
	}
	var notify []queue.Failure
	for _, f := range list {
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
	full := kind.action == "failed" && strings.EqualFold(env.Ret, "FULL") && msg.Size <= maxQuotedMessage
	if full && env.Body == "8BITMIME" {
		dsnEnv.Body = "8BITMIME"
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(a.writeDSN(pw, msg, notify, full, kind))
	}()
	id, err := a.dsn.Enqueue(ctx, dsnEnv, pr)
	pr.CloseWithError(errors.New("delivery: notification abandoned"))
	<-done
	if err != nil {
		return fmt.Errorf("delivery: queue %s notification for %s: %w", kind.action, env.ID, err)
	}
	a.log.InfoContext(ctx, "notification queued", "queue_id", env.ID, "dsn_id", id, "action", kind.action,
		"to", env.From, "recipients", len(notify))
	return nil
}

// writeDSN writes the notification: a multipart/report with a text part,
// the delivery-status part and the original header or message.
func (a *Agent) writeDSN(w io.Writer, msg *queue.Message, list []queue.Failure, full bool, kind dsnKind) error {
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
	if err := a.writeDSNText(mw, list, kind); err != nil {
		return err
	}
	if err := a.writeDSNStatus(mw, env, list, kind); err != nil {
		return err
	}
	if err := writeDSNOriginal(mw, msg, full); err != nil {
		return err
	}
	return mw.Close()
}

func (a *Agent) writeDSNText(mw *message.Writer, failed []queue.Failure, kind dsnKind) error {
	var h message.Header
	h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	h.Set("Content-Transfer-Encoding", "quoted-printable")
	pw, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "This is the mail system at host %s.\r\n\r\n", a.cfg.hostname)
	b.WriteString(kind.intro)
	b.WriteString("The attached delivery report has the details.\r\n\r\n")
	for _, f := range failed {
		fmt.Fprintf(&b, "<%s>: %s\r\n", f.Recipient.Address, failureText(f))
		if c := Categorize(f.Reply); c != CategoryNone {
			fmt.Fprintf(&b, "    (reason: %s)\r\n", c)
		}
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
	}
	return "delivery failed"
}

func (a *Agent) writeDSNStatus(mw *message.Writer, env *sluice.Envelope, failed []queue.Failure, kind dsnKind) error {
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
	for _, f := range failed {
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
			if c := Categorize(f.Reply); c != CategoryNone {
				// An extension field (RFC 3464 section 3.3).
				fmt.Fprintf(&b, "X-Sluice-Category: %s\r\n", c)
			}
		}
	}
	if _, err := io.WriteString(pw, b.String()); err != nil {
		return err
	}
	return pw.Close()
}

func dsnStatus(f queue.Failure, kind dsnKind) string {
	switch {
	case kind.action == "delayed":
		// A delay is transient by definition: class 4 (RFC 3464 2.3.4).
		if f.Reply != nil && f.Reply.Enhanced[0] == 4 {
			return f.Reply.Enhanced.String()
		}
		return "4.0.0"
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
