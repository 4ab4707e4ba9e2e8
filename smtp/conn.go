package smtp

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// listener tracks the connections it accepts, so that Shutdown and Close
// can reach them.
type listener struct {
	net.Listener
	srv *Server
}

func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &conn{Conn: nc, srv: l.srv}
	if !l.srv.addConn(c) {
		nc.Close()
		return nil, net.ErrClosed
	}
	return c, nil
}

// Transaction states of a connection, kept for Shutdown (which closes a
// connection only between transactions) and for the DATA timeout.
const (
	stateIdle int32 = iota // no transaction: between commands or before MAIL
	stateMail              // MAIL accepted, collecting recipients
	stateData              // reading the message after DATA
)

// conn is the server side of one client connection. It sits under
// go-smtp's Conn (and under TLS, when that is added), so it sees every read.
type conn struct {
	net.Conn
	srv   *Server
	state atomic.Int32

	mu       sync.Mutex // guards deadline
	deadline time.Time  // the read deadline last asked for, not a wake-up

	closeOnce sync.Once
	closeErr  error
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
	if c != nil {
		c.state.Store(s)
	}
}

func (c *conn) draining() bool {
	return c.srv.shutdown.Load() && c.state.Load() == stateIdle
}

// Read applies the DATA idle timeout and ends the session at the first
// read between transactions once the server is shutting down.
func (c *conn) Read(p []byte) (int, error) {
	for {
		if c.draining() {
			return 0, errDraining
		}
		if c.state.Load() == stateData {
			c.SetReadDeadline(time.Now().Add(c.srv.cfg.dataTimeout))
		}
		n, err := c.Conn.Read(p)
		if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || !c.woken() {
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

// woken reports whether a read deadline error came from wake rather than
// from the deadline go-smtp or the DATA timeout set.
func (c *conn) woken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadline.IsZero() || time.Now().Before(c.deadline)
}

// wake interrupts a read in progress so that Read sees the shutdown.
func (c *conn) wake() { c.Conn.SetReadDeadline(time.Now()) }

func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.Conn.Close()
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
