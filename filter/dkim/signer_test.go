package dkim_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery/dnstest"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/dkim"
	"github.com/sluicemta/sluice/smtp"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

const testMessage = "Received: from client.example.org ([192.0.2.1]) by mx.test (sluice) with ESMTP;\r\n" +
	"\tSun, 29 Nov 2026 14:00:00 +0000\r\n" +
	"From: Alice <alice@example.com>\r\n" +
	"To: bob@example.net\r\n" +
	"Subject: quarterly   report\r\n" +
	"Date: Sun, 29 Nov 2026 14:00:00 +0000\r\n" +
	"Message-ID: <1@example.com>\r\n" +
	"X-Mailer: test\r\n" +
	"\r\n" +
	"Hello Bob,\r\n" +
	"\r\n" +
	"the figures are attached.   \r\n"

// rsaKey is generated once: a 2048-bit key takes a while under -race.
var rsaKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// writeKeys writes an RSA key (PKCS #1) and an Ed25519 key (PKCS #8) as
// PEM files and loads them as keys for domain, selectors "rsa" and "ed".
func writeKeys(t *testing.T, domain string) (rsaK, edK dkim.Key) {
	t.Helper()
	rk, err := rsaKey()
	if err != nil {
		t.Fatal(err)
	}
	_, ek, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk8, err := x509.MarshalPKCS8PrivateKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rsaPath, edPath := filepath.Join(dir, "rsa.pem"), filepath.Join(dir, "ed.pem")
	if err := os.WriteFile(rsaPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(edPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8}), 0o600); err != nil {
		t.Fatal(err)
	}
	if rsaK, err = dkim.LoadKey(domain, "rsa", rsaPath); err != nil {
		t.Fatal(err)
	}
	if edK, err = dkim.LoadKey(domain, "ed", edPath); err != nil {
		t.Fatal(err)
	}
	return rsaK, edK
}

// publish serves the public keys as TXT records from a DNS server on
// loopback and returns a lookup function for go-msgauth's verifier that
// queries it.
func publish(t *testing.T, keys ...dkim.Key) func(string) ([]string, error) {
	t.Helper()
	srv, err := dnstest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, k := range keys {
		rec, err := k.Record()
		if err != nil {
			t.Fatal(err)
		}
		// One TXT record, its text split into strings of at most 255 bytes.
		var parts []string
		for len(rec) > 255 {
			parts, rec = append(parts, `"`+rec[:255]+`"`), rec[255:]
		}
		parts = append(parts, `"`+rec+`"`)
		if err := srv.Add(k.RecordName() + " 300 IN TXT " + strings.Join(parts, " ")); err != nil {
			t.Fatal(err)
		}
	}
	return func(name string) ([]string, error) { return lookupTXT(srv.Addr(), name) }
}

// lookupTXT asks the server at addr for the TXT records of name, over TCP
// if the UDP answer is truncated, and returns each record's strings
// joined, as net.LookupTXT does.
func lookupTXT(addr, name string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	m.SetEdns0(4096, false)
	c := &dns.Client{Timeout: 5 * time.Second}
	in, _, err := c.Exchange(m, addr)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.Exchange(m, addr)
	}
	if err != nil {
		return nil, err
	}
	if in.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("lookup %s: %s", name, dns.RcodeToString[in.Rcode])
	}
	var out []string
	for _, rr := range in.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	return out, nil
}

// verify runs go-msgauth's verifier on msg and returns the verifications.
func verify(t *testing.T, lookup func(string) ([]string, error), msg string) []*msgauth.Verification {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(strings.NewReader(msg), &msgauth.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return vs
}

func authedMessage(body string) *filter.Message {
	return &filter.Message{
		Envelope: &sluice.Envelope{
			From:       "alice@example.com",
			Recipients: []sluice.Recipient{{Address: "bob@example.net"}},
			Client:     sluice.ClientInfo{Addr: netip.MustParseAddrPort("192.0.2.1:4000"), AuthUser: "alice"},
		},
		Body: strings.NewReader(body),
		Size: int64(len(body)),
	}
}

// store prepends header fields to msg the way a receiver does: folded at
// spaces into lines of at most 78 characters.
func store(hdrs []filter.Header, msg string) string {
	var b strings.Builder
	for _, h := range hdrs {
		line := h.Name + ":"
		for _, w := range strings.Fields(h.Value) {
			if len(line)+1+len(w) > 77 {
				b.WriteString(line + "\r\n")
				line = "\t" + w
				continue
			}
			line += " " + w
		}
		b.WriteString(line + "\r\n")
	}
	return b.String() + msg
}

func sign(t *testing.T, s *dkim.Signer, msg string) []filter.Header {
	t.Helper()
	v, err := s.Check(context.Background(), authedMessage(msg))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if v.Action != filter.Accept {
		t.Fatalf("Check: action %v, want accept", v.Action)
	}
	return v.Headers
}

func TestSignatureVerifies(t *testing.T) {
	rsaK, edK := writeKeys(t, "example.com")
	lookup := publish(t, rsaK, edK)
	for _, tc := range []struct {
		name  string
		key   dkim.Key
		algo  string
		canon dkim.Canonicalization
	}{
		{"rsa", rsaK, "rsa-sha256", dkim.Relaxed},
		{"ed25519", edK, "ed25519-sha256", dkim.Relaxed},
		{"rsa simple body", rsaK, "rsa-sha256", dkim.Simple},
		{"ed25519 simple body", edK, "ed25519-sha256", dkim.Simple},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := dkim.New([]dkim.Key{tc.key}, dkim.WithBodyCanonicalization(tc.canon))
			if err != nil {
				t.Fatal(err)
			}
			hdrs := sign(t, s, testMessage)
			if len(hdrs) != 1 || hdrs[0].Name != "DKIM-Signature" {
				t.Fatalf("headers %v, want one DKIM-Signature", hdrs)
			}
			for _, tag := range []string{"a=" + tc.algo + ";", "d=example.com;", "s=" + tc.key.Selector + ";", "c=relaxed/" + string(tc.canon) + ";"} {
				if !strings.Contains(hdrs[0].Value, tag) {
					t.Errorf("signature %q lacks %q", hdrs[0].Value, tag)
				}
			}
			vs := verify(t, lookup, store(hdrs, testMessage))
			if len(vs) != 1 {
				t.Fatalf("%d verifications, want 1", len(vs))
			}
			if vs[0].Err != nil || vs[0].Domain != "example.com" {
				t.Fatalf("verification: domain %q, error %v; want example.com, nil", vs[0].Domain, vs[0].Err)
			}
		})
	}
}

func TestTamperingBreaksSignature(t *testing.T) {
	rsaK, edK := writeKeys(t, "example.com")
	lookup := publish(t, rsaK, edK)
	for _, key := range []dkim.Key{rsaK, edK} {
		s, err := dkim.New([]dkim.Key{key})
		if err != nil {
			t.Fatal(err)
		}
		signed := store(sign(t, s, testMessage), testMessage)
		for _, tc := range []struct {
			name string
			msg  string
		}{
			{"body changed", strings.Replace(signed, "figures are attached", "figures are wrong", 1)},
			{"line added to body", signed + "P.S. wire the money\r\n"},
			{"subject changed", strings.Replace(signed, "quarterly   report", "urgent", 1)},
			{"second From added", "From: mallory@example.org\r\n" + signed},
			{"Reply-To added", "Reply-To: mallory@example.org\r\n" + signed},
		} {
			t.Run(key.Selector+"/"+tc.name, func(t *testing.T) {
				vs := verify(t, lookup, tc.msg)
				if len(vs) != 1 {
					t.Fatalf("%d verifications, want 1", len(vs))
				}
				if vs[0].Err == nil {
					t.Fatal("tampered message verifies")
				}
			})
		}
		// What relaxed canonicalization allows still verifies.
		t.Run(key.Selector+"/whitespace", func(t *testing.T) {
			msg := strings.Replace(signed, "quarterly   report", "quarterly report", 1)
			msg = strings.Replace(msg, "attached.   \r\n", "attached.\r\n", 1)
			msg = strings.Replace(msg, "X-Mailer: test\r\n", "X-Mailer: changed\r\n", 1) // not signed
			if vs := verify(t, lookup, msg); len(vs) != 1 || vs[0].Err != nil {
				t.Fatalf("verifications %v, want one without error", vs)
			}
		})
	}
}

func TestDualSigning(t *testing.T) {
	rsaK, edK := writeKeys(t, "example.com")
	lookup := publish(t, rsaK, edK)
	s, err := dkim.New([]dkim.Key{rsaK, edK})
	if err != nil {
		t.Fatal(err)
	}
	hdrs := sign(t, s, testMessage)
	if len(hdrs) != 2 {
		t.Fatalf("%d signatures, want 2", len(hdrs))
	}
	vs := verify(t, lookup, store(hdrs, testMessage))
	if len(vs) != 2 {
		t.Fatalf("%d verifications, want 2", len(vs))
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("verification for %s: %v", v.Domain, v.Err)
		}
	}
}

func TestSignedHeaderList(t *testing.T) {
	_, edK := writeKeys(t, "example.com")
	s, err := dkim.New([]dkim.Key{edK}, dkim.WithHeaders("From", "Subject", "X-Mailer", "Keywords"), dkim.WithOversigned("From"))
	if err != nil {
		t.Fatal(err)
	}
	hdrs := sign(t, s, testMessage)
	if len(hdrs) != 1 {
		t.Fatalf("headers %v", hdrs)
	}
	// Present fields once, From once more; Keywords is absent and not
	// oversigned; Received is never signed.
	if got, want := tag(hdrs[0].Value, "h"), "From:From:Subject:X-Mailer"; got != want {
		t.Errorf("h=%q, want %q", got, want)
	}
	s, err = dkim.New([]dkim.Key{edK})
	if err != nil {
		t.Fatal(err)
	}
	got := tag(sign(t, s, testMessage)[0].Value, "h")
	for _, want := range []string{"From:From", "Subject:Subject", "Reply-To", "Message-ID:Message-ID"} {
		if !strings.Contains(got, want) {
			t.Errorf("default h=%q lacks %q", got, want)
		}
	}
	for _, never := range []string{"Received", "X-Mailer", "In-Reply-To"} {
		if strings.Contains(got, never) {
			t.Errorf("default h=%q has %q", got, never)
		}
	}
}

// tag returns the value of tag name in a DKIM-Signature value, without
// whitespace.
func tag(sig, name string) string {
	for _, kv := range strings.Split(sig, ";") {
		k, v, _ := strings.Cut(kv, "=")
		if strings.TrimSpace(k) == name {
			return strings.Join(strings.Fields(v), "")
		}
	}
	return ""
}

func TestWhichMessagesAreSigned(t *testing.T) {
	_, edK := writeKeys(t, "example.com")
	s, err := dkim.New([]dkim.Key{edK})
	if err != nil {
		t.Fatal(err)
	}
	fromLoopback := dkim.FromNetworks(netip.MustParsePrefix("127.0.0.0/8"))
	withFrom := func(from string) string { return strings.Replace(testMessage, "alice@example.com", from, 1) }
	for _, tc := range []struct {
		name   string
		signer *dkim.Signer
		auth   string
		client string
		msg    string
		signed bool
	}{
		{"authenticated", s, "alice", "192.0.2.1:1", testMessage, true},
		{"not authenticated", s, "", "192.0.2.1:1", testMessage, false},
		{"subdomain of a key's domain", s, "alice", "192.0.2.1:1", withFrom("alice@news.EXAMPLE.com"), true},
		{"other domain", s, "alice", "192.0.2.1:1", withFrom("alice@example.org"), false},
		{"lookalike domain", s, "alice", "192.0.2.1:1", withFrom("alice@notexample.com"), false},
		{"no From", s, "alice", "192.0.2.1:1", strings.Replace(testMessage, "From:", "X-From:", 1), false},
		{"header fields only (RFC 5322 section 3.5)", s, "alice", "192.0.2.1:1", "From: alice@example.com\r\nSubject: x\r\n", true},
		{"header cut off in a field", s, "alice", "192.0.2.1:1", "From: alice@example.com\r\nSubject: x", false},
		{"trusted network", must(t, edK, dkim.WithSignIf(fromLoopback)), "", "127.0.0.1:1", testMessage, true},
		{"outside trusted network", must(t, edK, dkim.WithSignIf(fromLoopback)), "", "192.0.2.1:1", testMessage, false},
		{"always", must(t, edK, dkim.WithSignIf(dkim.Always)), "", "192.0.2.1:1", testMessage, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := authedMessage(tc.msg)
			m.Envelope.Client.AuthUser = tc.auth
			m.Envelope.Client.Addr = netip.MustParseAddrPort(tc.client)
			v, err := tc.signer.Check(context.Background(), m)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(v.Headers) == 1; got != tc.signed || v.Action != filter.Accept {
				t.Fatalf("signed %v (action %v), want %v", got, v.Action, tc.signed)
			}
		})
	}
}

func must(t *testing.T, k dkim.Key, opts ...dkim.Option) *dkim.Signer {
	t.Helper()
	s, err := dkim.New([]dkim.Key{k}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCheckHonoursContext(t *testing.T) {
	_, edK := writeKeys(t, "example.com")
	s := must(t, edK)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Check(ctx, authedMessage(testMessage)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Check with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestNewRejects(t *testing.T) {
	rsaK, edK := writeKeys(t, "example.com")
	for _, tc := range []struct {
		name string
		keys []dkim.Key
		opts []dkim.Option
	}{
		{"no keys", nil, nil},
		{"no domain", []dkim.Key{{Selector: "s", Signer: edK.Signer}}, nil},
		{"bad selector", []dkim.Key{{Domain: "example.com", Selector: "a;b", Signer: edK.Signer}}, nil},
		{"no private key", []dkim.Key{{Domain: "example.com", Selector: "s"}}, nil},
		{"duplicate selector", []dkim.Key{rsaK, {Domain: "EXAMPLE.com.", Selector: "rsa", Signer: edK.Signer}}, nil},
		{"From not signed", []dkim.Key{edK}, []dkim.Option{dkim.WithHeaders("Subject")}},
		{"Received signed", []dkim.Key{edK}, []dkim.Option{dkim.WithHeaders("From", "Received")}},
		{"bad field name", []dkim.Key{edK}, []dkim.Option{dkim.WithOversigned("Sub ject")}},
		{"bad canonicalization", []dkim.Key{edK}, []dkim.Option{dkim.WithBodyCanonicalization("loose")}},
		{"negative expiration", []dkim.Key{edK}, []dkim.Option{dkim.WithExpiration(-time.Second)}},
		{"nil predicate", []dkim.Key{edK}, []dkim.Option{dkim.WithSignIf(nil)}},
		{"nil logger", []dkim.Key{edK}, []dkim.Option{dkim.WithLogger(nil)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := dkim.New(tc.keys, tc.opts...); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestParseKeyRejects(t *testing.T) {
	ecdsaPEM := "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIGlR\n-----END EC PRIVATE KEY-----\n"
	for _, tc := range []struct{ name, pem string }{
		{"not PEM", "hello"},
		{"wrong block type", ecdsaPEM},
		{"garbage key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := dkim.ParseKey("example.com", "s", []byte(tc.pem)); err == nil {
				t.Fatal("ParseKey succeeded")
			}
		})
	}
	if _, err := dkim.LoadKey("example.com", "s", filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Fatal("LoadKey of a missing file succeeded")
	}
}

// TestSignatureSurvivesAcceptor runs the signer in sluice's acceptor and
// verifies the message as the queue stores it: with the acceptor's
// Received field on top and the signatures refolded by the acceptor.
func TestSignatureSurvivesAcceptor(t *testing.T) {
	rsaK, edK := writeKeys(t, "example.com")
	lookup := publish(t, rsaK, edK)
	stored := throughAcceptor(t, rsaK, edK)
	if !strings.HasPrefix(stored, "Received: ") || !strings.Contains(stored, "\r\nDKIM-Signature: ") {
		t.Fatalf("stored message does not start with Received and carry DKIM-Signature:\n%s", stored)
	}
	vs := verify(t, lookup, stored)
	if len(vs) != 2 {
		t.Fatalf("%d verifications, want 2:\n%s", len(vs), stored)
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("verification for %s: %v\n%s", v.Domain, v.Err, stored)
		}
	}
}

// throughAcceptor sends testMessage (without its Received field) from
// 127.0.0.1 through sluice's acceptor with a signer of keys in its filter
// chain, and returns the message as the acceptor queued it.
func throughAcceptor(t *testing.T, keys ...dkim.Key) string {
	t.Helper()
	signer, err := dkim.New(keys, dkim.WithSignIf(dkim.FromNetworks(netip.MustParsePrefix("127.0.0.0/8"))))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := filter.New(filter.WithFilter("dkim", signer))
	if err != nil {
		t.Fatal(err)
	}
	q := &smtptest.Queue{}
	srv, err := smtp.New(q, smtp.WithHostname("mx.test"), smtp.WithLocalDomains("example.net"), smtp.WithFilters(chain))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		srv.Close()
		<-served
	}()
	body := testMessage[strings.Index(testMessage, "From:"):] // the client sends no Received
	send(t, l.Addr().String(), "alice@example.com", "bob@example.net", body)
	msgs := q.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages queued, want 1", len(msgs))
	}
	return msgs[0].Body
}

// send sends one message over plain SMTP with go-smtp's client.
func send(t *testing.T, addr, from, to, body string) {
	t.Helper()
	c, err := gosmtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail(from, []string{to}, strings.NewReader(body)); err != nil {
		t.Fatalf("SendMail: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

// TestHeaderOnlyAndRootedDomain: a message of header fields only (RFC 5322
// section 3.5 makes the body and the empty line before it optional) is
// signed, with an empty body; and a key whose domain is written with its
// root dot ("example.com.") signs with d=example.com, which is what DMARC
// aligns. Both signatures verify.
func TestHeaderOnlyAndRootedDomain(t *testing.T) {
	_, edK := writeKeys(t, "example.com.")
	lookup := publish(t, edK) // its record name has the root dot: it is a DNS name
	s, err := dkim.New([]dkim.Key{edK})
	if err != nil {
		t.Fatal(err)
	}
	headerOnly := "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: ping\r\n"
	for _, msg := range []string{headerOnly, testMessage} {
		hdrs := sign(t, s, msg)
		if len(hdrs) != 1 {
			t.Fatalf("%d signatures of %q, want 1", len(hdrs), msg[:20])
		}
		if !strings.Contains(hdrs[0].Value, "d=example.com;") {
			t.Errorf("signature %q lacks d=example.com;", hdrs[0].Value)
		}
		stored := store(hdrs, msg)
		if msg == headerOnly {
			// go-msgauth's verifier wants the empty line that ends a
			// header; with it the body is as empty as without.
			stored += "\r\n"
		}
		vs := verify(t, lookup, stored)
		if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.com" {
			t.Fatalf("verification of %q: %+v", msg[:20], vs[0])
		}
	}
}
