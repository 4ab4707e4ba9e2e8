package smtp_test

import (
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice/smtp"
)

// On an implicit-TLS listener a client's own limits apply before the TLS
// handshake: a client that opens connections and sends nothing holds at
// most its own limit of them in the handshake, and the rest are closed
// at once, rather than each holding a place of the server's cap (and
// costing a handshake) for the handshake timeout.
func TestPerClientLimitBeforeTLSHandshake(t *testing.T) {
	opts := append(tlsOptions(t), untrusted, smtp.WithMaxConnectionsPerIP(2), smtp.WithMaxConnections(10),
		smtp.WithHandshakeTimeout(30*time.Second))
	_, addr := startKind(t, &recorder{}, smtp.KindSubmissions, opts...)
	const n = 5
	closed := make(chan bool, n)
	var wg sync.WaitGroup
	for range n {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		wg.Go(func() {
			nc.SetReadDeadline(time.Now().Add(2 * time.Second))
			var b [1]byte
			_, err := nc.Read(b[:])
			closed <- !errors.Is(err, os.ErrDeadlineExceeded) // closed by the server, not still waiting
		})
	}
	wg.Wait()
	close(closed)
	held := 0
	for c := range closed {
		if !c {
			held++
		}
	}
	if held != 2 {
		t.Errorf("%d of %d silent connections of one client held in the handshake, want its limit of 2", held, n)
	}
}
