//go:build interop

package interop

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestSwaksSubmission: swaks submits a message over the submission
// listener with STARTTLS and AUTH PLAIN, for a foreign domain (relaying
// is what authentication is for), and the message reaches the next hop;
// without AUTH, MAIL is refused with 530 5.7.0.
func TestSwaksSubmission(t *testing.T) {
	t.Parallel()
	swaksBin := tool(t, "swaks")
	dir := t.TempDir()
	cert, key := writeTestCert(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sink := startSink(t)
	conf := fmt.Sprintf("\n[smtp]\ntrusted_networks = []\ntls_cert = %q\ntls_key = %q\nauth_users_file = %q\n\n"+
		"[[smtp.listener]]\naddress = \"127.0.0.1:0\"\nkind = \"submission\"\n", cert, key, users)
	srv := startSluiceWith(t, t.TempDir(), conf, "--smarthost", sink.addr)
	if len(srv.extra) != 1 {
		t.Fatalf("submission listener not reported: %v", srv.extra)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--server", srv.extra[0], "--from", "alice@example.org", "--to", "bob@foreign.example",
		"--helo", "swaks.test", "--timeout", "30s", "--tls", "--header", "Subject: submitted"}
	out, _ := exec.CommandContext(ctx, swaksBin, append(base, "--auth", "PLAIN", "--auth-user", "alice",
		"--auth-password", "s3cret pass")...).CombinedOutput()
	transcript := string(out)
	// swaks marks the lines it exchanged over TLS with "~".
	for _, want := range []string{"<-  220 2.0.0", "<~  235 2.0.0", " ~> .\n<~  250 2.0.0 queued as "} {
		if !strings.Contains(transcript, want) {
			t.Fatalf("swaks transcript lacks %q:\n%s", want, transcript)
		}
	}
	// smtp-sink creates its dump file before it writes it: wait for the
	// content, not the file.
	if !poll(30*time.Second, func() bool {
		d := sink.dumps(t)
		return len(d) == 1 && strings.Contains(d[0], "Subject: submitted")
	}) {
		t.Fatalf("message with its subject not delivered to the next hop within 30s: %q", sink.dumps(t))
	}

	out, _ = exec.CommandContext(ctx, swaksBin, base...).CombinedOutput()
	if !strings.Contains(string(out), "<~* 530 5.7.0 authentication required") {
		t.Errorf("MAIL without AUTH not refused with 530 5.7.0:\n%s", out)
	}
}

// writeTestCert writes a self-signed certificate and key for localhost.
func writeTestCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sluice.test"},
		DNSNames:     []string{"sluice.test", "localhost"},
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
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}
