package smtp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
)

// backend creates a session for each client that says HELO or EHLO.
type backend struct{ srv *Server }

func (b backend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	s := b.srv
	if s.shutdown.Load() {
		return nil, toSMTPError(replyShutdown)
	}
	addr := remoteAddr(c.Conn())
	ctx, cancel := context.WithCancel(s.ctx)
	return &session{
		srv:     s,
		c:       c,
		tc:      connOf(c.Conn()),
		addr:    addr,
		trusted: s.trusted(addr.Addr()),
		ctx:     ctx,
		cancel:  cancel,
		log:     s.log.With(slog.String("client", addr.Addr().String())),
	}, nil
}

// session is one SMTP session: the commands of a client between HELO/EHLO
// and the end of the connection (or STARTTLS, which starts a new one).
// go-smtp calls its methods from the connection's goroutine, one at a time.
type session struct {
	srv     *Server
	c       *gosmtp.Conn
	tc      *conn // nil if the connection is not one of ours
	addr    netip.AddrPort
	trusted bool // the client may relay to any domain
	log     *slog.Logger

	// ctx is cancelled when the session ends or the server closes.
	ctx    context.Context
	cancel context.CancelFunc

	env *sluice.Envelope // the transaction in progress; nil before MAIL
}

var _ gosmtp.Session = (*session)(nil)

// Mail starts a transaction with the reverse-path from ("" for the null
// sender).
func (s *session) Mail(from string, opts *gosmtp.MailOptions) (err error) {
	defer s.recoverPanic(&err)
	if opts == nil {
		opts = &gosmtp.MailOptions{}
	}
	if from != "" {
		if _, perr := sluice.ParseMailbox(from, opts.UTF8); perr != nil {
			return s.reject("sender", replyBadSender, slog.String("from", from))
		}
	}
	s.env = &sluice.Envelope{
		From:     from,
		SMTPUTF8: opts.UTF8,
		Body:     string(opts.Body),
		EnvID:    opts.EnvelopeID,
		Ret:      string(opts.Return),
	}
	s.tc.setState(stateMail)
	return nil
}

// Rcpt adds a recipient if its syntax is valid and the relay policy
// allows it. go-smtp enforces the recipient limit before calling Rcpt.
func (s *session) Rcpt(to string, opts *gosmtp.RcptOptions) (err error) {
	defer s.recoverPanic(&err)
	if s.env == nil {
		return toSMTPError(replyNoSender)
	}
	if _, perr := sluice.ParseMailbox(to, s.env.SMTPUTF8); perr != nil {
		return s.reject("recipient", replyBadRecipient, slog.String("to", to))
	}
	if !s.trusted && !s.srv.isLocal(sluice.Domain(to)) {
		return s.reject("relay", replyRelayDenied(to), slog.String("from", s.env.From), slog.String("to", to))
	}
	r := sluice.Recipient{Address: to}
	if opts != nil {
		for _, n := range opts.Notify {
			r.Notify = append(r.Notify, string(n))
		}
		if opts.OriginalRecipientType != "" {
			r.ORcpt = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	s.env.Recipients = append(s.env.Recipients, r)
	return nil
}

// Reset ends the transaction (RSET, a new EHLO, or the end of DATA).
func (s *session) Reset() {
	s.env = nil
	s.tc.setState(stateIdle)
}

// Logout ends the session.
func (s *session) Logout() error {
	s.cancel()
	s.env = nil
	return nil
}

// reject logs a refused command and returns reply for go-smtp to send.
func (s *session) reject(what string, reply *sluice.Reply, attrs ...slog.Attr) error {
	attrs = append(attrs, slog.String("reply", reply.Error()))
	s.log.LogAttrs(s.ctx, slog.LevelInfo, "rejected "+what, attrs...)
	return toSMTPError(reply)
}

// recoverPanic turns a panic in a session method into "421 4.3.0" and
// closes the connection, so a bug costs one session, not the process.
// The reply is written directly: go-smtp would answer 421 4.0.0.
func (s *session) recoverPanic(err *error) {
	p := recover()
	if p == nil {
		return
	}
	s.log.Error("panic in SMTP session", slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
	*err = s.closeWith(replyPanic)
}

// closeWith writes reply and closes the connection, for when the session
// cannot go on (go-smtp would keep reading commands). It returns reply as
// an error for go-smtp, whose write to the closed connection is dropped.
func (s *session) closeWith(reply *sluice.Reply) error {
	nc := s.c.Conn()
	nc.SetWriteDeadline(time.Now().Add(s.srv.cfg.writeTimeout))
	io.WriteString(nc, reply.Error()+"\r\n")
	nc.Close()
	return toSMTPError(reply)
}

// trusted reports whether a client at addr may relay to any domain.
func (s *Server) trusted(addr netip.Addr) bool {
	for _, p := range s.cfg.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// isLocal reports whether domain (lower-cased) is one of the local domains.
func (s *Server) isLocal(domain string) bool {
	return s.local[strings.ToLower(domain)]
}

// remoteAddr is the client's address and port, or the zero value if the
// connection is not IP.
func remoteAddr(nc net.Conn) netip.AddrPort {
	var ap netip.AddrPort
	switch a := nc.RemoteAddr().(type) {
	case nil:
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
