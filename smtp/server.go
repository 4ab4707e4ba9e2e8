package smtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
)

// ErrServerClosed is returned by [Server.Serve] and
// [Server.ListenAndServe] after [Server.Shutdown] or [Server.Close].
var ErrServerClosed = errors.New("smtp: server closed")

// Enqueuer is where the server hands accepted messages: in sluice, the
// queue. Enqueue reads body to the end and returns the queue id only once
// the message and its envelope are durable; the server answers 250 after
// that and not before. An error carrying a [*sluice.Reply] is sent to the
// client as it is; any other error becomes a generic 451 4.3.0.
type Enqueuer interface {
	Enqueue(ctx context.Context, env *sluice.Envelope, body io.Reader) (id string, err error)
}

// Server is an SMTP acceptor: it receives mail from clients, applies the
// relay policy and limits, runs the pre-queue filters and hands each
// message to an [Enqueuer]. Its lifecycle is that of net/http's Server:
// Serve, ListenAndServe, Shutdown (graceful) and Close (immediate).
type Server struct {
	cfg     config
	q       Enqueuer
	log     *slog.Logger
	metrics *metrics
	proto   *gosmtp.Server
	local   map[string]bool // the local domains, lower-cased

	// ctx is the parent of every session's context; Close cancels it, so
	// an Enqueue or filter still running is abandoned.
	ctx    context.Context
	cancel context.CancelFunc

	shutdown atomic.Bool // set by Shutdown and Close: no new connections or sessions

	mu        sync.Mutex // guards listeners, conns and drained
	listeners map[*listener]struct{}
	conns     map[*conn]struct{}
	drained   chan struct{} // closed when conns becomes empty after Shutdown
}

// New returns a server that queues accepted mail with q. It validates the
// options and registers the metrics; it does not listen yet.
func New(q Enqueuer, opts ...Option) (*Server, error) {
	if q == nil {
		return nil, errors.New("smtp: nil Enqueuer")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		q:         q,
		log:       cfg.logger.With(slog.String("component", "smtp")),
		metrics:   m,
		local:     make(map[string]bool, len(cfg.localDomains)),
		listeners: make(map[*listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
	for _, d := range cfg.localDomains {
		s.local[d] = true
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.proto = s.newProtocol()
	return s, nil
}

// newProtocol configures the go-smtp server that speaks the protocol.
func (s *Server) newProtocol() *gosmtp.Server {
	p := gosmtp.NewServer(backend{s})
	p.Domain = s.cfg.hostname
	p.MaxMessageBytes = s.cfg.maxMessageBytes
	p.MaxRecipients = s.cfg.maxRecipients
	p.ReadTimeout = s.cfg.commandTimeout
	p.WriteTimeout = s.cfg.writeTimeout
	p.EnableSMTPUTF8 = s.cfg.smtputf8
	p.EnableDSN = true
	p.ErrorLog = errorLog{s.log}
	return p
}

// Serve accepts connections on l and serves each in its own goroutine
// until Shutdown or Close, then returns ErrServerClosed. Serve closes l.
func (s *Server) Serve(l net.Listener) error {
	tl := &listener{Listener: l, srv: s}
	s.mu.Lock()
	if s.shutdown.Load() {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[tl] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.removeListener(tl)
		l.Close()
	}()

	err := s.proto.Serve(tl)
	if s.shutdown.Load() {
		return ErrServerClosed
	}
	if err == nil {
		err = net.ErrClosed
	}
	return fmt.Errorf("smtp: serve %s: %w", l.Addr(), err)
}

// ListenAndServe listens on the TCP address addr and calls Serve.
func (s *Server) ListenAndServe(addr string) error {
	if s.shutdown.Load() {
		return ErrServerClosed
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("smtp: listen: %w", err)
	}
	return s.Serve(l)
}

// Shutdown stops accepting connections, lets transactions in progress
// finish, closes each connection as soon as it is between transactions
// (with 421), and returns when all are closed. If ctx ends first, Shutdown
// closes the remaining connections as Close does and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdown.Store(true)
	err := s.closeListeners()

	s.mu.Lock()
	if len(s.conns) == 0 {
		s.mu.Unlock()
		return err
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	drained := s.drained
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.wake()
	}
	select {
	case <-drained:
		return err
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close closes the listeners and every connection at once, and cancels
// the sessions' work in progress (a message being queued is not
// acknowledged). Close is idempotent.
func (s *Server) Close() error {
	s.shutdown.Store(true)
	err := s.closeListeners()
	// Cancel the sessions' work only after their connections are closed,
	// so no reply about it reaches a client.
	defer s.cancel()

	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return err
}

func (s *Server) closeListeners() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for l := range s.listeners {
		if cerr := l.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = fmt.Errorf("smtp: close listener: %w", cerr)
		}
		delete(s.listeners, l)
	}
	return err
}

func (s *Server) removeListener(l *listener) {
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
}

// addConn tracks c; it fails once the server is shutting down.
func (s *Server) addConn(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.metrics.connOpened()
	return true
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	s.metrics.connClosed()
	if len(s.conns) == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// errorLog adapts the slog logger to go-smtp's Logger, so the protocol
// library never writes to stderr.
type errorLog struct{ l *slog.Logger }

func (e errorLog) Printf(format string, v ...any) { e.l.Warn(fmt.Sprintf(format, v...)) }
func (e errorLog) Println(v ...any)               { e.l.Warn(fmt.Sprintln(v...)) }
