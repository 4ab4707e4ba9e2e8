package blackhole_test

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/blackhole"
)

// TestAcceptsAndStaysSilent: a client connects, gets no byte within its
// read deadline, and sees the connection closed by Close.
func TestAcceptsAndStaysSilent(t *testing.T) {
	b, err := blackhole.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", b.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v; want a timeout", n, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) || err == nil {
		t.Fatalf("after Close: %v, want the connection closed", err)
	}
}
