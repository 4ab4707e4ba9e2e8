//go:build interop

package interop

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/procnet"
)

// postfixMTA is a private Postfix instance: its own configuration, queue
// and log in a temporary directory, an smtpd on a kernel-chosen port of
// 127.0.0.1 offering STARTTLS, recipients of postfix.test checked against
// a table (known@postfix.test only), and every accepted message discarded
// after it is logged.
type postfixMTA struct {
	dir     string
	addr    string
	maillog string
}

// startPostfix runs a Postfix master. It needs root: master binds as root
// and switches to the postfix user, as in production.
func startPostfix(t *testing.T) *postfixMTA {
	t.Helper()
	bin := tool(t, "postfix")
	if os.Geteuid() != 0 {
		t.Skip("a private Postfix instance needs root")
	}
	// Not t.TempDir: Postfix's daemons, running as the postfix user, must
	// be able to reach the queue, so the directory is world-searchable.
	dir, err := os.MkdirTemp("", "sluice-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pf := &postfixMTA{dir: dir, maillog: filepath.Join(dir, "maillog")}
	for _, d := range []string{"etc", "spool", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	chown(t, filepath.Join(dir, "data"), "postfix")
	writeCert(t, filepath.Join(dir, "etc", "chain.pem"))
	mainCF := strings.NewReplacer("DIR", dir).Replace(`compatibility_level = 3.6
queue_directory = DIR/spool
data_directory = DIR/data
maillog_file = DIR/maillog
maillog_file_prefixes = DIR
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination = postfix.test
mynetworks = 127.0.0.0/8
local_recipient_maps = inline:{ known@postfix.test=x }
local_transport = discard
default_transport = discard
relay_transport = discard
alias_maps =
alias_database =
smtputf8_enable = yes
smtpd_tls_security_level = may
smtpd_tls_chain_files = DIR/etc/chain.pem
`)
	// Port 0: the kernel chooses, and the test reads the port back from
	// /proc as it does for smtp-sink.
	masterCF := `127.0.0.1:0 inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000 0 flush
proxymap  unix  - - n -    - proxymap
discard   unix  - - n -    - discard
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
tlsmgr    unix  - - n 1000 1 tlsmgr
postlog   unix-dgram n - n - 1 postlogd
`
	for name, content := range map[string]string{"main.cf": mainCF, "master.cf": masterCF} {
		if err := os.WriteFile(filepath.Join(dir, "etc", name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	etc := filepath.Join(dir, "etc")
	if out, err := exec.Command(bin, "-c", etc, "start").CombinedOutput(); err != nil {
		t.Fatalf("postfix start: %v\n%s\n%s", err, out, pf.log())
	}
	var pid, port int
	ok := poll(20*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "spool", "pid", "master.pid"))
		if err != nil {
			return false
		}
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		port = procnet.ListeningPort(pid)
		return port != 0
	})
	t.Cleanup(func() {
		// Stop this instance only: "postfix -c" signals the master
		// whose pid file is in our queue directory.
		exec.Command(bin, "-c", etc, "abort").Run()
		if pid > 0 && !poll(20*time.Second, func() bool { return syscallGone(pid) }) {
			t.Errorf("postfix master %d still running after abort", pid)
		}
	})
	if !ok {
		t.Fatalf("postfix did not start listening:\n%s", pf.log())
	}
	pf.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	return pf
}

func (pf *postfixMTA) log() string {
	b, _ := os.ReadFile(pf.maillog)
	return string(b)
}

// syscallGone reports whether process pid has exited.
func syscallGone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return os.IsNotExist(err)
}

func chown(t *testing.T, path, user string) {
	t.Helper()
	if out, err := exec.Command("chown", user, path).CombinedOutput(); err != nil {
		t.Fatalf("chown %s %s: %v %s", user, path, err, out)
	}
}

// writeCert writes a self-signed key and certificate for postfix.test,
// in the order smtpd_tls_chain_files wants.
func writeCert(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "postfix.test"}, DNSNames: []string{"postfix.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	out := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// deliveryRecord is sluice's delivery log record.
type deliveryRecord struct {
	Msg, To, From, Result, Category, Enhanced, Text, Relay, TLSVersion string
	Code                                                               int
}

func deliveryRecords(p *sluiceProc) []deliveryRecord {
	var out []deliveryRecord
	for _, l := range p.log.snapshot() {
		var r struct {
			deliveryRecord
			TLSVersion string `json:"tls_version"`
		}
		if json.Unmarshal([]byte(l), &r) == nil && r.Msg == "delivery" {
			r.deliveryRecord.TLSVersion = r.TLSVersion
			out = append(out, r.deliveryRecord)
		}
	}
	return out
}

// swaks -> sluice -> a real Postfix: the known recipient is delivered over
// STARTTLS and Postfix queues it; the unknown one gets Postfix's 550 5.1.1,
// which sluice bounces as a bad mailbox, and the notification, from the
// null sender, is relayed to Postfix too.
func TestDeliveryIntoPostfix(t *testing.T) {
	t.Parallel()
	swaksBin := tool(t, "swaks")
	pf := startPostfix(t)
	srv := startSluice(t, t.TempDir(), "--smarthost", pf.addr)

	file := messageFile(t, "From: <sender@example.org>\nSubject: into postfix\nMessage-ID: <into-postfix@example.org>\n\nhello postfix\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if ok, out := swaks(ctx, swaksBin, srv.smtpAddr, "sender@example.org", "known@postfix.test,nobody@postfix.test", file); !ok {
		t.Fatalf("swaks to sluice not acknowledged:\n%s", out)
	}

	var known, unknown *deliveryRecord
	if !poll(30*time.Second, func() bool {
		for _, r := range deliveryRecords(srv) {
			switch r.To {
			case "known@postfix.test":
				known = &r
			case "nobody@postfix.test":
				unknown = &r
			}
		}
		return known != nil && unknown != nil
	}) {
		t.Fatalf("no delivery records for both recipients within 30s")
	}
	t.Logf("records: %+v %+v", *known, *unknown)
	if known.Result != "delivered" || known.Code != 250 || !strings.Contains(known.Text, "queued as") || known.TLSVersion == "" {
		t.Errorf("known recipient: %+v, want delivered with Postfix's 250 queued as, over TLS", *known)
	}
	if unknown.Result != "bounced" || unknown.Code != 550 || unknown.Enhanced != "5.1.1" || unknown.Category != "bad-mailbox" {
		t.Errorf("unknown recipient: %+v, want bounced 550 5.1.1 bad-mailbox", *unknown)
	}
	// Postfix logs the message it took, then the notification sluice
	// sent from the null sender to the original sender.
	if !poll(30*time.Second, func() bool {
		log := pf.log()
		return strings.Contains(log, "to=<known@postfix.test>") && strings.Contains(log, "from=<>") &&
			strings.Contains(log, "to=<sender@example.org>")
	}) {
		t.Errorf("Postfix did not log the message and the notification:\n%s", pf.log())
	}
	if strings.Contains(pf.log(), "to=<nobody@postfix.test>, relay") {
		t.Error("Postfix delivered to the unknown recipient")
	}
}
