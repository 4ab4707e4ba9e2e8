package smtp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// The PROXY protocol (HAProxy's, versions 1 and 2) lets a load balancer
// pass on the address of the client it forwards. The parser is strict: a
// header must be complete and exact, or the connection is closed.

// proxyV2Sig starts every version 2 header.
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	proxyV1Max = 107 // the longest version 1 line, CRLF included
	proxyV2Max = 16 + 2048
)

// proxyHeader is what a PROXY header says. When local is set (version 2
// LOCAL, or version 1 UNKNOWN) the connection is the balancer's own, a
// health check for example, and the addresses are not set.
type proxyHeader struct {
	src, dst netip.AddrPort
	local    bool
}

// errProxy wraps every header error.
var errProxy = errors.New("smtp: bad PROXY protocol header")

// readProxyHeader reads one PROXY header from r, and not a byte more, so
// what follows (a TLS ClientHello) stays unread.
func readProxyHeader(r io.Reader) (proxyHeader, error) {
	var first [1]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		return proxyHeader{}, fmt.Errorf("%w: %w", errProxy, err)
	}
	switch first[0] {
	case 'P':
		return readProxyV1(r)
	case proxyV2Sig[0]:
		return readProxyV2(r)
	}
	return proxyHeader{}, fmt.Errorf("%w: starts with %q", errProxy, first[0])
}

// readProxyV1 reads the rest of "PROXY TCP4 192.0.2.1 192.0.2.2 1234 25\r\n"
// byte by byte, the 'P' already read.
func readProxyV1(r io.Reader) (proxyHeader, error) {
	line := []byte{'P'}
	var b [1]byte
	for !bytes.HasSuffix(line, []byte("\r\n")) {
		if len(line) >= proxyV1Max {
			return proxyHeader{}, fmt.Errorf("%w: version 1 line longer than %d octets", errProxy, proxyV1Max)
		}
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return proxyHeader{}, fmt.Errorf("%w: %w", errProxy, err)
		}
		line = append(line, b[0])
	}
	return parseProxyV1(string(line[:len(line)-2]))
}

func parseProxyV1(line string) (proxyHeader, error) {
	bad := func(why string) (proxyHeader, error) {
		return proxyHeader{}, fmt.Errorf("%w: version 1: %s", errProxy, why)
	}
	f := strings.Split(line, " ")
	if f[0] != "PROXY" || len(f) < 2 {
		return bad("not a PROXY line")
	}
	if f[1] == "UNKNOWN" {
		if strings.ContainsAny(line, "\r\n") {
			return bad("CR or LF in the line")
		}
		return proxyHeader{local: true}, nil
	}
	if len(f) != 6 {
		return bad("want PROXY TCP4|TCP6 src dst sport dport")
	}
	src, err1 := netip.ParseAddr(f[2])
	dst, err2 := netip.ParseAddr(f[3])
	sp, err3 := parsePort(f[4])
	dp, err4 := parsePort(f[5])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return bad(err.Error())
	}
	want4 := f[1] == "TCP4"
	switch {
	case f[1] != "TCP4" && f[1] != "TCP6":
		return bad("unknown protocol " + strconv.Quote(f[1]))
	case src.String() != f[2] || dst.String() != f[3]:
		return bad("address not in canonical form")
	case src.Is4() != want4 || dst.Is4() != want4:
		return bad("address family does not match " + f[1])
	}
	return proxyHeader{src: netip.AddrPortFrom(src, sp), dst: netip.AddrPortFrom(dst, dp)}, nil
}

// parsePort accepts 0 to 65535 in decimal, without sign or leading zeros.
func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(n), nil
}

// formatProxyV1 is the version 1 line of h, CRLF included (tests and
// fuzzing check that parsing is its inverse).
func formatProxyV1(h proxyHeader) string {
	if h.local {
		return "PROXY UNKNOWN\r\n"
	}
	proto := "TCP6"
	if h.src.Addr().Is4() {
		proto = "TCP4"
	}
	return fmt.Sprintf("PROXY %s %s %s %d %d\r\n", proto, h.src.Addr(), h.dst.Addr(), h.src.Port(), h.dst.Port())
}

// readProxyV2 reads a binary header, its first byte already read.
func readProxyV2(r io.Reader) (proxyHeader, error) {
	var hdr [16]byte
	hdr[0] = proxyV2Sig[0]
	if _, err := io.ReadFull(r, hdr[1:]); err != nil {
		return proxyHeader{}, fmt.Errorf("%w: %w", errProxy, err)
	}
	if !bytes.Equal(hdr[:12], proxyV2Sig) {
		return proxyHeader{}, fmt.Errorf("%w: bad version 2 signature", errProxy)
	}
	n := int(binary.BigEndian.Uint16(hdr[14:16]))
	if 16+n > proxyV2Max {
		return proxyHeader{}, fmt.Errorf("%w: version 2 header of %d octets", errProxy, 16+n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return proxyHeader{}, fmt.Errorf("%w: %w", errProxy, err)
	}
	return parseProxyV2(hdr[12], hdr[13], body)
}

// parseProxyV2 decodes the version/command byte, the family/protocol byte
// and the address block; TLVs after the addresses are ignored.
func parseProxyV2(verCmd, famProto byte, body []byte) (proxyHeader, error) {
	bad := func(why string) (proxyHeader, error) {
		return proxyHeader{}, fmt.Errorf("%w: version 2: %s", errProxy, why)
	}
	if verCmd>>4 != 2 {
		return bad(fmt.Sprintf("version %d", verCmd>>4))
	}
	switch verCmd & 0xf {
	case 0: // LOCAL: the balancer's own connection
		return proxyHeader{local: true}, nil
	case 1: // PROXY
	default:
		return bad(fmt.Sprintf("command %d", verCmd&0xf))
	}
	var size int
	switch famProto {
	case 0x00: // UNSPEC: addresses unknown
		return proxyHeader{local: true}, nil
	case 0x11: // TCP over IPv4
		size = 4
	case 0x21: // TCP over IPv6
		size = 16
	default:
		return bad(fmt.Sprintf("family and protocol 0x%02x (want TCP over IPv4 or IPv6)", famProto))
	}
	if len(body) < 2*size+4 {
		return bad("address block too short")
	}
	src, _ := netip.AddrFromSlice(body[:size])
	dst, _ := netip.AddrFromSlice(body[size : 2*size])
	sp := binary.BigEndian.Uint16(body[2*size:])
	dp := binary.BigEndian.Uint16(body[2*size+2:])
	return proxyHeader{src: netip.AddrPortFrom(src.Unmap(), sp), dst: netip.AddrPortFrom(dst.Unmap(), dp)}, nil
}
