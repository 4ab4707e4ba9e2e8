package smtp

import (
	"net/netip"
	"testing"
)

// TestDNSBLName uses the examples of RFC 5782 section 2.1 and 2.4.
func TestDNSBLName(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.99", "99.2.0.192.bl.test."},
		{"::ffff:192.0.2.99", "99.2.0.192.bl.test."},
		{"2001:db8:1:2:3:4:567:89ab", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test."},
	} {
		if got := dnsblName(netip.MustParseAddr(tc.addr), "bl.test"); got != tc.want {
			t.Errorf("dnsblName(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}
