package smtp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

// Transaction states of a connection, kept for Shutdown (which closes a
// connection only between transactions), the DATA timeout and the count
// of commands outside transactions.
const (
	stateIdle  int32 = iota // no transaction: between commands or before MAIL
	stateMail               // MAIL accepted, collecting recipients
	stateData               // reading the message after DATA
	stateDrain              // Data returned; go-smtp drains what is left of the message
)

// conn is the server side of one client connection. It sits under
// go-smtp's Conn and under TLS, so it sees every read, and every call of
// go-smtp's to SetReadDeadline, which go-smtp makes before reading each
// command line: that is where the per-command deadlines and counts are
// applied.
type conn struct {
	net.Conn
	srv   *Server
	kind  Kind
	start time.Time // when the connection was accepted
	end   time.Time // start + the session timeout: no deadline goes beyond it
	state atomic.Int32

	// remote is the client's address: the peer's, or the one a PROXY
	// header gave. Set before go-smtp sees the connection.
	remote     netip.AddrPort
	remoteAddr net.Addr
	trusted    bool // the client is in the trusted networks
	// connectHeaders are the headers the connect-stage filters asked for,
	// added to every message of the connection. Set before go-smtp sees
	// the connection.
	connectHeaders []filter.Header
	// connectQuarantine: a connect-stage filter quarantined the client,
	// so every message of the connection is held.
	connectQuarantine bool

	// outer is the connection replies are written to: this one, or the
	// TLS connection over it. tlsStarting is set once go-smtp answered
	// STARTTLS: the outer connection is then unknown until the next EHLO.
	outer       atomic.Pointer[net.Conn]
	tlsStarting atomic.Bool

	mu           sync.Mutex // guards deadline, commands, idleCommands, skipDeadline
	deadline     time.Time  // the read deadline last set, not a wake-up
	commands     int        // command lines read (or about to be)
	idle         int        // commands outside a transaction since the last MAIL
	skipDeadline int        // SetReadDeadline calls of go-smtp that precede no command

	errors int // refused commands; touched only by the session's goroutine

	// flushReplies sends the replies go-smtp has buffered
	// (gosmtp.Conn.FlushReplies). The session sets it when it starts;
	// SetReadDeadline, which go-smtp calls on the connection's goroutine
	// before it reads a command, calls it before it writes a reply of
	// its own, so that its reply follows theirs (a pipelining client
	// pairs replies with its commands by their order).
	flushReplies func() error
	// closing holds the replies to send, after go-smtp's, when the
	// session asked to end the connection (closeAfterReply); go-smtp's
	// next command read sends them and closes.
	closing atomic.Pointer[[]*sluice.Reply]

	// yield is set around each read of the message data (strictReader)
	// so that Read returns errYield rather than wait (see setYield).
	yield atomic.Int32

	relMu   sync.Mutex // guards release and closed
	release func()     // frees the client's admission slot
	closed  bool

	closeOnce sync.Once
	closeErr  error
}

func newConn(nc net.Conn, s *Server, kind Kind) *conn {
	now := time.Now()
	c := &conn{Conn: nc, srv: s, kind: kind, start: now, end: now.Add(s.cfg.sessionTimeout)}
	c.remote = remoteAddr(nc)
	c.remoteAddr = nc.RemoteAddr()
	var outer net.Conn = c
	c.outer.Store(&outer)
	return c
}

// errDraining is what a read returns when the server is shutting down and
// the connection is between transactions. It is a timeout, so go-smtp
// answers "421 4.4.2" and closes the connection quietly.
var errDraining = drainError{}

type drainError struct{}

func (drainError) Error() string   { return "smtp: server shutting down" }
func (drainError) Timeout() bool   { return true }
func (drainError) Temporary() bool { return true }

func (c *conn) setState(s int32) {
	if c == nil {
		return
	}
	c.state.Store(s)
	if s == stateMail {
		c.mu.Lock()
		c.idle = 0
		c.mu.Unlock()
	}
}

func (c *conn) draining() bool {
	return c.srv.shutdown.Load() && c.state.Load() == stateIdle
}

// RemoteAddr is the client's address, after the PROXY header if any.
func (c *conn) RemoteAddr() net.Addr { return c.remoteAddr }

// setYield sets what the next reads do: the DATA reader (strictReader)
// reads what go-smtp has buffered with yieldNow set, so that go-smtp's
// reader, which fills the whole buffer it is given, returns at the end of
// what has arrived instead of waiting for more (a client may send no
// more: see strictReader); and only when nothing had arrived, with
// yieldAfterRead, one read that waits.
func (c *conn) setYield(m yieldMode) { c.yield.Store(int32(m)) }

// Read applies the DATA idle timeout and ends the session at the first
// read between transactions once the server is shutting down.
func (c *conn) Read(p []byte) (int, error) {
	switch yieldMode(c.yield.Load()) {
	case yieldNow:
		return 0, errYield
	case yieldAfterRead:
		c.yield.Store(int32(yieldNow))
	}
	for {
		if c.srv.closing.Load() {
			// Close, unlike Shutdown, ends sessions without a 421: a read
			// racing with it must not look like a drain.
			return 0, net.ErrClosed
		}
		if c.draining() {
			return 0, errDraining
		}
		if st := c.state.Load(); st == stateData || st == stateDrain {
			c.setReadDeadline(c.capped(time.Now().Add(c.srv.cfg.dataTimeout)))
		}
		n, err := c.Conn.Read(p)
		if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		if !c.woken() {
			c.timedOut()
			return n, err
		}
		// A wake-up from Shutdown, not a real timeout: restore the
		// deadline and read again unless the session should end now.
		c.mu.Lock()
		d := c.deadline
		c.mu.Unlock()
		if err := c.Conn.SetReadDeadline(d); err != nil {
			return 0, err
		}
	}
}

// Write notices go-smtp's reply to STARTTLS (a 220 after the greeting, on
// a connection not yet encrypted) and gives the handshake that follows
// its own deadline.
func (c *conn) Write(p []byte) (int, error) {
	if c.kind != KindSubmissions && !c.tlsStarting.Load() && bytes.HasPrefix(p, []byte("220 2.0.0 ")) {
		c.tlsStarting.Store(true)
		c.setReadDeadline(c.capped(time.Now().Add(c.srv.cfg.handshakeTimeout)))
	}
	return c.Conn.Write(p)
}

// timedOut ends a connection whose command did not arrive in time. go-smtp
// would answer 421 itself, but Go's textproto returns a partial line
// without the error, so a client sending a byte per timeout would never be
// timed out: the reply is sent and the connection closed here, and
// whatever go-smtp makes of the partial line goes nowhere. Timeouts in
// DATA are the session's to handle, and those before go-smtp's first
// command (PROXY header, TLS handshake) the listener's.
func (c *conn) timedOut() {
	c.mu.Lock()
	started := c.commands > 0
	c.mu.Unlock()
	if !started || c.state.Load() == stateData {
		return
	}
	c.srv.log.Info("connection closed: timeout", "client", c.remote.Addr().String())
	c.refuse(replyTimeout)
}

// woken reports whether a read deadline error came from wake rather than
// from the deadline go-smtp or the DATA timeout set.
func (c *conn) woken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadline.IsZero() || time.Now().Before(c.deadline)
}

// wake interrupts a read in progress so that Read sees the shutdown.
func (c *conn) wake() { c.Conn.SetReadDeadline(time.Now()) }

// capped cuts t to the end of the session.
func (c *conn) capped(t time.Time) time.Time {
	if t.IsZero() || t.After(c.end) {
		return c.end
	}
	return t
}

func (c *conn) setReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

// SetReadDeadline is called by go-smtp before it reads each command line
// (with its own ReadTimeout, ignored here): it counts the command, refuses
// one too many outside a transaction, and sets the deadline of the
// greeting or of a command, shorter under stress, never past the end of
// the session.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	if c.skipDeadline > 0 {
		c.skipDeadline--
		c.mu.Unlock()
		return c.setReadDeadline(c.capped(t))
	}
	if p := c.closing.Load(); p != nil {
		c.mu.Unlock()
		c.flushGoSMTP()
		c.refuse(*p...)
		return net.ErrClosed
	}
	c.commands++
	first := c.commands == 1
	over := false
	if c.state.Load() == stateIdle {
		c.idle++
		over = c.idle > c.srv.cfg.maxIdleCommands
	}
	c.mu.Unlock()
	if over {
		c.srv.log.Info("connection closed: too many commands without a transaction",
			"client", c.remote.Addr().String())
		c.flushGoSMTP()
		c.refuse(replyTooManyCommands)
		return net.ErrClosed
	}
	d := c.srv.cfg.commandTimeout
	if first {
		d = c.srv.cfg.greetingTimeout
	}
	if c.srv.stressed() {
		d = min(d, c.srv.cfg.stressTimeout)
	}
	return c.setReadDeadline(c.capped(time.Now().Add(d)))
}

func (c *conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = c.capped(t)
	c.mu.Unlock()
	return c.Conn.SetDeadline(c.capped(t))
}

// closeAfterReply ends the connection once go-smtp has written the reply
// to the current command: its next command read sends every buffered
// reply, then replies, and closes the connection. Safe from any
// goroutine; the first call wins.
func (c *conn) closeAfterReply(replies ...*sluice.Reply) {
	c.closing.CompareAndSwap(nil, &replies)
}

// flushGoSMTP sends go-smtp's buffered replies, if a session started; only
// from the connection's goroutine (see flushReplies).
func (c *conn) flushGoSMTP() {
	if c.flushReplies != nil {
		c.flushReplies()
	}
}

// refuse writes reply to the client, if the connection it must go through
// is known, and closes the connection.
func (c *conn) refuse(replies ...*sluice.Reply) {
	if !c.tlsStarting.Load() {
		writeReplies(*c.outer.Load(), c.srv.cfg.writeTimeout, replies...)
	}
	c.Close()
}

// setOuter records the connection go-smtp writes to (TLS or not) once a
// session starts.
func (c *conn) setOuter(nc net.Conn) {
	c.outer.Store(&nc)
	c.tlsStarting.Store(false)
}

func writeReplies(nc net.Conn, timeout time.Duration, replies ...*sluice.Reply) {
	var b bytes.Buffer
	for _, r := range replies {
		b.WriteString(r.Error())
		b.WriteString("\r\n")
	}
	nc.SetWriteDeadline(time.Now().Add(timeout))
	io.Copy(nc, &b)
}

// setRelease records how to free the connection's admission slot, or
// frees it at once if the connection is already closed.
func (c *conn) setRelease(f func()) {
	c.relMu.Lock()
	closed := c.closed
	if !closed {
		c.release = f
	}
	c.relMu.Unlock()
	if closed {
		f()
	}
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.Conn.Close()
		c.relMu.Lock()
		c.closed = true
		release := c.release
		c.relMu.Unlock()
		if release != nil {
			release()
		}
		c.srv.removeConn(c)
	})
	return c.closeErr
}

// connOf finds the *conn under nc, looking through wrappers such as TLS
// that expose NetConn. It returns nil if there is none.
func connOf(nc net.Conn) *conn {
	for nc != nil {
		switch v := nc.(type) {
		case *conn:
			return v
		case interface{ NetConn() net.Conn }:
			nc = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}
