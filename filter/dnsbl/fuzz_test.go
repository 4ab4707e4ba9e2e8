package dnsbl_test

import (
	"testing"

	"github.com/sluicemta/sluice/filter/dnsbl"
)

// FuzzParseRange: a range that parses is ordered, IPv4, and reads back to
// itself from its String.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"127.0.0.2", "127.0.0.2-127.0.0.11", "127.0.10.0/24", "0.0.0.0/0", "1.2.3.4-1.2.3.3", "::1", "127.0.0.1/33"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := dnsbl.ParseRange(s)
		if err != nil {
			return
		}
		if !r.First.Is4() || !r.Last.Is4() || r.Last.Less(r.First) {
			t.Fatalf("ParseRange(%q) = %v: not an ordered IPv4 range", s, r)
		}
		if !r.Contains(r.First) || !r.Contains(r.Last) {
			t.Fatalf("ParseRange(%q) = %v does not contain its ends", s, r)
		}
		back, err := dnsbl.ParseRange(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseRange(%q) = %v, but its String %q reads back as %v, %v", s, r, r.String(), back, err)
		}
	})
}
