// Package blackhole is a TCP listener that accepts connections and never
// writes to them or reads from them: the peer of seed 000, a service whose
// port is open and whose process is hung. Tests use it as a dead next hop,
// filter or probe target, and the relay benchmark as the next hop that
// keeps delivery paused.
package blackhole

import (
	"net"
	"sync"
	"testing"
)

// A Listener holds every connection it accepts open until Close.
type Listener struct {
	l     net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex // guards conns
	conns []net.Conn
}

// Listen starts a Listener on addr ("127.0.0.1:0" for a port the kernel
// chooses).
func Listen(addr string) (*Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &Listener{l: l}
	b.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
		}
	})
	return b, nil
}

// Addr is the address the Listener accepts on, host:port.
func (b *Listener) Addr() string { return b.l.Addr().String() }

// Close stops accepting, waits for the accepting goroutine and closes the
// connections it holds.
func (b *Listener) Close() error {
	err := b.l.Close()
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
	return err
}

// Start starts a Listener on addr for the test tb, closes it when tb ends
// and returns its address.
func Start(tb testing.TB, addr string) string {
	tb.Helper()
	b, err := Listen(addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	return b.Addr()
}
