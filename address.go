package sluice

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Size limits of RFC 5321 section 4.5.3.1.
const (
	MaxLocalPartLen = 64  // octets in a local-part
	MaxDomainLen    = 255 // octets in a domain
	MaxPathLen      = 256 // octets in a reverse- or forward-path, brackets included
)

// ErrInvalidAddress is wrapped by every syntax error of [ParseMailbox].
var ErrInvalidAddress = errors.New("invalid address")

// Mailbox is an address split into its RFC 5321 parts.
type Mailbox struct {
	Local  string // the local-part as written (quotes kept)
	Domain string // a domain name or an address literal such as "[192.0.2.1]"
}

// String joins the parts as local@domain.
func (m Mailbox) String() string { return m.Local + "@" + m.Domain }

// ParseMailbox parses s as an RFC 5321 Mailbox (local@domain, no angle
// brackets). With allowUTF8 set, the RFC 6531 (SMTPUTF8) forms are accepted
// as well. Errors wrap [ErrInvalidAddress].
func ParseMailbox(s string, allowUTF8 bool) (Mailbox, error) {
	bad := func(why string) (Mailbox, error) {
		return Mailbox{}, fmt.Errorf("%w %q: %s", ErrInvalidAddress, s, why)
	}
	if len(s)+2 > MaxPathLen {
		return bad("longer than 256 octets")
	}
	if !utf8.ValidString(s) {
		return bad("not valid UTF-8")
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return bad("no @")
	}
	local, domain := s[:at], s[at+1:]
	if err := checkLocalPart(local, allowUTF8); err != nil {
		return bad(err.Error())
	}
	if strings.HasPrefix(domain, "[") {
		if err := checkAddressLiteral(domain); err != nil {
			return bad(err.Error())
		}
	} else if err := CheckDomain(domain, allowUTF8); err != nil {
		return bad(err.Error())
	}
	return Mailbox{Local: local, Domain: domain}, nil
}

// ParsePath parses an RFC 5321 Reverse-path or Forward-path in angle
// brackets. A source route ("<@a,@b:user@c>") is discarded. The null path
// "<>" yields the empty string and no error; whether it is acceptable is
// the caller's decision (it is only valid as a reverse-path).
func ParsePath(s string, allowUTF8 bool) (string, error) {
	if len(s) < 2 || s[0] != '<' || s[len(s)-1] != '>' {
		return "", fmt.Errorf("%w %q: path must be in angle brackets", ErrInvalidAddress, s)
	}
	if len(s) > MaxPathLen {
		return "", fmt.Errorf("%w %q: longer than 256 octets", ErrInvalidAddress, s)
	}
	inner := s[1 : len(s)-1]
	if inner == "" {
		return "", nil
	}
	if inner[0] == '@' {
		colon := strings.IndexByte(inner, ':')
		if colon < 0 {
			return "", fmt.Errorf("%w %q: source route without ':'", ErrInvalidAddress, s)
		}
		inner = inner[colon+1:]
	}
	m, err := ParseMailbox(inner, allowUTF8)
	if err != nil {
		return "", err
	}
	return m.String(), nil
}

// Domain returns the lower-cased domain part of addr (after the last '@'),
// or "" if addr has none. It does no validation.
func Domain(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return strings.ToLower(addr[at+1:])
}

func checkLocalPart(local string, allowUTF8 bool) error {
	switch {
	case local == "":
		return errors.New("empty local-part")
	case len(local) > MaxLocalPartLen:
		return errors.New("local-part longer than 64 octets")
	case local[0] == '"':
		return checkQuotedString(local, allowUTF8)
	}
	for atom := range strings.SplitSeq(local, ".") {
		if atom == "" {
			return errors.New("empty atom in local-part (leading, trailing or double dot)")
		}
		for _, r := range atom {
			if !isAtext(r, allowUTF8) {
				return fmt.Errorf("character %q not allowed in local-part", r)
			}
		}
	}
	return nil
}

// isAtext reports whether r is atext (RFC 5322 section 3.2.3), extended by
// RFC 6531 with non-ASCII UTF-8.
func isAtext(r rune, allowUTF8 bool) bool {
	switch {
	case r >= 0x80:
		return allowUTF8
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return true
	}
	return strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r)
}

func checkQuotedString(q string, allowUTF8 bool) error {
	if len(q) < 2 || q[len(q)-1] != '"' {
		return errors.New("unterminated quoted local-part")
	}
	body := q[1 : len(q)-1]
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '\\':
			i++
			if i >= len(body) || body[i] < 32 || body[i] > 126 {
				return errors.New("bad quoted-pair in local-part")
			}
		case c == '"':
			return errors.New("unescaped quote in local-part")
		case c >= 0x80:
			if !allowUTF8 {
				return errors.New("non-ASCII in local-part without SMTPUTF8")
			}
		case c < 32 || c == 127:
			return fmt.Errorf("control character %#x in local-part", c)
		}
	}
	return nil
}

// CheckDomain reports whether d is a syntactically valid domain name per
// RFC 5321 (sub-domain *("." sub-domain), letters, digits and hyphens, no
// leading or trailing hyphen), with U-labels allowed when allowUTF8 is set.
// A single trailing dot is not allowed.
func CheckDomain(d string, allowUTF8 bool) error {
	if d == "" {
		return errors.New("empty domain")
	}
	if len(d) > MaxDomainLen {
		return errors.New("domain longer than 255 octets")
	}
	for label := range strings.SplitSeq(d, ".") {
		if err := checkLabel(label, allowUTF8); err != nil {
			return err
		}
	}
	return nil
}

func checkLabel(label string, allowUTF8 bool) error {
	if label == "" {
		return errors.New("empty label in domain")
	}
	if len(label) > 63 {
		return errors.New("domain label longer than 63 octets")
	}
	if label[0] == '-' || label[len(label)-1] == '-' {
		return fmt.Errorf("domain label %q starts or ends with a hyphen", label)
	}
	for _, r := range label {
		ok := r == '-' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' ||
			(allowUTF8 && r >= 0x80)
		if !ok {
			return fmt.Errorf("character %q not allowed in domain", r)
		}
	}
	return nil
}

func checkAddressLiteral(lit string) error {
	if !strings.HasSuffix(lit, "]") {
		return errors.New("unterminated address literal")
	}
	inner := lit[1 : len(lit)-1]
	if v6, ok := strings.CutPrefix(inner, "IPv6:"); ok {
		a, err := netip.ParseAddr(v6)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return fmt.Errorf("bad IPv6 address literal %q", lit)
		}
		return nil
	}
	a, err := netip.ParseAddr(inner)
	if err != nil || !a.Is4() {
		return fmt.Errorf("bad IPv4 address literal %q", lit)
	}
	return nil
}
