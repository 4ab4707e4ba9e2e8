package smtp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func proxyV2(cmd, fam byte, addrs []byte) []byte {
	b := append([]byte{}, proxyV2Sig...)
	b = append(b, 0x20|cmd, fam, 0, 0)
	binary.BigEndian.PutUint16(b[14:], uint16(len(addrs)))
	return append(b, addrs...)
}

func TestReadProxyHeader(t *testing.T) {
	v4 := []byte{192, 0, 2, 7, 192, 0, 2, 1, 0x0f, 0xa0, 0, 25}
	v6 := append(append(netip.MustParseAddr("2001:db8::7").AsSlice(), netip.MustParseAddr("2001:db8::1").AsSlice()...), 0x0f, 0xa0, 0, 25)
	src4 := netip.MustParseAddrPort("192.0.2.7:4000")
	src6 := netip.MustParseAddrPort("[2001:db8::7]:4000")
	tests := []struct {
		name string
		in   string
		want proxyHeader
		bad  string // part of the error, if one is expected
	}{
		{"v1 TCP4", "PROXY TCP4 192.0.2.7 192.0.2.1 4000 25\r\n", proxyHeader{src: src4, dst: netip.MustParseAddrPort("192.0.2.1:25")}, ""},
		{"v1 TCP6", "PROXY TCP6 2001:db8::7 2001:db8::1 4000 25\r\n", proxyHeader{src: src6, dst: netip.MustParseAddrPort("[2001:db8::1]:25")}, ""},
		{"v1 UNKNOWN", "PROXY UNKNOWN\r\n", proxyHeader{local: true}, ""},
		{"v1 UNKNOWN with addresses", "PROXY UNKNOWN 1 2 3 4\r\n", proxyHeader{local: true}, ""},
		{"v2 TCP4", string(proxyV2(1, 0x11, v4)), proxyHeader{src: src4, dst: netip.MustParseAddrPort("192.0.2.1:25")}, ""},
		{"v2 TCP6", string(proxyV2(1, 0x21, v6)), proxyHeader{src: src6, dst: netip.MustParseAddrPort("[2001:db8::1]:25")}, ""},
		{"v2 with TLVs", string(proxyV2(1, 0x11, append(v4, 0x04, 0, 1, 'x'))), proxyHeader{src: src4, dst: netip.MustParseAddrPort("192.0.2.1:25")}, ""},
		{"v2 LOCAL", string(proxyV2(0, 0, nil)), proxyHeader{local: true}, ""},
		{"SMTP instead", "EHLO client.test\r\n", proxyHeader{}, "starts with"},
		{"v1 LF only", "PROXY TCP4 192.0.2.7 192.0.2.1 4000 25\n", proxyHeader{}, "EOF"},
		{"v1 family mismatch", "PROXY TCP4 2001:db8::7 2001:db8::1 4000 25\r\n", proxyHeader{}, "family"},
		{"v1 leading zero port", "PROXY TCP4 192.0.2.7 192.0.2.1 04000 25\r\n", proxyHeader{}, "port"},
		{"v1 port too big", "PROXY TCP4 192.0.2.7 192.0.2.1 65536 25\r\n", proxyHeader{}, "port"},
		{"v1 double space", "PROXY TCP4  192.0.2.7 192.0.2.1 4000 25\r\n", proxyHeader{}, "want PROXY"},
		{"v1 UDP", "PROXY UDP4 192.0.2.7 192.0.2.1 4000 25\r\n", proxyHeader{}, "unknown protocol"},
		{"v1 too long", "PROXY TCP4 " + strings.Repeat("1", 200) + "\r\n", proxyHeader{}, "longer"},
		{"v1 truncated", "PROXY TCP4 192.0.2.7", proxyHeader{}, "EOF"},
		{"v2 bad signature", "\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x00", proxyHeader{}, "signature"},
		{"v2 version 3", string(append(proxyV2(1, 0x11, v4)[:12], 0x31, 0x11, 0, 12)) + string(v4), proxyHeader{}, "version 3"},
		{"v2 UDP", string(proxyV2(1, 0x12, v4)), proxyHeader{}, "family"},
		{"v2 short addresses", string(proxyV2(1, 0x11, v4[:8])), proxyHeader{}, "too short"},
		{"v2 truncated", string(proxyV2(1, 0x11, v4))[:20], proxyHeader{}, "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := strings.NewReader(tt.in + "after")
			got, err := readProxyHeader(r)
			if tt.bad != "" {
				if err == nil || !errors.Is(err, errProxy) || !strings.Contains(err.Error(), tt.bad) {
					t.Fatalf("error %v, want one containing %q", err, tt.bad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("header %+v, want %+v", got, tt.want)
			}
			if rest := r.Len(); rest != len("after") {
				t.Errorf("read %d octets past the header", len("after")-rest)
			}
		})
	}
}

// FuzzProxyHeader: any input is either refused or read as a header that
// uses at most the maximum size, never more than its own octets; a version
// 1 header reads back exactly as it was written.
func FuzzProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.7 192.0.2.1 4000 25\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::7 2001:db8::1 4000 25\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(proxyV2(1, 0x11, []byte{192, 0, 2, 7, 192, 0, 2, 1, 0x0f, 0xa0, 0, 25}))
	f.Add(proxyV2(0, 0, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := readProxyHeader(r)
		used := len(in) - r.Len()
		if err != nil {
			if !errors.Is(err, errProxy) {
				t.Fatalf("error %v does not wrap errProxy", err)
			}
			return
		}
		if used > proxyV2Max {
			t.Fatalf("header of %d octets accepted", used)
		}
		if !h.local && (!h.src.Addr().IsValid() || !h.dst.Addr().IsValid()) {
			t.Fatalf("header %+v without valid addresses", h)
		}
		if in[0] == 'P' && !h.local {
			if back := formatProxyV1(h); back != string(in[:used]) {
				t.Fatalf("read %q as %+v, which formats as %q", in[:used], h, back)
			}
		}
	})
}
