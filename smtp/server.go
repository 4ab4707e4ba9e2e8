package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

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

// HoldEnqueuer is an optional capability of an [Enqueuer]: EnqueueHeld
// stores a message that must wait for an operator (a filter quarantined
// it), held from the same durable write that stores it, so no crash or
// worker can deliver it first. *queue.Queue implements it. The server
// refuses a quarantined message with 451 4.3.0 when its Enqueuer lacks
// it, rather than deliver it unreviewed.
type HoldEnqueuer interface {
	EnqueueHeld(ctx context.Context, env *sluice.Envelope, body io.Reader) (id string, err error)
}

// Pacer is an optional capability of an [Enqueuer]: Pace waits, at most
// max, while the queue receives mail faster than it delivers it, and
// returns how long it waited. The server calls it before it replies to
// MAIL (see [WithInFlowDelay]). *queue.Queue implements it.
type Pacer interface {
	Pace(ctx context.Context, max time.Duration) time.Duration
}

// Server is an SMTP acceptor: it receives mail from clients, applies the
// relay policy and limits, runs the pre-queue filters and hands each
// message to an [Enqueuer]. Its lifecycle is that of net/http's Server:
// Serve, ListenAndServe, Shutdown (graceful) and Close (immediate).
type Server struct {
	cfg     config
	q       Enqueuer
	pacer   Pacer // q, if it is one and the in-flow delay is on; else nil
	log     *slog.Logger
	metrics *metrics
	local   map[string]bool // the local domains, lower-cased
	gate    *gate
	clients *clients
	screen  *screen      // nil: no DNSBL screening
	cert    *certificate // nil without WithCertificate
	tls     *tls.Config  // nil without a certificate

	// ctx is the parent of every session's context; Close cancels it, so
	// an Enqueue or filter still running is abandoned.
	ctx    context.Context
	cancel context.CancelFunc

	shutdown atomic.Bool // set by Shutdown and Close: no new connections or sessions
	closing  atomic.Bool // set by Close: end sessions without a reply

	mu        sync.Mutex // guards listeners, conns and drained
	listeners map[*listener]struct{}
	conns     map[*conn]struct{}
	drained   chan struct{} // closed when conns becomes empty after Shutdown
	open      atomic.Int64  // len(conns), read without the lock

	wg sync.WaitGroup // the goroutines admitting connections
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
	log := cfg.logger.With(slog.String("component", "smtp"))
	s := &Server{
		cfg:       cfg,
		q:         q,
		log:       log,
		metrics:   m,
		local:     make(map[string]bool, len(cfg.localDomains)),
		gate:      newGate(cfg.gauges, cfg.gateInterval, log),
		listeners: make(map[*listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
	s.clients = newClients(&s.cfg)
	if p, ok := q.(Pacer); ok && cfg.inFlowDelay > 0 {
		s.pacer = p
	}
	if len(s.cfg.dnsbl.zones) > 0 {
		var err error
		if s.screen, err = newScreen(s.cfg.dnsbl, s.log); err != nil {
			return nil, err
		}
	}
	for _, d := range cfg.localDomains {
		s.local[d] = true
	}
	if cfg.certFile != "" {
		s.cert = &certificate{certFile: cfg.certFile, keyFile: cfg.keyFile}
		if err := s.cert.load(); err != nil {
			return nil, err
		}
	}
	s.tls = newTLSConfig(&s.cfg, s.cert)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// newProtocol configures the go-smtp server that speaks the protocol on
// one listener.
func (s *Server) newProtocol(kind Kind) *gosmtp.Server {
	p := gosmtp.NewServer(backend{s, kind})
	p.Domain = s.cfg.hostname
	p.MaxMessageBytes = s.cfg.maxMessageBytes
	p.MaxRecipients = s.cfg.maxRecipients
	// go-smtp's limit on raw lines, commands and data alike, closes the
	// connection; it is kept above ours on message lines, which gets a
	// proper reply (strictReader).
	p.MaxLineLength = max(2000, s.cfg.maxLineLength+1000)
	// Not zero, so go-smtp sets a read deadline before each command; conn
	// replaces it with ours.
	p.ReadTimeout = s.cfg.commandTimeout
	p.WriteTimeout = s.cfg.writeTimeout
	p.EnableSMTPUTF8 = s.cfg.smtputf8
	p.EnableDSN = true
	p.TLSConfig = s.tls
	p.ErrorLog = errorLog{s.log}
	return p
}

// Serve accepts connections on l as a [KindSMTP] listener (port 25) until
// Shutdown or Close, then returns ErrServerClosed. Serve closes l.
func (s *Server) Serve(l net.Listener) error { return s.ServeKind(l, KindSMTP) }

// ServeKind accepts connections on l as a listener of the given kind until
// Shutdown or Close, then returns ErrServerClosed. A server may serve
// several listeners at once. Submission kinds need [WithCertificate] (or
// [WithTLSConfig]) and [WithAuthenticator]. ServeKind closes l.
func (s *Server) ServeKind(l net.Listener, kind Kind) error {
	if err := s.checkKind(kind); err != nil {
		l.Close()
		return err
	}
	tl := &listener{Listener: l, srv: s, kind: kind, handoff: make(chan net.Conn), done: make(chan struct{})}
	s.mu.Lock()
	if s.shutdown.Load() {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[tl] = struct{}{}
	s.mu.Unlock()

	proto := s.newProtocol(kind)
	protoDone := make(chan struct{})
	go func() {
		defer close(protoDone)
		proto.Serve(tl)
	}()
	err := tl.acceptLoop()
	tl.stop()
	<-protoDone
	s.removeListener(tl)
	l.Close()
	if s.shutdown.Load() {
		return ErrServerClosed
	}
	return fmt.Errorf("smtp: serve %s: %w", l.Addr(), err)
}

func (s *Server) checkKind(kind Kind) error {
	switch kind {
	case KindSMTP:
		return nil
	case KindSubmission, KindSubmissions:
		if s.tls == nil || s.cfg.auth == nil {
			return fmt.Errorf("smtp: a %s listener needs a certificate and an authenticator", kind)
		}
		return nil
	}
	return fmt.Errorf("smtp: unknown listener kind %d", int(kind))
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

// stressed reports whether enough connections are open to cut timeouts.
func (s *Server) stressed() bool { return s.open.Load() >= int64(s.cfg.stressAt) }

// fromProxy reports whether a connection from addr must start with a
// PROXY header.
func (s *Server) fromProxy(addr netip.Addr) bool {
	for _, p := range s.cfg.proxyNetworks {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Close closes the listeners and every connection at once, and cancels
// the sessions' work in progress (a message being queued is not
// acknowledged). Close is idempotent.
func (s *Server) Close() error {
	s.closing.Store(true)
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

// Results of addConn.
const (
	addOK     = iota
	addFull   // at the connection cap
	addClosed // shutting down
)

// addConn tracks c, unless the server is shutting down or at its
// connection cap.
func (s *Server) addConn(c *conn) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown.Load() {
		return addClosed
	}
	if len(s.conns) >= s.cfg.maxConns {
		return addFull
	}
	s.conns[c] = struct{}{}
	s.open.Store(int64(len(s.conns)))
	s.metrics.connOpened()
	return addOK
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	s.open.Store(int64(len(s.conns)))
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
