package smtp_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/sluicemta/sluice/smtp"
)

// writeCert writes a self-signed certificate for cn and its key as PEM
// files in dir.
func writeCert(t *testing.T, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

const (
	testUser     = "alice"
	testPassword = "correct horse battery staple"
)

// writeUsers writes a password file with testUser.
func writeUsers(t *testing.T, dir string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "users")
	if err := os.WriteFile(p, []byte("# users\n\n"+testUser+":"+string(h)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsOptions configures a certificate and a password file.
func tlsOptions(t *testing.T) []smtp.Option {
	t.Helper()
	dir := t.TempDir()
	cert, key := writeCert(t, dir, "mx.test")
	users, err := smtp.NewPasswordFile(writeUsers(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	return []smtp.Option{smtp.WithCertificate(cert, key), smtp.WithAuthenticator(users)}
}

// startKind serves a listener of kind and returns its address.
func startKind(t *testing.T, q smtp.Enqueuer, kind smtp.Kind, opts ...smtp.Option) (*smtp.Server, string) {
	t.Helper()
	s := newServer(t, q, opts...)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeKind(l, kind) }()
	t.Cleanup(func() {
		s.Close()
		wantServed(t, done)
	})
	return s, l.Addr().String()
}

// startTLS upgrades the client's connection after a 220 to STARTTLS.
func (c *client) startTLS() *tls.ConnectionState {
	c.t.Helper()
	tc := tls.Client(c.nc, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test"})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.nc, c.r = tc, bufio.NewReader(tc)
	st := tc.ConnectionState()
	return &st
}

func dialTLS(t *testing.T, addr string) *client {
	t.Helper()
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, ServerName: "mx.test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func plainAuth(user, pass string) string {
	return "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func ehloHas(lines []string, ext string) bool {
	for _, l := range lines[1:] {
		if l[4:] == ext || strings.HasPrefix(l[4:], ext+" ") {
			return true
		}
	}
	return false
}

func TestSubmission(t *testing.T) {
	var logs logBuffer
	q := &recorder{}
	_, addr := startKind(t, q, smtp.KindSubmission, append(tlsOptions(t), untrusted, logs.logger())...)
	c := dial(t, addr)
	c.expect("220 mx.test")
	c.send("EHLO client.test")
	lines := c.expect("250 ")
	if !ehloHas(lines, "STARTTLS") || ehloHas(lines, "AUTH") {
		t.Errorf("EHLO before TLS = %q, want STARTTLS and no AUTH", lines)
	}
	c.run([]step{
		{"MAIL FROM:<alice@example.org>", "530 5.7.0 must issue a STARTTLS command first"},
		{plainAuth(testUser, testPassword), "523 5.7.10"},
		{"STARTTLS", "220 2.0.0"},
	})
	if st := c.startTLS(); st.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x, want 1.2 at least", st.Version)
	}
	c.send("EHLO client.test")
	lines = c.expect("250 ")
	if ehloHas(lines, "STARTTLS") || !ehloHas(lines, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO after TLS = %q, want AUTH PLAIN LOGIN and no STARTTLS", lines)
	}
	c.run([]step{
		{"MAIL FROM:<alice@example.org>", "530 5.7.0 authentication required"},
		{plainAuth(testUser, "wrong"), "535 5.7.8"},
		{plainAuth("mallory", testPassword), "535 5.7.8"},
		{plainAuth(testUser, testPassword), "235 2.0.0"},
		{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		{"RCPT TO:<bob@example.net>", "250 2.0.0"}, // authenticated: may relay
		{"DATA", "354 "},
		{"Subject: hi\r\n\r\nhi\r\n.", "250 2.0.0 queued as ID1"},
	})
	msgs := q.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages queued, want 1", len(msgs))
	}
	if cl := msgs[0].env.Client; cl.AuthUser != testUser || !cl.TLS {
		t.Errorf("client info %+v, want AuthUser %q and TLS", cl, testUser)
	}
	for _, secret := range []string{testPassword, b64("\x00" + testUser + "\x00" + testPassword), b64(testPassword)} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the logs hold the secret %q:\n%s", secret, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "authentication failed") {
		t.Errorf("failed AUTH not logged:\n%s", logs.String())
	}
}

func TestAuthLogin(t *testing.T) {
	_, addr := startKind(t, &recorder{}, smtp.KindSubmissions, tlsOptions(t)...)
	c := dialTLS(t, addr)
	c.expect("220 mx.test")
	c.send("EHLO client.test")
	if lines := c.expect("250 "); ehloHas(lines, "STARTTLS") || !ehloHas(lines, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO on implicit TLS = %q, want AUTH and no STARTTLS", lines)
	}
	c.run([]step{
		{"MAIL FROM:<alice@example.org>", "530 5.7.0 authentication required"},
		{"AUTH LOGIN", "334 " + b64("Username:")},
		{b64(testUser), "334 " + b64("Password:")},
		{b64(testPassword), "235 2.0.0"},
		{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
	})
}

func TestAuthOnPort25(t *testing.T) {
	_, addr := startKind(t, &recorder{}, smtp.KindSMTP, append(tlsOptions(t), untrusted)...)
	c := dial(t, addr)
	c.expect("220 ")
	c.send("EHLO client.test")
	if lines := c.expect("250 "); !ehloHas(lines, "STARTTLS") || ehloHas(lines, "AUTH") {
		t.Errorf("EHLO = %q, want STARTTLS and no AUTH before TLS", lines)
	}
	c.run([]step{
		{"MAIL FROM:<alice@example.org>", "250 2.0.0"}, // port 25 needs neither TLS nor AUTH
		{"RCPT TO:<bob@example.net>", "554 5.7.1"},
		{"RSET", "250"},
		{"STARTTLS", "220 2.0.0"},
	})
	c.startTLS()
	c.run([]step{
		{"EHLO client.test", "250 "},
		{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		{"RCPT TO:<bob@example.net>", "554 5.7.1"},
		{"RSET", "250"},
		{plainAuth(testUser, testPassword), "235 2.0.0"},
		{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		{"RCPT TO:<bob@example.net>", "250 2.0.0"},
	})
}

func TestAuthThrottled(t *testing.T) {
	_, addr := startKind(t, &recorder{}, smtp.KindSubmissions,
		append(tlsOptions(t), smtp.WithAuthFailureLimit(2, time.Hour))...)
	c := dialTLS(t, addr)
	c.run(append(hello,
		step{plainAuth(testUser, "guess1"), "535 5.7.8"},
		step{plainAuth(testUser, "guess2"), "535 5.7.8"},
		step{plainAuth(testUser, testPassword), "454 4.7.0 too many failed authentication attempts"},
	))
	// The budget is the client's, not the connection's.
	d := dialTLS(t, addr)
	d.run(append(hello, step{plainAuth(testUser, testPassword), "454 4.7.0"}))
}

func TestListenerNeedsTLSAndAuth(t *testing.T) {
	s := newServer(t, &recorder{})
	for _, kind := range []smtp.Kind{smtp.KindSubmission, smtp.KindSubmissions, smtp.Kind(9)} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ServeKind(l, kind); err == nil || errors.Is(err, smtp.ErrServerClosed) {
			t.Errorf("ServeKind(%v) without certificate and authenticator = %v, want an error", kind, err)
		}
	}
}

func TestReloadCertificate(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir, "one.test")
	users, err := smtp.NewPasswordFile(writeUsers(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	s, addr := startKind(t, &recorder{}, smtp.KindSubmissions, smtp.WithCertificate(cert, key), smtp.WithAuthenticator(users))
	served := func() string {
		c := dialTLS(t, addr)
		c.expect("220 ")
		return c.nc.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "one.test" {
		t.Fatalf("certificate %q, want one.test", got)
	}
	writeCert(t, dir, "two.test")
	if err := s.ReloadCertificate(); err != nil {
		t.Fatal(err)
	}
	if got := served(); got != "two.test" {
		t.Errorf("certificate after reload %q, want two.test", got)
	}
	os.WriteFile(cert, []byte("garbage"), 0o600)
	if err := s.ReloadCertificate(); err == nil {
		t.Error("ReloadCertificate of a bad file succeeded")
	}
	if got := served(); got != "two.test" {
		t.Errorf("certificate after a failed reload %q, want two.test", got)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	_, addr := startKind(t, &recorder{}, smtp.KindSubmissions,
		append(tlsOptions(t), smtp.WithHandshakeTimeout(200*time.Millisecond))...)
	c := dial(t, addr) // TCP only: never says ClientHello
	within(t, 2*time.Second, c.expectClosed)
}

func TestPasswordFileErrors(t *testing.T) {
	dir := t.TempDir()
	h, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	tests := []struct{ name, content, want string }{
		{"no colon", "alice\n", "users:1: want username:bcrypt-hash"},
		{"not bcrypt", "# c\nalice:plain\n", "users:2: user alice: not a bcrypt hash"},
		{"twice", "alice:" + string(h) + "\nalice:" + string(h) + "\n", "users:2: user alice listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "users")
			os.WriteFile(p, []byte(tt.content), 0o600)
			_, err := smtp.NewPasswordFile(p)
			if err == nil || !strings.HasSuffix(err.Error(), tt.want) {
				t.Errorf("error %v, want one ending %q", err, tt.want)
			}
		})
	}
}

func TestProxyProtocol(t *testing.T) {
	q := &recorder{}
	_, addr := startServer(t, q,
		smtp.WithProxyNetworks(netip.MustParsePrefix("127.0.0.0/8")),
		smtp.WithTrustedNetworks(netip.MustParsePrefix("192.0.2.0/24")),
		smtp.WithMaxConnectionsPerIP(1), smtp.WithHandshakeTimeout(200*time.Millisecond))
	proxied := func(src string) *client {
		c := dial(t, addr)
		c.send("PROXY TCP4 " + src + " 127.0.0.1 40000 25")
		return c
	}

	// The client's address from the header drives the relay policy...
	c := proxied("192.0.2.7")
	c.run(append(hello, transaction...))
	c.run([]step{{"Subject: hi\r\n\r\nhi\r\n.", "250 2.0.0"}})
	if got := q.messages()[0].env.Client.Addr; got != netip.MustParseAddrPort("192.0.2.7:40000") {
		t.Errorf("client address %v, want 192.0.2.7:40000", got)
	}
	d := proxied("198.51.100.1")
	d.run(append(hello, step{"MAIL FROM:<a@example.org>", "250"}, step{"RCPT TO:<b@example.net>", "554 5.7.1"}))

	// ...and the per-client limits.
	proxied("198.51.100.1").expect("421 4.7.0 too many connections from your address")
	proxied("198.51.100.2").expect("220 ")

	// A balancer's connection without a valid header is closed.
	e := dial(t, addr)
	e.send("EHLO client.test")
	e.expectClosed()
	f := dial(t, addr) // says nothing
	within(t, 2*time.Second, f.expectClosed)
}

// TestDataReadInChunks sends, in plain text, after STARTTLS and on an
// implicit-TLS listener, a large message in many writes (so the server's
// reads end mid-line and, with TLS, mid-record), which must arrive whole;
// then a message with a bare CR after which the client stops and waits, as
// if "\r\r\n.\r\n" had ended it. The server reads the data in chunks of
// whatever has arrived, so it must answer 550 at once rather than wait for
// the rest of a buffer: the data timeout is a minute, the client waits 5 s.
func TestDataReadInChunks(t *testing.T) {
	line := strings.Repeat("x", 70) + "\r\n"
	body := "Subject: big\r\n\r\n" + strings.Repeat(line, 300<<10/len(line)) + "..dot\r\n"
	for _, kind := range []string{"plain", "STARTTLS", "implicit TLS"} {
		t.Run(kind, func(t *testing.T) {
			q := &recorder{}
			opts := append(tlsOptions(t), smtp.WithDataTimeout(time.Minute))
			var c *client
			switch kind {
			case "plain":
				_, addr := startServer(t, q, smtp.WithDataTimeout(time.Minute))
				c = dial(t, addr)
				c.run(hello)
			case "STARTTLS":
				_, addr := startKind(t, q, smtp.KindSubmission, opts...)
				c = dial(t, addr)
				c.run(append(hello, step{"STARTTLS", "220 2.0.0"}))
				c.startTLS()
				c.run([]step{{"EHLO client.test", "250 "}, {plainAuth(testUser, testPassword), "235 2.0.0"}})
			case "implicit TLS":
				_, addr := startKind(t, q, smtp.KindSubmissions, opts...)
				c = dialTLS(t, addr)
				c.run(append(hello, step{plainAuth(testUser, testPassword), "235 2.0.0"}))
			}
			c.run(transaction)
			sendInPieces(t, c, body+".\r\n", 1000)
			c.expect("250 2.0.0 ")
			msgs := q.messages()
			if len(msgs) != 1 {
				t.Fatalf("%d messages queued, want 1", len(msgs))
			}
			if got, want := msgs[0].body[strings.Index(msgs[0].body, "Subject: big"):], strings.ReplaceAll(body, "..dot", ".dot"); got != want {
				t.Errorf("queued body differs: %d octets, want %d", len(got), len(want))
			}
			c.run(transaction)
			c.send("Subject: hi\r\n\r\n" + strings.Repeat(line, 100) + "hello\r\r\n.")
			c.expect("550 5.5.2 ")
			c.expectClosed()
		})
	}
}

// sendInPieces writes text in writes of n octets.
func sendInPieces(t *testing.T, c *client, text string, n int) {
	t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for len(text) > 0 {
		k := min(n, len(text))
		if _, err := io.WriteString(c.nc, text[:k]); err != nil {
			t.Fatalf("send: %v", err)
		}
		text = text[k:]
	}
}

// TestProxyLocalIsNeverTrusted: a PROXY header that names no client (v1
// UNKNOWN, v2 LOCAL) leaves the proxy's own address as the client's; with
// the proxy on loopback, which the default trusted networks hold, that
// must not let whatever the proxy could not name relay.
func TestProxyLocalIsNeverTrusted(t *testing.T) {
	_, addr := startServer(t, &recorder{},
		smtp.WithProxyNetworks(netip.MustParsePrefix("127.0.0.0/8")),
		smtp.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8")),
		smtp.WithLocalDomains("example.com"))
	c := dial(t, addr)
	c.send("PROXY UNKNOWN")
	c.run(append(hello, step{"MAIL FROM:<a@example.org>", "250"}, step{"RCPT TO:<b@example.net>", "554 5.7.1"},
		step{"RCPT TO:<b@example.com>", "250"}))
}
