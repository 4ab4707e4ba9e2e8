package smtp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strings"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

// backend creates a session for each client that says HELO or EHLO.
type backend struct {
	srv  *Server
	kind Kind
}

func (b backend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	s := b.srv
	if s.shutdown.Load() {
		return nil, toSMTPError(replyShutdown)
	}
	tc := connOf(c.Conn())
	if tc == nil {
		return nil, toSMTPError(replyPanic) // not reached: every connection is ours
	}
	tc.setOuter(c.Conn())
	// The patched go-smtp (third_party/go-smtp) buffers replies and can
	// flush them; upstream go-smtp, which a program importing sluice gets
	// without the replace, writes each reply at once and has no method.
	if f, ok := any(c).(interface{ FlushReplies() error }); ok {
		tc.flushReplies = f.FlushReplies
	}
	_, isTLS := c.TLSConnectionState()
	ctx, cancel := context.WithCancel(s.ctx)
	return &session{
		srv:     s,
		kind:    b.kind,
		c:       c,
		tc:      tc,
		addr:    tc.remote,
		trusted: tc.trusted,
		tls:     isTLS,
		ctx:     ctx,
		cancel:  cancel,
		log:     s.log.With(slog.String("client", tc.remote.Addr().String()), slog.String("listener", b.kind.String())),
	}, nil
}

// session is one SMTP session: the commands of a client between HELO/EHLO
// and the end of the connection (or STARTTLS, which starts a new one).
// go-smtp calls its methods from the connection's goroutine, one at a time.
type session struct {
	srv      *Server
	kind     Kind
	c        *gosmtp.Conn
	tc       *conn
	addr     netip.AddrPort
	trusted  bool // the client is in the trusted networks
	tls      bool // the session is encrypted
	authUser string
	// authOpen is set while an AUTH exchange that clients.authBegin let
	// begin has not ended (authEnd).
	authOpen bool
	log      *slog.Logger

	// ctx is cancelled when the session ends or the server closes.
	ctx    context.Context
	cancel context.CancelFunc

	env *sluice.Envelope // the transaction in progress; nil before MAIL

	// The transaction's filter state, from MAIL to the end of DATA: the
	// budget's deadline (tx), the headers the filters asked for, and
	// whether one of them asked to discard the message.
	tx        context.Context
	txCancel  context.CancelFunc
	txHeaders []filter.Header
	txDiscard bool
	// txQuarantine: a filter quarantined the transaction; the message is
	// queued held.
	txQuarantine bool
}

var _ gosmtp.Session = (*session)(nil)

// Mail starts a transaction with the reverse-path from ("" for the null
// sender).
func (s *session) Mail(from string, opts *gosmtp.MailOptions) (err error) {
	defer s.recoverPanic(&err)
	if opts == nil {
		opts = &gosmtp.MailOptions{}
	}
	s.endAuth(false) // an AUTH exchange the client abandoned, if any
	if s.env != nil {
		// go-smtp lets MAIL restart a transaction in progress; a second
		// MAIL refused by a filter would then have cleared the first's
		// filter verdicts (quarantine, discard) and kept its recipients.
		return s.reject("transaction", replyNestedMail, slog.String("from", from))
	}
	if reply := s.mailAllowed(); reply != nil {
		return s.reject("transaction", reply, slog.String("from", from))
	}
	s.pace()
	if from != "" {
		if _, perr := sluice.ParseMailbox(from, opts.UTF8); perr != nil {
			return s.reject("sender", replyBadSender, slog.String("from", from))
		}
	}
	env := &sluice.Envelope{
		From:     from,
		SMTPUTF8: opts.UTF8,
		Body:     string(opts.Body),
		EnvID:    opts.EnvelopeID,
		Ret:      string(opts.Return),
	}
	s.beginTx()
	if reply := s.runFilters(filter.StageMail, env); reply != nil {
		s.endTx()
		return s.reject("sender", reply, slog.String("from", from))
	}
	s.env = env
	s.tc.setState(stateMail)
	return nil
}

// beginTx starts a transaction's filter budget and state.
func (s *session) beginTx() {
	s.endTx()
	s.tx, s.txCancel = context.WithTimeout(s.ctx, s.srv.cfg.filterBudget)
	s.txHeaders = append([]filter.Header(nil), s.tc.connectHeaders...)
	s.txDiscard = false
	s.txQuarantine = s.tc.connectQuarantine
}

func (s *session) endTx() {
	if s.txCancel != nil {
		s.txCancel()
	}
	s.tx, s.txCancel, s.txHeaders, s.txDiscard, s.txQuarantine = nil, nil, nil, false, false
}

// runFilters runs the filters of stage st (MAIL or RCPT) on env, within
// the transaction's budget, and returns the refusal, or nil. Headers
// accumulate for the message; a Discard marks the whole transaction.
func (s *session) runFilters(st filter.Stage, env *sluice.Envelope) *sluice.Reply {
	if !s.srv.cfg.filters.Has(st) {
		return nil
	}
	env = env.Clone()
	env.Client = s.clientInfo()
	v := s.srv.cfg.filters.RunStage(s.tx, st, &filter.Message{Envelope: env})
	s.txHeaders = append(s.txHeaders, v.Headers...)
	switch v.Action {
	case filter.Reject, filter.Tempfail:
		return v.Reply
	case filter.Discard:
		s.txDiscard = true
	case filter.Quarantine:
		s.txQuarantine = true
	}
	return nil
}

// clientInfo describes the client for an envelope.
func (s *session) clientInfo() sluice.ClientInfo {
	ci := sluice.ClientInfo{Addr: s.addr, Helo: s.c.Hostname(), AuthUser: s.authUser}
	_, ci.TLS = s.c.TLSConnectionState()
	return ci
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
	if !s.mayRelay() && !s.srv.isLocal(sluice.Domain(to)) {
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
	if s.srv.cfg.filters.Has(filter.StageRcpt) { // the candidate envelope costs a copy
		cand := s.env.Clone()
		cand.Recipients = append(cand.Recipients, r)
		if reply := s.runFilters(filter.StageRcpt, cand); reply != nil {
			return s.reject("recipient", reply, slog.String("from", s.env.From), slog.String("to", to))
		}
	}
	s.env.Recipients = append(s.env.Recipients, r)
	return nil
}

// Reset ends the transaction (RSET, a new EHLO, or the end of DATA).
func (s *session) Reset() {
	s.endTx()
	s.env = nil
	s.tc.setState(stateIdle)
}

// Logout ends the session.
func (s *session) Logout() error {
	s.endAuth(false)
	s.endTx()
	s.cancel()
	s.env = nil
	return nil
}

// mailAllowed checks that a transaction may start: TLS and AUTH on
// submission listeners, the health gate, the client's message rate. It
// returns the refusal, or nil.
func (s *session) mailAllowed() *sluice.Reply {
	if s.kind != KindSMTP {
		switch {
		case !s.tls:
			return replyTLSRequired
		case s.authUser == "":
			return replyAuthRequired
		}
	}
	if ok, why := s.srv.gate.open(s.ctx); !ok {
		s.log.Warn("transaction refused by the health gate", slog.String("gauge", why))
		return replyGateMail
	}
	if !s.srv.clients.message(s.addr.Addr(), s.trusted || s.authUser != "") {
		return replyMsgRate
	}
	return nil
}

// pace holds a new transaction back, up to the in-flow delay, while the
// queue receives mail faster than it delivers it.
func (s *session) pace() {
	if s.srv.pacer == nil {
		return
	}
	if d := s.srv.pacer.Pace(s.ctx, s.srv.cfg.inFlowDelay); d > 0 {
		s.srv.metrics.pacedFor(d)
	}
}

// mayRelay reports whether the client may send to any domain.
func (s *session) mayRelay() bool { return s.trusted || s.authUser != "" }

// reject logs a refused command and returns reply for go-smtp to send.
// Once the connection has had too many, it is closed after the reply.
func (s *session) reject(what string, reply *sluice.Reply, attrs ...slog.Attr) error {
	attrs = append(attrs, slog.String("reply", reply.Error()))
	s.log.LogAttrs(s.ctx, slog.LevelInfo, "rejected "+what, attrs...)
	return s.countError(reply)
}

// countError counts a refused command of the connection and returns reply
// for go-smtp to send, or, past the limit, sends it with 421 and closes.
func (s *session) countError(reply *sluice.Reply) error {
	s.tc.errors++
	if s.tc.errors >= s.srv.cfg.maxErrors {
		// go-smtp writes reply after the replies it holds for the
		// client's earlier commands (a pipelining client sends several
		// at once); the 421 follows before the next command is read.
		s.log.Info("connection closed: too many errors", slog.Int("errors", s.tc.errors))
		s.tc.closeAfterReply(replyTooManyErrors)
		return toSMTPError(reply)
	}
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

// closeWith writes replies and closes the connection at once, for when
// the session cannot go on: what the client sends next is not a command
// (the end of a message's data was never seen), or a method panicked. It
// returns the last reply as an error for go-smtp, whose write to the
// closed connection is dropped. The replies go straight to the connection,
// ahead of any that go-smtp still holds; in DATA there are none (go-smtp
// sends them before it reads the data), so only a panic or BDAT's chunks
// can lose one, and the 421 that closes tells the client to try again.
// countError's limit, where order matters, closes through closeAfterReply
// instead.
func (s *session) closeWith(replies ...*sluice.Reply) error {
	nc := s.c.Conn()
	writeReplies(nc, s.srv.cfg.writeTimeout, replies...)
	nc.Close()
	return toSMTPError(replies[len(replies)-1])
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

// AuthMechanisms offers PLAIN and LOGIN over TLS when an authenticator is
// configured, nothing otherwise.
func (s *session) AuthMechanisms() []string {
	if s.srv.cfg.auth == nil || !s.tls {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth starts a SASL exchange, unless the client has spent its budget of
// failed attempts.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.srv.cfg.auth == nil || !s.tls {
		return nil, gosmtp.ErrAuthUnsupported
	}
	if mech != sasl.Plain && mech != sasl.Login {
		return nil, gosmtp.ErrAuthUnknownMechanism // no exchange: nothing reserved
	}
	// One failure of the budget is reserved now, and spent only if the
	// credentials turn out wrong (authResult); an exchange that ends
	// otherwise gives it back (endingServer). One the client abandoned
	// ("*"), which go-smtp ends without asking the mechanism, gives it
	// back at the session's next command (here, Mail) or its end.
	s.endAuth(false)
	if !s.srv.clients.authBegin(s.addr.Addr()) {
		s.log.Warn("AUTH refused: too many failures from the client")
		return nil, s.countError(replyAuthThrottled)
	}
	s.authOpen = true
	if mech == sasl.Plain {
		return endingServer{s, sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return s.authResult(username, ErrBadCredentials)
			}
			return s.authResult(username, s.srv.cfg.auth.Authenticate(s.ctx, username, password))
		})}, nil
	}
	return endingServer{s, &loginServer{check: func(username, password string) error {
		return s.authResult(username, s.srv.cfg.auth.Authenticate(s.ctx, username, password))
	}}}, nil
}

// endingServer ends the session's AUTH exchange when its mechanism is
// done or fails before the credentials were checked (a malformed
// response): the failure it reserved is given back (after authResult,
// which ended it already, this does nothing).
type endingServer struct {
	s *session
	sasl.Server
}

func (e endingServer) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := e.Server.Next(response)
	if done || err != nil {
		e.s.endAuth(false)
	}
	return challenge, done, err
}

// authResult logs the outcome of AUTH (never the password) and returns the
// error for go-smtp to send.
func (s *session) authResult(username string, err error) error {
	s.endAuth(errors.Is(err, ErrBadCredentials))
	switch {
	case err == nil:
		s.authUser = username
		s.log.Info("authenticated", slog.String("user", username))
		return nil
	case errors.Is(err, ErrBadCredentials):
		s.log.Warn("authentication failed", slog.String("user", username))
		return s.countError(replyAuthFailed)
	default:
		s.log.Error("authentication unavailable", slog.String("user", username), slog.Any("error", err))
		return toSMTPError(replyAuthTemp)
	}
}

// endAuth ends the AUTH exchange in progress, if any; failed spends the
// failure it reserved.
func (s *session) endAuth(failed bool) {
	if s.authOpen {
		s.authOpen = false
		s.srv.clients.authEnd(s.addr.Addr(), failed)
	}
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
