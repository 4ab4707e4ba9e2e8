package smtp_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// The tests of sluice's reply batching (see SLUICE-PATCH.md): the replies
// to pipelined commands leave in one write, every reply leaves before the
// server waits for the client, and the STARTTLS 220 leaves alone.

// writeLog records what a server wrote to its connections, one entry per
// Write call.
type writeLog struct {
	mu     sync.Mutex
	writes []string
}

func (w *writeLog) add(p []byte) {
	w.mu.Lock()
	w.writes = append(w.writes, string(p))
	w.mu.Unlock()
}

// since returns the writes after the first n, and how many there are now.
func (w *writeLog) since(n int) ([]string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes[n:]...), len(w.writes)
}

type loggedConn struct {
	net.Conn
	log *writeLog
}

func (c loggedConn) Write(p []byte) (int, error) {
	c.log.add(p)
	return c.Conn.Write(p)
}

type loggedListener struct {
	net.Listener
	log *writeLog
}

func (l loggedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return loggedConn{c, l.log}, nil
}

// pipeliningServer starts a server whose writes are logged, and connects
// to it. The client's reads and writes time out after 10 s, so a reply
// the server keeps buffered fails the test instead of hanging it.
func pipeliningServer(t *testing.T, configure func(*smtp.Server)) (*writeLog, net.Conn, *bufio.Reader) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := new(writeLog)
	s := smtp.NewServer(new(backend))
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	if configure != nil {
		configure(s)
	}
	go s.Serve(loggedListener{l, log})
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return log, c, bufio.NewReader(c)
}

// readReply reads one (possibly multi-line) reply and returns its lines.
func readReply(t *testing.T, r *bufio.Reader) []string {
	t.Helper()
	var lines []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a reply after %q: %v", lines, err)
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return lines
		}
	}
}

func send(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func TestPipelinedRepliesLeaveTogether(t *testing.T) {
	log, c, r := pipeliningServer(t, nil)
	if got := readReply(t, r); !strings.HasPrefix(got[0], "220 ") {
		t.Fatalf("greeting %q", got)
	}
	_, n := log.since(0)

	send(t, c, "EHLO localhost\r\n")
	ehlo := readReply(t, r)
	if len(ehlo) < 3 {
		t.Fatalf("EHLO reply %q: want several lines", ehlo)
	}
	writes, n := log.since(n)
	if len(writes) != 1 {
		t.Errorf("the %d lines of the EHLO reply took %d writes, want 1: %q", len(ehlo), len(writes), writes)
	}

	// One group, as a pipelining client sends it (RFC 2920).
	send(t, c, "MAIL FROM:<root@nsa.gov>\r\nRCPT TO:<root@gchq.gov.uk>\r\nRCPT TO:<root@bnd.bund.de>\r\nDATA\r\n")
	for _, want := range []string{"250 ", "250 ", "250 ", "354 "} {
		if got := readReply(t, r); !strings.HasPrefix(got[0], want) {
			t.Fatalf("reply %q, want %q", got, want)
		}
	}
	writes, n = log.since(n)
	if len(writes) != 1 {
		t.Errorf("the replies to MAIL, two RCPT and DATA took %d writes, want 1: %q", len(writes), writes)
	}

	// The message and, pipelined after it, the next transaction.
	send(t, c, "Hey <3\r\n.\r\nRSET\r\nNOOP\r\n")
	for _, want := range []string{"250 ", "250 ", "250 "} {
		if got := readReply(t, r); !strings.HasPrefix(got[0], want) {
			t.Fatalf("reply %q, want %q", got, want)
		}
	}
	writes, n = log.since(n)
	if len(writes) != 1 {
		t.Errorf("the replies to the end of data, RSET and NOOP took %d writes, want 1: %q", len(writes), writes)
	}

	// Without pipelining, each reply leaves as soon as it is written: the
	// client waits for it before it sends anything more.
	for i := 0; i < 3; i++ {
		send(t, c, "NOOP\r\n")
		if got := readReply(t, r); !strings.HasPrefix(got[0], "250 ") {
			t.Fatalf("NOOP: %q", got)
		}
	}
	writes, n = log.since(n)
	if len(writes) != 3 {
		t.Errorf("3 NOOPs one at a time took %d writes, want 3: %q", len(writes), writes)
	}

	// A command split across reads: the replies before it leave when the
	// server must wait for the rest of it.
	send(t, c, "NOOP\r\nNO")
	if got := readReply(t, r); !strings.HasPrefix(got[0], "250 ") {
		t.Fatalf("NOOP: %q", got)
	}
	send(t, c, "OP\r\n")
	if got := readReply(t, r); !strings.HasPrefix(got[0], "250 ") {
		t.Fatalf("NOOP: %q", got)
	}

	// QUIT's reply leaves before the server closes the connection.
	send(t, c, "NOOP\r\nQUIT\r\n")
	for _, want := range []string{"250 ", "221 "} {
		if got := readReply(t, r); !strings.HasPrefix(got[0], want) {
			t.Fatalf("reply %q, want %q", got, want)
		}
	}
	if _, err := r.ReadByte(); err == nil {
		t.Error("the connection is still open after QUIT")
	}
}

// Too many errors: the replies and the last one leave before the close.
func TestRepliesLeaveBeforeAnErrorClose(t *testing.T) {
	_, c, r := pipeliningServer(t, nil)
	readReply(t, r)
	send(t, c, "EHLO localhost\r\n")
	readReply(t, r)
	send(t, c, "XX1\r\nXX2\r\nXX3\r\nXX4\r\n")
	for _, want := range []string{"50", "50", "50", "50", "500 5.5.1 Too many errors"} {
		if got := readReply(t, r); !strings.HasPrefix(got[0], want) {
			t.Fatalf("reply %q, want %q", got, want)
		}
	}
	if _, err := r.ReadByte(); err == nil {
		t.Error("the connection is still open after too many errors")
	}
}

func TestStartTLSReplyLeavesAlone(t *testing.T) {
	cert := selfSigned(t)
	log, c, r := pipeliningServer(t, func(s *smtp.Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	readReply(t, r)
	send(t, c, "EHLO localhost\r\n")
	readReply(t, r)
	_, n := log.since(0)

	send(t, c, "NOOP\r\nSTARTTLS\r\n")
	for _, want := range []string{"250 ", "220 "} {
		if got := readReply(t, r); !strings.HasPrefix(got[0], want) {
			t.Fatalf("reply %q, want %q", got, want)
		}
	}
	writes, _ := log.since(n)
	if len(writes) != 2 || !strings.HasPrefix(writes[1], "220 ") {
		t.Errorf("NOOP and STARTTLS: writes %q, want the 250 and then the 220 alone", writes)
	}

	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake after the 220: %v", err)
	}
	tr := bufio.NewReader(tc)
	send(t, tc, "EHLO localhost\r\nNOOP\r\n")
	readReply(t, tr)
	if got := readReply(t, tr); !strings.HasPrefix(got[0], "250 ") {
		t.Fatalf("NOOP over TLS: %q", got)
	}
}

// selfSigned returns a certificate for 127.0.0.1 made for the test.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// statusFirstBackend's sessions report every recipient's LMTP status
// before reading the message, so that the server writes the statuses
// while another goroutine still reads the data from the connection.
type statusFirstBackend struct{}

func (statusFirstBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &statusFirstSession{}, nil
}

type statusFirstSession struct{ rcpts []string }

func (s *statusFirstSession) Reset()        { s.rcpts = nil }
func (s *statusFirstSession) Logout() error { return nil }
func (s *statusFirstSession) Mail(string, *smtp.MailOptions) error {
	return nil
}
func (s *statusFirstSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *statusFirstSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
func (s *statusFirstSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	for _, rcpt := range s.rcpts {
		status.SetStatus(rcpt, nil)
	}
	_, err := io.Copy(io.Discard, r)
	return err
}

// TestLMTPStatusesWhileDataIsRead: in LMTP the data is read by a goroutine
// of its own while the connection's goroutine writes each recipient's
// status. The reads must leave the reply buffer to the writer (under the
// race detector, a read that flushed it was a data race), and the 354 and
// the statuses must still reach the client.
func TestLMTPStatusesWhileDataIsRead(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := smtp.NewServer(statusFirstBackend{})
	s.Domain = "localhost"
	s.LMTP = true
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	readReply(t, r)
	for _, cmd := range []string{"LHLO localhost", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>", "RCPT TO:<c@example.com>"} {
		send(t, c, cmd+"\r\n")
		if got := readReply(t, r); got[len(got)-1][0] != '2' {
			t.Fatalf("%s: %q", cmd, got)
		}
	}
	send(t, c, "DATA\r\n")
	if got := readReply(t, r); !strings.HasPrefix(got[0], "354 ") {
		t.Fatalf("DATA: %q, want 354", got)
	}
	body := strings.Repeat("a line of the message body\r\n", 4096)
	send(t, c, "Subject: x\r\n\r\n"+body+".\r\n")
	for _, rcpt := range []string{"b@example.com", "c@example.com"} {
		if got := readReply(t, r); !strings.HasPrefix(got[0], "250 ") || !strings.Contains(got[0], rcpt) {
			t.Errorf("status for %s: %q", rcpt, got)
		}
	}
}
