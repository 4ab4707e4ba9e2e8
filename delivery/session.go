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
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// tlsFailure marks a failed STARTTLS handshake: the connection is gone and
// the same address may be tried again without TLS.
type tlsFailure struct{ err error }

func (e *tlsFailure) Error() string { return "TLS handshake: " + e.err.Error() }
func (e *tlsFailure) Unwrap() error { return e.err }

// session is one SMTP connection to one next-hop address.
type session struct {
	a    *Agent
	h    hop
	conn net.Conn
	c    *smtp.Client
	tls  bool
}

// session delivers msg to rcpts through h. It records final replies in
// rcpts; a non-nil error is a connection-level failure after which the
// recipients without a final reply should be tried at the next address.
func (a *Agent) session(ctx context.Context, msg *queue.Message, h hop, rcpts []*rcptState, useTLS bool) error {
	s := &session{a: a, h: h}
	if err := s.open(ctx, useTLS); err != nil {
		return err
	}
	defer s.conn.Close()
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()
	for _, r := range rcpts {
		r.relay, r.ip, r.tls = h.name, h.addr.String(), s.tls
	}
	err := s.transaction(ctx, msg, rcpts)
	if err == nil {
		s.conn.SetDeadline(time.Now().Add(a.cfg.timeouts.Command))
		_ = s.c.Quit()
	}
	return err
}

// open dials, reads the greeting, says EHLO and starts TLS when offered.
func (s *session) open(ctx context.Context, useTLS bool) error {
	t := s.a.cfg.timeouts
	dctx, cancel := context.WithTimeout(ctx, t.Connect)
	conn, err := s.a.cfg.dial(dctx, "tcp", s.h.addr.String())
	cancel()
	if err != nil {
		return fmt.Errorf("connection to %s failed: %w", s.h, err)
	}
	s.conn = conn
	// Until the transaction starts, ctx cancellation closes conn here.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	s.c = s.newClient(conn, t.Greeting)
	if err := s.c.Hello(s.a.cfg.hostname); err != nil {
		conn.Close()
		return fmt.Errorf("%s greeting or EHLO: %w", s.h, remoteErr(err))
	}
	s.c.CommandTimeout = t.Command
	if ok, _ := s.c.Extension("STARTTLS"); !ok || !useTLS {
		return nil
	}
	tconn, err := s.startTLS(ctx)
	var tf *tlsFailure
	switch {
	case errors.As(err, &tf):
		conn.Close()
		return fmt.Errorf("%s: %w", s.h, err)
	case err != nil: // STARTTLS refused: go on in plain text on this connection
		s.a.log.DebugContext(ctx, "STARTTLS refused", "relay", s.h.name, "ip", s.h.addr.String(), "err", err)
		return nil
	}
	s.conn, s.tls = tconn, true
	s.c = s.newClient(tconn, t.Command)
	if err := s.c.Hello(s.a.cfg.hostname); err != nil {
		tconn.Close()
		return fmt.Errorf("%s EHLO after STARTTLS: %w", s.h, remoteErr(err))
	}
	return nil
}

func (s *session) newClient(conn net.Conn, timeout time.Duration) *smtp.Client {
	c := smtp.NewClient(conn)
	c.CommandTimeout = timeout
	c.SubmissionTimeout = s.a.cfg.timeouts.Data
	return c
}

// startTLS sends STARTTLS on the raw connection and performs the
// handshake. go-smtp v0.25 has no client STARTTLS after a custom EHLO, so
// the command is written here; the go-smtp client, which has nothing
// buffered after the EHLO reply, is then replaced by one on the TLS
// connection, which discards anything a server may have injected before
// the handshake (RFC 3207 section 6). A *tlsFailure means the connection
// is unusable.
func (s *session) startTLS(ctx context.Context) (net.Conn, error) {
	conn := s.conn
	conn.SetDeadline(time.Now().Add(s.a.cfg.timeouts.Command))
	defer conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(conn, "STARTTLS\r\n"); err != nil {
		return nil, &tlsFailure{err}
	}
	if _, _, err := textproto.NewReader(bufio.NewReader(conn)).ReadResponse(220); err != nil {
		var te *textproto.Error
		if errors.As(err, &te) {
			return nil, err
		}
		return nil, &tlsFailure{err}
	}
	cfg := s.a.cfg.tls.Clone()
	if cfg.ServerName == "" && !strings.HasPrefix(s.h.name, "[") && net.ParseIP(s.h.name) == nil {
		cfg.ServerName = s.h.name
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, &tlsFailure{err}
	}
	// The new client expects a greeting; the server sends none after
	// STARTTLS, so the session supplies one.
	return &greetedConn{Conn: tc, pending: []byte("220 " + s.h.name + " ESMTP (after STARTTLS)\r\n")}, nil
}

// transaction runs MAIL, RCPT and DATA for rcpts.
func (s *session) transaction(ctx context.Context, msg *queue.Message, rcpts []*rcptState) error {
	env := msg.Envelope
	if ok, _ := s.c.Extension("SMTPUTF8"); env.SMTPUTF8 && !ok {
		finishAll(rcpts, sluice.NewReply(553, sluice.EnhancedCode{5, 6, 7},
			"next hop %s does not support SMTPUTF8, required by this message", s.h))
		return nil
	}
	if err := s.c.Mail(env.From, mailOptions(msg)); err != nil {
		return s.commandFailed("MAIL", err, rcpts)
	}
	var accepted []*rcptState
	for _, r := range rcpts {
		err := s.c.Rcpt(r.rcpt.Address, rcptOptions(r.rcpt))
		if err == nil {
			accepted = append(accepted, r)
			continue
		}
		reply, ok := sluice.ReplyOf(remoteErr(err))
		if !ok {
			return fmt.Errorf("%s RCPT: %w", s.h, err)
		}
		r.finish(reply)
	}
	if len(accepted) == 0 {
		return nil
	}
	return s.data(ctx, msg, accepted)
}

// commandFailed handles a failed MAIL: a 5xx bounces every recipient of
// the session, anything else moves them to the next address.
func (s *session) commandFailed(cmd string, err error, rcpts []*rcptState) error {
	err = remoteErr(err)
	if r, ok := sluice.ReplyOf(err); ok && sluice.Classify(r) == sluice.OutcomeBounced {
		finishAll(rcpts, r)
		return nil
	}
	return fmt.Errorf("%s %s: %w", s.h, cmd, err)
}

// data sends the body to the accepted recipients, streaming it from the
// spool, and records the final reply for all of them.
func (s *session) data(ctx context.Context, msg *queue.Message, accepted []*rcptState) error {
	w, err := s.c.Data()
	if err != nil {
		err = remoteErr(err)
		if r, ok := sluice.ReplyOf(err); ok {
			finishAll(accepted, r)
			return nil
		}
		return fmt.Errorf("%s DATA: %w", s.h, err)
	}
	body, err := msg.Open()
	if err != nil {
		s.conn.Close() // abort: no final dot
		finishAll(accepted, sluice.NewReply(451, sluice.EnhancedCode{4, 3, 0}, "cannot open queued message: %v", err))
		return nil
	}
	defer body.Close()
	src := &errReader{r: body}
	dst := &deadlineWriter{w: w, conn: s.conn, timeout: s.a.cfg.timeouts.Command}
	if _, err := io.Copy(dst, src); err != nil {
		s.conn.Close() // abort without the final dot, so nothing is delivered
		if src.err != nil {
			s.a.log.ErrorContext(ctx, "queued message unreadable", "queue_id", msg.Envelope.ID, "err", src.err)
			finishAll(accepted, sluice.NewReply(451, sluice.EnhancedCode{4, 3, 0}, "cannot read queued message: %v", src.err))
			return nil
		}
		return fmt.Errorf("%s sending message: %w", s.h, err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		err = remoteErr(err)
		if r, ok := sluice.ReplyOf(err); ok {
			finishAll(accepted, r)
			return nil
		}
		// The next hop may have the message already: retry later rather
		// than at another address now.
		finishAll(accepted, sluice.NewReply(451, sluice.EnhancedCode{4, 4, 2},
			"%s: no reply after end of data: %v", s.h, err))
		return nil
	}
	finishAll(accepted, parseReply(250, resp.StatusText))
	return nil
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

// parseReply builds a Reply from a positive reply's text, which go-smtp
// returns with the enhanced code still in front.
func parseReply(code int, text string) *sluice.Reply {
	r := &sluice.Reply{Code: code, Message: text}
	if first, rest, ok := strings.Cut(text, " "); ok {
		if ec, err := sluice.ParseEnhancedCode(first); err == nil {
			r.Enhanced, r.Message = ec, rest
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

// deadlineWriter bounds each write of the message body.
type deadlineWriter struct {
	w       io.Writer
	conn    net.Conn
	timeout time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.w.Write(p)
}
