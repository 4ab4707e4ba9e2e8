package smtp

import (
	"net/netip"
	"strings"
	"time"

	"github.com/sluicemta/sluice"
)

// maxLine is the longest header line we write, CRLF excluded (RFC 5322
// section 2.1.1: lines SHOULD be at most 78 characters).
const maxLine = 77

// receivedHeader returns the RFC 5321 section 4.4 trace field for env,
// folded, with its CRLF:
//
//	Received: from <helo> ([<ip>]) by <host> (sluice) with ESMTP[S]
//		for <rcpt>; <date>
//
// The "for" clause is given only for a single recipient, so the header
// does not disclose the other recipients of a message.
func receivedHeader(env *sluice.Envelope, host string, now time.Time) string {
	helo := token(env.Client.Helo)
	if helo == "" {
		helo = "unknown"
	}
	proto := "ESMTP"
	if env.Client.TLS {
		proto = "ESMTPS"
	}
	words := make([]string, 0, 16) // room for the date's words too
	words = append(words, "from", helo, "("+addressLiteral(env.Client.Addr.Addr())+")",
		"by", host, "(sluice)", "with", proto)
	if len(env.Recipients) == 1 {
		words = append(words, "for", "<"+token(env.Recipients[0].Address)+">")
	}
	words[len(words)-1] += ";"
	for f := range strings.FieldsSeq(now.Format(time.RFC1123Z)) {
		words = append(words, f)
	}
	return fold("Received:", words)
}

// addressLiteral is the RFC 5321 address literal of a: "[192.0.2.1]",
// "[IPv6:2001:db8::1]" or "unknown".
func addressLiteral(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "unknown"
	case a.Is4():
		return "[" + a.String() + "]"
	}
	return "[IPv6:" + a.String() + "]"
}

// formatHeader returns the header field "name: value" folded with its
// CRLF, or false if name is not a valid field name (RFC 5322 section 3.6.8:
// printable ASCII except colon). Line breaks in value are unfolded first.
func formatHeader(name, value string) (string, bool) {
	if name == "" {
		return "", false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return "", false
		}
	}
	return fold(name+":", strings.Fields(sanitize(value))), true
}

// fold joins the words after the field name, breaking lines at word
// boundaries so that they stay within maxLine; a single word too long for
// a line is not broken.
func fold(name string, words []string) string {
	size := len(name) + len("\r\n")
	for _, w := range words {
		size += len("\r\n\t") + len(w) // at most, with a fold before every word
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteString(name)
	lineLen := len(name)
	for _, w := range words {
		if lineLen+1+len(w) > maxLine && lineLen > 1 {
			b.WriteString("\r\n\t")
			lineLen = 1
		} else {
			b.WriteByte(' ')
			lineLen++
		}
		b.WriteString(w)
		lineLen += len(w)
	}
	b.WriteString("\r\n")
	return b.String()
}

// sanitize replaces control characters (CR and LF included) with spaces
// or '?', so client-supplied text cannot inject header lines.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\r' || r == '\n':
			return ' '
		case r < ' ' || r == 0x7f:
			return '?'
		}
		return r
	}, s)
}

// token replaces spaces and control characters with '?', so
// client-supplied text stays one word of a header field.
func token(s string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
