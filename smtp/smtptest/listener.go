package smtptest

import (
	"net"
	"sync"
)

// countingListener counts the connections it accepted that are still open,
// so a Sink can report concurrency and wait for its connections on Close.
type countingListener struct {
	net.Listener
	wg sync.WaitGroup // one per open connection

	mu     sync.Mutex // guards active and max
	active int
	max    int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.active++
	l.max = max(l.max, l.active)
	l.mu.Unlock()
	l.wg.Add(1)
	return &countedConn{Conn: c, l: l}, nil
}

func (l *countingListener) maxActive() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.max
}

func (l *countingListener) wait() { l.wg.Wait() }

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.active--
		c.l.mu.Unlock()
		c.l.wg.Done()
	})
	return err
}
