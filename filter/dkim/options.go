package dkim

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sluicemta/sluice"
)

// Option configures a [Signer].
type Option func(*config)

// Canonicalization is a DKIM canonicalization algorithm (RFC 6376 section
// 3.4): how much a message may be reformatted in transit and still verify.
type Canonicalization string

// The canonicalization algorithms.
const (
	// Simple tolerates almost no change.
	Simple Canonicalization = "simple"
	// Relaxed tolerates changes of whitespace and header folding.
	Relaxed Canonicalization = "relaxed"
)

// DefaultHeaders are the header fields signed by default, when the message
// has them: those RFC 6376 section 5.4.1 recommends, plus Message-ID, the
// MIME fields (RFC 2045) and List-Unsubscribe-Post, which RFC 8058 section
// 4 requires to be signed.
var DefaultHeaders = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc",
	"Resent-Date", "Resent-From", "Resent-To", "Resent-Cc",
	"In-Reply-To", "References", "Message-ID",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post",
	"List-Subscribe", "List-Post", "List-Owner", "List-Archive",
}

// DefaultOversigned are the header fields signed once more than the
// message has them, by default, so that adding one more (a second From or
// Subject, which many mail readers would show) breaks the signature
// (RFC 6376 sections 5.4.2 and 8.15).
var DefaultOversigned = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"MIME-Version", "Content-Type", "List-Unsubscribe", "List-Unsubscribe-Post",
}

// neverSigned are the fields RFC 6376 section 5.4.1 says SHOULD NOT be
// signed: trace fields are added in transit.
var neverSigned = []string{"Return-Path", "Received", "DKIM-Signature"}

type config struct {
	headers    []string
	oversigned []string
	bodyCanon  Canonicalization
	expiration time.Duration
	signIf     func(*sluice.Envelope) bool
	logger     *slog.Logger
}

func defaultConfig() config {
	return config{
		headers:    slices.Clone(DefaultHeaders),
		oversigned: slices.Clone(DefaultOversigned),
		bodyCanon:  Relaxed,
		signIf:     Authenticated,
		logger:     slog.New(slog.DiscardHandler),
	}
}

// WithHeaders sets the header fields to sign, when the message has them.
// "From" must be one of them; "Received", "Return-Path" and
// "DKIM-Signature" cannot be.
// Default: [DefaultHeaders].
func WithHeaders(names ...string) Option {
	return func(c *config) { c.headers = append([]string(nil), names...) }
}

// WithOversigned sets the header fields listed once more in the signature
// than the message has them, so that none can be added. A name needs not be
// in [WithHeaders]' list.
// Default: [DefaultOversigned].
func WithOversigned(names ...string) Option {
	return func(c *config) { c.oversigned = append([]string(nil), names...) }
}

// WithBodyCanonicalization sets the body canonicalization. The header
// canonicalization is always [Relaxed]: the receiver (sluice's acceptor
// among them) refolds the DKIM-Signature field it prepends, which
// "simple" would not survive.
// Default: [Relaxed].
func WithBodyCanonicalization(c Canonicalization) Option {
	return func(cfg *config) { cfg.bodyCanon = c }
}

// WithExpiration makes signatures expire d after signing (the x= tag,
// RFC 6376 section 3.5); zero means they do not expire.
// Default: 0.
func WithExpiration(d time.Duration) Option { return func(c *config) { c.expiration = d } }

// WithSignIf sets which messages are signed: those for which pred returns
// true (and whose From domain has a key). Signing mail from anyone would
// lend the domain's name to forgeries that arrive from outside, so only
// submissions should be signed. See [Authenticated], [FromNetworks] and
// [Always].
// Default: [Authenticated].
func WithSignIf(pred func(*sluice.Envelope) bool) Option {
	return func(c *config) { c.signIf = pred }
}

// WithLogger sets the logger for messages left unsigned and signing
// failures.
// Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// Authenticated reports whether the client of env authenticated (SMTP
// AUTH, RFC 4954).
func Authenticated(env *sluice.Envelope) bool { return env != nil && env.Client.AuthUser != "" }

// Always reports true: every message with a From domain that has a key is
// signed. Use it only where every client is trusted.
func Always(*sluice.Envelope) bool { return true }

// FromNetworks returns a predicate that is true for clients that
// authenticated or connect from one of prefixes (application servers
// relaying through sluice, say).
func FromNetworks(prefixes ...netip.Prefix) func(*sluice.Envelope) bool {
	nets := append([]netip.Prefix(nil), prefixes...)
	return func(env *sluice.Envelope) bool {
		if Authenticated(env) {
			return true
		}
		if env == nil {
			return false
		}
		addr := env.Client.Addr.Addr().Unmap()
		for _, p := range nets {
			if p.Contains(addr) {
				return true
			}
		}
		return false
	}
}

func (c *config) validate() error {
	switch {
	case c.bodyCanon != Simple && c.bodyCanon != Relaxed:
		return fmt.Errorf("dkim: body canonicalization %q, want %q or %q", c.bodyCanon, Simple, Relaxed)
	case c.expiration < 0:
		return fmt.Errorf("dkim: expiration %v is negative", c.expiration)
	case c.signIf == nil:
		return fmt.Errorf("dkim: nil sign predicate")
	case c.logger == nil:
		return fmt.Errorf("dkim: nil logger")
	}
	for _, name := range append(append([]string(nil), c.headers...), c.oversigned...) {
		if !validFieldName(name) {
			return fmt.Errorf("dkim: header field name %q is not valid", name)
		}
		for _, never := range neverSigned {
			if strings.EqualFold(name, never) {
				return fmt.Errorf("dkim: header field %s must not be signed (RFC 6376 section 5.4.1)", name)
			}
		}
	}
	if !containsFold(c.headers, "From") {
		return fmt.Errorf("dkim: the signed headers must include From (RFC 6376 section 5.4)")
	}
	return nil
}

// validFieldName reports whether name is an RFC 5322 section 3.6.8 field
// name: printable ASCII except colon.
func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
