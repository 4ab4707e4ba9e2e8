package delivery

import (
	"bufio"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// The session after its opening.
//
// go-smtp's client says EHLO (LHLO), and AUTH; from then on the session
// speaks for itself, on its own buffered reader and writer, so that MAIL,
// every RCPT and DATA go out in one write when the next hop offers
// PIPELINING (RFC 2920), and the body is dot-stuffed in bulk (dotWriter).
// Handing over is sound because an honest server sends nothing after its
// reply to EHLO or AUTH until the client's next command: go-smtp's reader
// has nothing buffered that ours would miss. Whatever a dishonest one sent
// out of turn stays in go-smtp's buffer and is dropped, as bytes injected
// before STARTTLS are (RFC 3207 section 6). go-smtp's client is never used
// again after the hand-over (RSET, QUIT and LMTP replies included), so
// there is only ever one reader of the connection.

// wireBufSize is the size of the session's write buffer: a pipelined
// MAIL/RCPT/DATA group and a small body each fit in one write; larger
// writes of the body pass it by.
const wireBufSize = 8 << 10

// extensions are the EHLO keywords the transaction depends on.
type extensions struct {
	pipelining, eightBitMIME, size, smtpUTF8, dsn bool
}

// takeOver ends go-smtp's part of the session (see above).
func (cn *conn) takeOver() {
	cn.ext = extensionsOf(cn.c)
	cn.c = nil
	if g, ok := cn.raw.(*greetedConn); ok {
		g.pending = nil // out-of-turn bytes, see above
	}
	cn.wd = &deadlineWriter{w: cn.raw, conn: cn.raw, timeout: cn.a.cfg.timeouts.Command} // never 0: a zero timeout is a deadline of now
	cn.bw = bufio.NewWriterSize(cn.wd, wireBufSize)
	cn.tr = textproto.NewReader(bufio.NewReader(cn.raw))
}

// extensionsOf returns the extensions c's EHLO reply listed.
func extensionsOf(c *smtp.Client) extensions {
	has := func(k string) bool { ok, _ := c.Extension(k); return ok }
	return extensions{
		pipelining:   has("PIPELINING"),
		eightBitMIME: has("8BITMIME"),
		size:         has("SIZE"),
		smtpUTF8:     has("SMTPUTF8"),
		dsn:          has("DSN"),
	}
}

// writeCommands buffers lines, to be sent by flush.
func (cn *conn) writeCommands(lines ...string) {
	for _, l := range lines {
		cn.bw.WriteString(l)
		cn.bw.WriteString("\r\n")
	}
}

// flush sends what is buffered, each write bounded by timeout.
func (cn *conn) flush(timeout time.Duration) error {
	cn.wd.timeout, cn.wd.end = timeout, time.Time{}
	return cn.bw.Flush()
}

// readReply reads one reply within timeout. A reply of any code is
// returned as a *sluice.Reply; err is an I/O or protocol error.
func (cn *conn) readReply(timeout time.Duration) (*sluice.Reply, error) {
	cn.raw.SetReadDeadline(time.Now().Add(timeout))
	code, msg, err := cn.tr.ReadResponse(0)
	if err != nil {
		return nil, err
	}
	return parseReply(code, msg), nil
}

// command sends line and reads its reply.
func (cn *conn) command(line string, timeout time.Duration) (*sluice.Reply, error) {
	cn.writeCommands(line)
	if err := cn.flush(timeout); err != nil {
		return nil, err
	}
	return cn.readReply(timeout)
}

// rset ends a transaction that was begun and not completed, so the
// connection can be reused; on failure the connection is not.
func (cn *conn) rset() {
	r, err := cn.command("RSET", cn.a.cfg.timeouts.Command)
	if err != nil || r.Code/100 != 2 {
		cn.broken = true
	}
}

// mailCommand returns the MAIL command for msg, with the parameters
// go-smtp's Client.Mail (v0.25.1) would send for mailOptions(msg), in
// the same order: BODY=8BITMIME whenever offered, SIZE, SMTPUTF8, and
// with DSN, RET and ENVID (as xtext). TestMailRcptCommandsAsGoSMTP
// compares the two.
func mailCommand(msg *queue.Message, ext extensions) string {
	o := mailOptions(msg)
	var sb strings.Builder
	sb.Grow(len("MAIL FROM:<>") + len(msg.Envelope.From) + 64) // 64: BODY, SIZE, SMTPUTF8, RET
	sb.WriteString("MAIL FROM:<")
	sb.WriteString(msg.Envelope.From)
	sb.WriteString(">")
	if ext.eightBitMIME {
		sb.WriteString(" BODY=8BITMIME")
	}
	if ext.size && o.Size != 0 {
		sb.WriteString(" SIZE=")
		var n [20]byte
		sb.Write(strconv.AppendInt(n[:0], o.Size, 10))
	}
	if o.UTF8 && ext.smtpUTF8 {
		sb.WriteString(" SMTPUTF8")
	}
	if ext.dsn {
		if o.Return != "" {
			sb.WriteString(" RET=" + string(o.Return))
		}
		if o.EnvelopeID != "" {
			sb.WriteString(" ENVID=" + encodeXtext(o.EnvelopeID))
		}
	}
	return sb.String()
}

// rcptCommand returns the RCPT command for r, with the parameters
// go-smtp's Client.Rcpt (v0.25.1) would send for rcptOptions(r): with
// DSN, NOTIFY and ORCPT (xtext for rfc822, RFC 6533 unitext or xtext for
// utf-8). A NOTIFY list go-smtp would refuse is left out: the acceptor,
// on go-smtp's server, refuses the same lists, so queued mail has none.
func rcptCommand(r sluice.Recipient, ext extensions) string {
	o := rcptOptions(r)
	var sb strings.Builder
	sb.Grow(len("RCPT TO:<>") + len(r.Address) + 32) // 32: NOTIFY
	sb.WriteString("RCPT TO:<")
	sb.WriteString(r.Address)
	sb.WriteString(">")
	if !ext.dsn {
		return sb.String()
	}
	if len(o.Notify) > 0 && validNotify(r.Notify) {
		sb.WriteString(" NOTIFY=")
		for i, n := range o.Notify {
			if i > 0 {
				sb.WriteString(",")
			}
			sb.WriteString(string(n))
		}
	}
	if o.OriginalRecipient != "" {
		var enc string
		switch {
		case o.OriginalRecipientType == "RFC822":
			enc = encodeXtext(o.OriginalRecipient)
		case ext.smtpUTF8:
			enc = encodeUTF8AddrUnitext(o.OriginalRecipient)
		default:
			enc = encodeUTF8AddrXtext(o.OriginalRecipient)
		}
		sb.WriteString(" ORCPT=" + string(o.OriginalRecipientType) + ";" + enc)
	}
	return sb.String()
}

// validNotify reports whether a NOTIFY list is one RFC 3461 allows: NEVER
// alone, or each of SUCCESS, FAILURE and DELAY at most once.
func validNotify(list []string) bool {
	seen := map[string]bool{}
	for _, n := range list {
		n = strings.ToUpper(n)
		switch n {
		case "NEVER", "SUCCESS", "FAILURE", "DELAY":
		default:
			return false
		}
		if seen[n] {
			return false
		}
		seen[n] = true
	}
	return !seen["NEVER"] || len(seen) == 1
}

// encodeXtext encodes s as RFC 3461 xtext, as go-smtp does.
func encodeXtext(s string) string {
	return encodeAddrText(s, func(sb *strings.Builder, ch rune) { fmt.Fprintf(sb, "+%X", ch) })
}

// encodeUTF8AddrXtext encodes s as RFC 6533 utf-8-addr-xtext.
func encodeUTF8AddrXtext(s string) string {
	return encodeAddrText(s, func(sb *strings.Builder, ch rune) { fmt.Fprintf(sb, `\x{%X}`, ch) })
}

// encodeUTF8AddrUnitext encodes s as RFC 6533 utf-8-addr-unitext.
func encodeUTF8AddrUnitext(s string) string {
	return encodeAddrText(s, func(sb *strings.Builder, ch rune) {
		if ch > 0x7f {
			sb.WriteRune(ch)
		} else {
			fmt.Fprintf(sb, `\x{%X}`, ch)
		}
	})
}

// encodeAddrText writes the printable ASCII of s other than "+" and "="
// as is, and every other character through escape.
func encodeAddrText(s string, escape func(*strings.Builder, rune)) string {
	var sb strings.Builder
	sb.Grow(len(s))
	for _, ch := range s {
		if ch >= '!' && ch <= '~' && ch != '+' && ch != '=' {
			sb.WriteRune(ch)
		} else {
			escape(&sb, ch)
		}
	}
	return sb.String()
}
