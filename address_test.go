package sluice

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseMailbox(t *testing.T) {
	long := strings.Repeat("a", 65)
	tests := []struct {
		in      string
		utf8    bool
		wantErr bool
	}{
		{"user@example.com", false, false},
		{"first.last+tag@sub.example.co.uk", false, false},
		{"!#$%&'*+-/=?^_`{|}~@example.com", false, false},
		{`"john doe"@example.com`, false, false},
		{`"a\"b"@example.com`, false, false},
		{"user@[192.0.2.1]", false, false},
		{"user@[IPv6:2001:db8::1]", false, false},
		{"用户@例子.广告", true, false},
		{"用户@例子.广告", false, true},
		{"user@例子.广告", false, true},
		{"", false, true},
		{"user", false, true},
		{"@example.com", false, true},
		{"user@", false, true},
		{".user@example.com", false, true},
		{"us..er@example.com", false, true},
		{"user.@example.com", false, true},
		{"us er@example.com", false, true},
		{"user@exa mple.com", false, true},
		{"user@-example.com", false, true},
		{"user@example-.com", false, true},
		{"user@example..com", false, true},
		{"user@example.com.", false, true},
		{"user@[300.0.0.1]", false, true},
		{"user@[IPv6:192.0.2.1]", false, true},
		{"user@[192.0.2.1", false, true},
		{long + "@example.com", false, true},
		{"u@" + strings.Repeat("a", 64) + ".com", false, true},
		{"u@" + strings.Repeat("abcdefghi.", 26) + "com", false, true},
		{`"unterminated@example.com`, false, true},
		{"user\x00@example.com", false, true},
		{"\xff@example.com", true, true},
	}
	for _, tc := range tests {
		m, err := ParseMailbox(tc.in, tc.utf8)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseMailbox(%q, %v) error = %v, want error %v", tc.in, tc.utf8, err, tc.wantErr)
			continue
		}
		if err != nil && !errors.Is(err, ErrInvalidAddress) {
			t.Errorf("ParseMailbox(%q) error %v does not wrap ErrInvalidAddress", tc.in, err)
		}
		if err == nil && m.String() != tc.in {
			t.Errorf("ParseMailbox(%q).String() = %q", tc.in, m.String())
		}
	}
}

func TestParsePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"<user@example.com>", "user@example.com"},
		{"<>", ""},
		{"<@relay.example,@other.example:user@example.com>", "user@example.com"},
	}
	for _, tc := range tests {
		got, err := ParsePath(tc.in, false)
		if err != nil || got != tc.want {
			t.Errorf("ParsePath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"user@example.com", "<user@example.com", "<@relay:>", "<bad>", "<@relay user@example.com>"} {
		if got, err := ParsePath(bad, false); err == nil {
			t.Errorf("ParsePath(%q) = %q, want an error", bad, got)
		}
	}
}

func TestDomain(t *testing.T) {
	for in, want := range map[string]string{
		"user@Example.COM": "example.com", `"a@b"@c.example`: "c.example", "nodomain": "",
	} {
		if got := Domain(in); got != want {
			t.Errorf("Domain(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseMailbox checks the parser's contract on arbitrary input: an
// accepted address splits at its last '@' into parts that rebuild it,
// respects the RFC 5321 size limits, and is ASCII unless UTF-8 was allowed.
func FuzzParseMailbox(f *testing.F) {
	for _, s := range []string{"user@example.com", `"a b"@example.com`, "u@[IPv6:::1]", "用户@例子.广告", "a@b", ".@."} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, allowUTF8 bool) {
		m, err := ParseMailbox(s, allowUTF8)
		if err != nil {
			return
		}
		if m.String() != s || strings.Contains(m.Domain, "@") {
			t.Fatalf("ParseMailbox(%q) = %+v: parts do not rebuild the input", s, m)
		}
		if len(m.Local) > MaxLocalPartLen || len(m.Domain) > MaxDomainLen || len(s)+2 > MaxPathLen {
			t.Fatalf("ParseMailbox(%q) accepted an address over the size limits", s)
		}
		if !utf8.ValidString(s) {
			t.Fatalf("ParseMailbox(%q) accepted invalid UTF-8", s)
		}
		if !allowUTF8 {
			for i := 0; i < len(s); i++ {
				if s[i] >= 0x80 {
					t.Fatalf("ParseMailbox(%q, false) accepted non-ASCII", s)
				}
			}
		}
		if _, err := ParsePath("<"+s+">", allowUTF8); err != nil {
			t.Fatalf("ParsePath rejects <%s> that ParseMailbox accepts: %v", s, err)
		}
	})
}
