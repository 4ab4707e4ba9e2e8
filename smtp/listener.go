package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

// Kind is the role of a listener.
type Kind int

const (
	// KindSMTP is a mail exchanger's listener (port 25): STARTTLS is
	// offered when a certificate is configured, and AUTH after it when an
	// authenticator is.
	KindSMTP Kind = iota
	// KindSubmission is a submission listener (port 587, RFC 6409):
	// STARTTLS, then AUTH, are required before MAIL.
	KindSubmission
	// KindSubmissions is a submission listener with implicit TLS (port
	// 465, RFC 8314): the TLS handshake comes first, AUTH is required
	// before MAIL.
	KindSubmissions
)

// String returns "smtp", "submission" or "submissions".
func (k Kind) String() string {
	switch k {
	case KindSMTP:
		return "smtp"
	case KindSubmission:
		return "submission"
	case KindSubmissions:
		return "submissions"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// listener is one listening socket: an accept loop of our own that admits
// each connection (connection cap, PROXY header, TLS handshake, per-client
// limits, health gate) and hands the admitted ones to go-smtp through
// Accept.
type listener struct {
	net.Listener
	srv  *Server
	kind Kind

	handoff   chan net.Conn // admitted connections, for go-smtp
	done      chan struct{} // closed when the accept loop ends
	closeDone sync.Once
}

// Accept gives go-smtp the next admitted connection.
func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.handoff:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) stop() { l.closeDone.Do(func() { close(l.done) }) }

// acceptLoop accepts connections until the listener is closed.
func (l *listener) acceptLoop() error {
	var delay time.Duration
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				l.srv.log.Warn("accept failed; retrying", slog.Any("error", err), slog.Duration("delay", delay))
				select {
				case <-time.After(delay):
				case <-l.srv.ctx.Done():
					return err
				}
				continue
			}
			return err
		}
		delay = 0
		c := newConn(nc, l.srv, l.kind)
		switch l.srv.addConn(c) {
		case addClosed:
			nc.Close()
			return net.ErrClosed
		case addFull:
			l.refuseFull(c)
			continue
		}
		l.srv.wg.Add(1)
		go l.admit(c)
	}
}

// refuseFull answers a connection over the connection cap and closes it,
// in the accept loop so that the refused connections never pile up.
func (l *listener) refuseFull(c *conn) {
	l.srv.log.Warn("connection refused: too many connections",
		slog.String("client", c.remote.Addr().String()), slog.Int("max", l.srv.cfg.maxConns))
	l.srv.metrics.refused(reasonConnections)
	if l.kind != KindSubmissions {
		writeReplies(c.Conn, 100*time.Millisecond, replyTooManyConns)
	}
	c.Conn.Close()
}

// admit prepares a connection in its own goroutine and hands it to go-smtp,
// or refuses it.
func (l *listener) admit(c *conn) {
	defer l.srv.wg.Done()
	s := l.srv
	dropped := func(err error) {
		s.log.Info("connection dropped", slog.String("client", c.remote.Addr().String()),
			slog.String("listener", l.kind.String()), slog.Any("error", err))
		c.Close()
	}
	if err := l.readProxy(c); err != nil {
		dropped(err)
		return
	}
	// The client's own limits (connections, connection rate) come before
	// an implicit-TLS listener's handshake, which costs CPU and holds a
	// place of the connection cap for up to its timeout: one client must
	// not spend either beyond its limits. Refused there, it is closed
	// without a reply, which could only go over TLS.
	refused := func(reply *sluice.Reply, reason string, answer bool) {
		s.log.Info("connection refused", slog.String("client", c.remote.Addr().String()),
			slog.String("listener", l.kind.String()), slog.String("reply", reply.Error()))
		s.metrics.refused(reason)
		if answer {
			c.refuse(reply)
		} else {
			c.Close()
		}
	}
	release, reply := s.clients.connect(c.remote.Addr(), c.trusted)
	if reply != nil {
		refused(reply, reasonClient, l.kind != KindSubmissions)
		return
	}
	c.setRelease(release)
	nc, err := l.handshake(c)
	if err != nil {
		dropped(err)
		return
	}
	if reply, reason := s.admission(c); reply != nil {
		refused(reply, reason, true)
		return
	}
	select {
	case l.handoff <- nc:
	case <-l.done:
		c.Close()
	}
}

// readProxy reads the PROXY header of a connection from a load balancer,
// within the handshake timeout, and decides whether the client is trusted.
func (l *listener) readProxy(c *conn) error {
	s := l.srv
	if s.fromProxy(c.remote.Addr()) {
		c.Conn.SetReadDeadline(c.capped(time.Now().Add(s.cfg.handshakeTimeout)))
		h, err := readProxyHeader(c.Conn)
		if err != nil {
			return err
		}
		if h.local {
			// The proxy speaking for itself (a health check), or for a
			// client it could not name: never trusted to relay, even
			// when the proxy's own address is in the trusted networks
			// (a proxy on loopback).
			c.trusted = false
			return nil
		}
		c.remote = h.src
		c.remoteAddr = net.TCPAddrFromAddrPort(h.src)
	}
	c.trusted = s.trusted(c.remote.Addr())
	return nil
}

// handshake does the TLS handshake of an implicit-TLS listener, within
// the handshake timeout. It returns the connection to hand to go-smtp.
func (l *listener) handshake(c *conn) (net.Conn, error) {
	s := l.srv
	if l.kind != KindSubmissions {
		c.Conn.SetReadDeadline(time.Time{})
		return c, nil
	}
	tc := tls.Server(c, s.tls)
	d := c.capped(time.Now().Add(s.cfg.handshakeTimeout))
	c.setReadDeadline(d)
	c.Conn.SetWriteDeadline(d)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("smtp: TLS handshake: %w", err)
	}
	c.setReadDeadline(time.Time{})
	c.Conn.SetWriteDeadline(time.Time{})
	var outer net.Conn = tc
	c.outer.Store(&outer)
	// go-smtp sets deadlines once before its (finished) handshake.
	c.skipDeadline = 1
	return tc, nil
}

// greetingReply turns a filter's refusal into a reply that may replace
// the greeting: 554 for a permanent one, 421 for a temporary one (RFC 5321
// section 3.1), keeping the enhanced code and text.
func greetingReply(r *sluice.Reply) *sluice.Reply {
	code := 554
	if r.Temporary() {
		code = 421
	}
	return &sluice.Reply{Code: code, Enhanced: r.Enhanced, Message: r.Message}
}

// admission applies the health gate, the DNS blocklists and the connect
// filters to a new connection that the client's limits admitted (admit).
// It returns nil, or the reply refusing it and the reason for the metrics.
func (s *Server) admission(c *conn) (*sluice.Reply, string) {
	if ok, why := s.gate.open(s.ctx); !ok {
		s.log.Warn("connection refused by the health gate", slog.String("gauge", why))
		return replyGateSession, reasonGate
	}
	if s.screen != nil && !c.trusted && c.kind == KindSMTP {
		if reply := s.screen.check(s.ctx, c.remote.Addr()); reply != nil {
			return reply, reasonDNSBL
		}
	}
	if s.cfg.filters.Has(filter.StageConnect) {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.filterBudget)
		defer cancel()
		v := s.cfg.filters.RunStage(ctx, filter.StageConnect, &filter.Message{
			Envelope: &sluice.Envelope{Client: sluice.ClientInfo{Addr: c.remote}}})
		switch v.Action {
		case filter.Reject, filter.Tempfail:
			return greetingReply(v.Reply), reasonFilter
		}
		c.connectHeaders = v.Headers
		c.connectQuarantine = v.Action == filter.Quarantine
	}
	return nil, ""
}
