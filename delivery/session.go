package delivery

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// tlsFailure marks a failed STARTTLS handshake: the connection is gone and
// the same address may be tried again without TLS.
type tlsFailure struct{ err error }

func (e *tlsFailure) Error() string { return "TLS handshake: " + e.err.Error() }
func (e *tlsFailure) Unwrap() error { return e.err }

// hopError is a connection-level failure with one next-hop address: the
// recipients without a final reply move to the next address.
type hopError struct {
	h     hop
	phase string // "connect", "greeting", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA"
	err   error
	// unreachable is set for failures that say the address is down or
	// hung (refused, timed out, reset before any reply): the dead-host
	// memory records them.
	unreachable bool
	// stale is set when a connection taken from the idle cache failed at
	// its first command: the next hop closed it while it was idle, which
	// says nothing about the host, and the message is tried again at once
	// on a new connection.
	stale bool
}

func (e *hopError) Error() string { return fmt.Sprintf("%s %s: %v", e.h, e.phase, e.err) }
func (e *hopError) Unwrap() error { return e.err }

// throttled reports whether the next hop asked us to slow down or go away
// (a 421 reply), which shrinks the destination's concurrency.
func (e *hopError) throttled() bool {
	r, ok := sluice.ReplyOf(e.err)
	return ok && r.Code == 421
}

func newHopError(h hop, phase string, err error) *hopError {
	err = remoteErr(err)
	e := &hopError{h: h, phase: phase, err: err}
	if _, isReply := sluice.ReplyOf(err); !isReply {
		var ne net.Error
		e.unreachable = phase == "connect" || phase == "greeting" || (errors.As(err, &ne) && ne.Timeout())
	}
	return e
}

// policy is how sessions of one target are opened; conns opened with one
// policy are reused only for the same policy.
type policy struct {
	transport  Transport
	tls        TLSPolicy
	helo       string
	source     string // local IP address, "" for any
	user, pass string
}

// conn is an open session with one next-hop address, ready for a
// transaction.
type conn struct {
	a      *Agent
	h      hop
	pol    policy
	raw    net.Conn     // the connection under the client (TLS if started)
	c      *smtp.Client // opens the session; nil after takeOver
	tlsVer string       // TLS version name, "" in plain text
	local  string       // local address, host:port
	msgs   int          // transactions completed
	broken bool         // an error left the connection unusable
	hung   bool         // the peer stopped answering after the final dot
	cached bool         // taken from the idle cache; no reply read since

	// The session after takeOver (wire.go).
	ext extensions
	wd  *deadlineWriter // under bw: a deadline on every write
	bw  *bufio.Writer
	tr  *textproto.Reader

	timer *time.Timer // idle timer; guarded by the destination's mu
}

// open dials h, reads the greeting, says EHLO, starts TLS as the policy
// says and authenticates. Errors are *hopError; a *tlsFailure in the
// chain means the handshake failed and a plain retry may work.
func (a *Agent) open(ctx context.Context, h hop, pol policy, useTLS bool) (*conn, error) {
	t := a.cfg.timeouts
	opened := a.shaper.beginOpen(h.addr)
	defer opened() // after the greeting at the latest
	dctx, cancel := context.WithTimeout(ctx, t.Connect)
	raw, err := a.cfg.dial(dctx, "tcp", pol.source, h.addr.String())
	cancel()
	if err != nil {
		return nil, newHopError(h, "connect", err)
	}
	cn := &conn{a: a, h: h, pol: pol, raw: raw, local: raw.LocalAddr().String()}
	// Until open returns, ctx cancellation closes the connection.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	if err := cn.greet(); err != nil {
		raw.Close()
		return nil, err
	}
	if useTLS && pol.tls != TLSNone {
		if err := cn.startTLS(ctx); err != nil {
			cn.raw.Close()
			return nil, err
		}
	} else if pol.tls == TLSRequired {
		raw.Close()
		return nil, &hopError{h: h, phase: "STARTTLS", err: sluice.NewReply(451, sluice.EnhancedCode{4, 7, 10}, "TLS is required and was not used")}
	}
	if pol.user != "" {
		if err := cn.auth(); err != nil {
			cn.raw.Close()
			return nil, err
		}
	}
	cn.takeOver()
	return cn, nil
}

// greet reads the banner and says EHLO (LHLO for LMTP), each under its own
// deadline. The banner is read here rather than by go-smtp, which would
// bound it with the EHLO timeout; the client then gets a canned greeting.
func (cn *conn) greet() error {
	t := cn.a.cfg.timeouts
	cn.raw.SetDeadline(time.Now().Add(t.Greeting))
	br := bufio.NewReader(cn.raw)
	if _, _, err := textproto.NewReader(br).ReadResponse(220); err != nil {
		return newHopError(cn.h, "greeting", protoErr(err))
	}
	cn.raw.SetDeadline(time.Time{})
	pending := []byte("220 " + cn.h.name + " ESMTP\r\n")
	if n := br.Buffered(); n > 0 { // a peer that talks before its turn
		rest, _ := br.Peek(n)
		pending = append(pending, rest...)
	}
	cn.newClient(&greetedConn{Conn: cn.raw, pending: pending})
	cn.c.CommandTimeout = t.Hello
	if err := cn.c.Hello(cn.pol.helo); err != nil {
		return newHopError(cn.h, "EHLO", err)
	}
	return nil
}

func (cn *conn) newClient(c net.Conn) {
	if cn.pol.transport == LMTP {
		cn.c = smtp.NewClientLMTP(c)
	} else {
		cn.c = smtp.NewClient(c)
	}
}

// startTLS sends STARTTLS when offered, performs the handshake and says
// EHLO again. go-smtp v0.25 has no client STARTTLS after a custom EHLO, so
// the command is written here; the go-smtp client, which has nothing
// buffered after the EHLO reply, is then replaced by one on the TLS
// connection, which discards anything a server may have injected before
// the handshake (RFC 3207 section 6).
func (cn *conn) startTLS(ctx context.Context) error {
	t := cn.a.cfg.timeouts
	if ok, _ := cn.c.Extension("STARTTLS"); !ok || cn.a.cfg.tls == nil {
		if cn.pol.tls == TLSRequired {
			return &hopError{h: cn.h, phase: "STARTTLS", err: sluice.NewReply(451, sluice.EnhancedCode{4, 7, 10}, "TLS is required and the next hop does not offer STARTTLS")}
		}
		return nil
	}
	conn := cn.raw
	conn.SetDeadline(time.Now().Add(t.StartTLS))
	if _, err := io.WriteString(conn, "STARTTLS\r\n"); err != nil {
		return newHopError(cn.h, "STARTTLS", &tlsFailure{err})
	}
	if _, _, err := textproto.NewReader(bufio.NewReader(conn)).ReadResponse(220); err != nil {
		var te *textproto.Error
		if errors.As(err, &te) && cn.pol.tls != TLSRequired {
			// Refused: go on in plain text on this connection.
			conn.SetDeadline(time.Time{})
			return nil
		}
		return newHopError(cn.h, "STARTTLS", &tlsFailure{protoErr(err)})
	}
	cfg := cn.a.cfg.tls.Clone()
	if cfg.ServerName == "" && !strings.HasPrefix(cn.h.name, "[") && net.ParseIP(cn.h.name) == nil {
		cfg.ServerName = cn.h.name
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return newHopError(cn.h, "STARTTLS", &tlsFailure{err})
	}
	conn.SetDeadline(time.Time{})
	cn.tlsVer = tls.VersionName(tc.ConnectionState().Version)
	// The new client expects a greeting; the server sends none after
	// STARTTLS, so the session supplies one.
	cn.raw = &greetedConn{Conn: tc, pending: []byte("220 " + cn.h.name + " ESMTP (after STARTTLS)\r\n")}
	cn.newClient(cn.raw)
	cn.c.CommandTimeout = t.Hello
	if err := cn.c.Hello(cn.pol.helo); err != nil {
		return newHopError(cn.h, "EHLO", err)
	}
	return nil
}

// auth authenticates with AUTH PLAIN, only over TLS.
func (cn *conn) auth() error {
	if cn.tlsVer == "" {
		return &hopError{h: cn.h, phase: "AUTH", err: sluice.NewReply(451, sluice.EnhancedCode{4, 7, 10}, "refusing to send credentials without TLS")}
	}
	if !cn.c.SupportsAuth(sasl.Plain) {
		return &hopError{h: cn.h, phase: "AUTH", err: sluice.NewReply(451, sluice.EnhancedCode{4, 7, 8}, "next hop does not offer AUTH PLAIN")}
	}
	cn.c.CommandTimeout = cn.a.cfg.timeouts.Command
	if err := cn.c.Auth(sasl.NewPlainClient("", cn.pol.user, cn.pol.pass)); err != nil {
		return newHopError(cn.h, "AUTH", err)
	}
	return nil
}

// maxQuitWait bounds the wait for the reply to QUIT: nothing depends on
// it, and Agent.Close quits every idle connection.
const maxQuitWait = 2 * time.Second

// quit ends the session politely and closes the connection.
func (cn *conn) quit() {
	if !cn.broken {
		_, _ = cn.command("QUIT", min(cn.a.cfg.timeouts.Command, maxQuitWait))
	}
	cn.raw.Close()
}

func (cn *conn) startIdle(d time.Duration, f func()) { cn.timer = time.AfterFunc(d, f) }

func (cn *conn) stopIdle() {
	if cn.timer != nil {
		cn.timer.Stop()
		cn.timer = nil
	}
}

func mailOptions(msg *queue.Message) *smtp.MailOptions {
	env := msg.Envelope
	o := &smtp.MailOptions{UTF8: env.SMTPUTF8, Size: msg.Size}
	switch strings.ToUpper(env.Ret) {
	case "FULL":
		o.Return = smtp.DSNReturnFull
	case "HDRS":
		o.Return = smtp.DSNReturnHeaders
	}
	if isPrintableASCII(env.EnvID) {
		o.EnvelopeID = env.EnvID
	}
	return o
}

func rcptOptions(r sluice.Recipient) *smtp.RcptOptions {
	o := &smtp.RcptOptions{}
	for _, n := range r.Notify {
		o.Notify = append(o.Notify, smtp.DSNNotify(strings.ToUpper(n)))
	}
	if typ, addr, ok := strings.Cut(r.ORcpt, ";"); ok {
		switch strings.ToUpper(strings.TrimSpace(typ)) {
		case "RFC822":
			if isPrintableASCII(addr) {
				o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeRFC822, addr
			}
		case "UTF-8":
			o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, addr
		}
	}
	return o
}

func isPrintableASCII(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}

// remoteErr converts a go-smtp *smtp.SMTPError in err into a *sluice.Reply.
func remoteErr(err error) error {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return err
	}
	return &sluice.Reply{Code: se.Code, Enhanced: sluice.EnhancedCode(se.EnhancedCode), Message: se.Message}
}

// protoErr converts a *textproto.Error (a reply read by the session
// itself) into a *sluice.Reply.
func protoErr(err error) error {
	var te *textproto.Error
	if !errors.As(err, &te) {
		return err
	}
	return parseReply(te.Code, te.Msg)
}

// parseReply builds a Reply from a reply's text, which may start with an
// enhanced code. As in go-smtp, the enhanced code that RFC 2034 repeats
// on every line of a multi-line reply is kept only once.
func parseReply(code int, text string) *sluice.Reply {
	r := &sluice.Reply{Code: code, Message: text}
	if first, rest, ok := strings.Cut(text, " "); ok {
		if ec, err := sluice.ParseEnhancedCode(first); err == nil {
			r.Enhanced, r.Message = ec, strings.ReplaceAll(rest, "\n"+first+" ", "\n")
		}
	}
	return r
}

// greetedConn is a net.Conn that first yields a canned greeting.
type greetedConn struct {
	net.Conn
	pending []byte
}

func (g *greetedConn) Read(p []byte) (int, error) {
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	return g.Conn.Read(p)
}

// copyBufs hold the buffers that bodies are copied through on their way
// to the next hop. io.Copy would allocate 32 KiB for every message (neither
// side has ReadFrom or WriteTo): in the relay benchmark that was 56% of
// the bytes sluice allocated.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// errReader remembers the error of its reader other than io.EOF, so a
// failed copy can tell a damaged spool from a failed connection.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// deadlineWriter bounds each write of the message body, and the whole
// body's transfer when end is set (the DataRate watchdog).
type deadlineWriter struct {
	w       io.Writer
	conn    net.Conn
	timeout time.Duration
	end     time.Time // zero: no bound on the whole transfer
	rate    int       // bytes per second that end allows for
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	deadline := time.Now().Add(d.timeout)
	watchdog := !d.end.IsZero() && d.end.Before(deadline)
	if watchdog {
		deadline = d.end
	}
	d.conn.SetWriteDeadline(deadline)
	n, err := d.w.Write(p)
	var ne net.Error
	if watchdog && errors.As(err, &ne) && ne.Timeout() {
		err = fmt.Errorf("body transfer slower than %d bytes/s: %w", d.rate, err)
	}
	return n, err
}
