package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/miekg/dns"
)

// minRSABits is the shortest RSA key accepted: RFC 8301 section 3.2 says
// signers MUST use at least 1024 bits (and SHOULD use 2048), and
// verifiers MUST NOT accept signatures from shorter keys.
const minRSABits = 1024

// Key is a private key that signs mail for one domain under one selector:
// its public half is published as a TXT record at
// "<Selector>._domainkey.<Domain>" (see [Key.Record]).
type Key struct {
	// Domain is the signing domain, the d= tag (RFC 6376 section 3.5).
	Domain string
	// Selector is the s= tag, the name of the key within the domain.
	Selector string
	// Signer is the private key: an *rsa.PrivateKey of at least 1024
	// bits or an ed25519.PrivateKey (RFC 8463).
	Signer crypto.Signer
}

// LoadKey reads a PEM private key for domain and selector from the file at
// path. See [ParseKey] for the formats.
func LoadKey(domain, selector, path string) (Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("dkim: key for %s: %w", domain, err)
	}
	k, err := ParseKey(domain, selector, data)
	if err != nil {
		return Key{}, fmt.Errorf("%w (file %s)", err, path)
	}
	return k, nil
}

// ParseKey parses a PEM private key for domain and selector: a "PRIVATE
// KEY" block (PKCS #8, RSA or Ed25519, as written by "openssl genpkey") or
// an "RSA PRIVATE KEY" block (PKCS #1, as written by "openssl genrsa" and
// opendkim-genkey).
func ParseKey(domain, selector string, pemData []byte) (Key, error) {
	k := Key{Domain: domain, Selector: selector}
	if err := k.validateNames(); err != nil {
		return Key{}, err
	}
	block, _ := pem.Decode(pemData)
	if block == nil {
		return Key{}, fmt.Errorf("dkim: key for %s: no PEM block", domain)
	}
	var parsed any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return Key{}, fmt.Errorf("dkim: key for %s: PEM block %q, want PRIVATE KEY or RSA PRIVATE KEY", domain, block.Type)
	}
	if err != nil {
		return Key{}, fmt.Errorf("dkim: key for %s: %w", domain, err)
	}
	signer, ok := parsed.(crypto.Signer)
	if !ok {
		return Key{}, fmt.Errorf("dkim: key for %s: %T is not a signing key", domain, parsed)
	}
	k.Signer = signer
	if err := k.validate(); err != nil {
		return Key{}, err
	}
	return k, nil
}

// validateNames checks the domain and selector are DNS names.
func (k Key) validateNames() error {
	if k.Domain == "" || k.Selector == "" {
		return fmt.Errorf("dkim: key needs a domain and a selector (got %q and %q)", k.Domain, k.Selector)
	}
	if _, ok := dns.IsDomainName(k.Domain); !ok || strings.ContainsAny(k.Domain, " ;=") {
		return fmt.Errorf("dkim: key domain %q is not a domain name", k.Domain)
	}
	if _, ok := dns.IsDomainName(k.Selector); !ok || strings.ContainsAny(k.Selector, " ;=") {
		return fmt.Errorf("dkim: key selector %q is not a DNS label sequence", k.Selector)
	}
	return nil
}

// validate checks the whole key: names, algorithm and size.
func (k Key) validate() error {
	if err := k.validateNames(); err != nil {
		return err
	}
	if k.Signer == nil {
		return fmt.Errorf("dkim: key for %s: no private key", k.Domain)
	}
	switch pub := k.Signer.Public().(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < minRSABits {
			return fmt.Errorf("dkim: key for %s: RSA key of %d bits, RFC 8301 requires at least %d", k.Domain, bits, minRSABits)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("dkim: key for %s: unsupported key type %T, want RSA or Ed25519", k.Domain, pub)
	}
	return nil
}

// RecordName returns the DNS name the public key is published under:
// "<selector>._domainkey.<domain>." (RFC 6376 section 3.6.2.1).
func (k Key) RecordName() string {
	return dns.Fqdn(k.Selector + "._domainkey." + strings.TrimSuffix(k.Domain, "."))
}

// Record returns the text of the TXT record that publishes the public key
// (RFC 6376 section 3.6.1): "v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo in
// base64>" for RSA, "v=DKIM1; k=ed25519; p=<32 bytes in base64>" for
// Ed25519 (RFC 8463 section 4). A DNS TXT string holds at most 255 bytes,
// so a long RSA record must be split into several strings of one record.
func (k Key) Record() (string, error) {
	if err := k.validate(); err != nil {
		return "", err
	}
	switch pub := k.Signer.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", fmt.Errorf("dkim: key for %s: %w", k.Domain, err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	}
	return "", errors.New("dkim: unreachable")
}
