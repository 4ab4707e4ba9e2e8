package main

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/sluicemta/sluice/health"
)

// With a proxy on the same host (proxy_networks holding loopback), the
// SMTP listener wants a PROXY header from the readiness probe too: the
// probe sends "PROXY UNKNOWN", or /readyz would stay 503 for good.
func TestReadinessProbeBehindLocalProxy(t *testing.T) {
	s, err := parseConfig("t.toml", []byte("[smtp]\nproxy_networks = [\"127.0.0.1/32\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveSMTP(t, s)
	l, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if !probeIsProxy(l, s.proxyNetworks) {
		t.Fatal("probeIsProxy: false for a listener on 127.0.0.1 with 127.0.0.1/32 a proxy network")
	}
	if err := health.SMTPProbeBehindProxy(addr, probeTimeout).Check(context.Background()); err != nil {
		t.Errorf("readiness probe of a healthy server behind a local proxy: %v", err)
	}
}

func TestProbeIsProxy(t *testing.T) {
	nets := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	for _, tc := range []struct {
		listen string
		want   bool
	}{
		{"127.0.0.1:25", true},
		{"0.0.0.0:25", true}, // the probe comes from 127.0.0.1
		{"[::]:25", false},   // from ::1
		{"192.0.2.1:25", false},
	} {
		addr, err := net.ResolveTCPAddr("tcp", tc.listen)
		if err != nil {
			t.Fatal(err)
		}
		if got := probeIsProxy(addr, nets); got != tc.want {
			t.Errorf("probeIsProxy(%s) = %v, want %v", tc.listen, got, tc.want)
		}
	}
}
