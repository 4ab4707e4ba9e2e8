package main

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/sluicemta/sluice/health"
	"github.com/sluicemta/sluice/queue"
	"github.com/sluicemta/sluice/smtp"
)

// With a proxy on the same host (proxy_networks holding loopback), the
// SMTP listener wants a PROXY header from the readiness probe too: the
// probe sends "PROXY UNKNOWN", or /readyz would stay 503 for good.
func TestReadinessProbeBehindLocalProxy(t *testing.T) {
	s, err := parseConfig("t.toml", []byte("[smtp]\nproxy_networks = [\"127.0.0.1/32\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	opts, _, err := smtpOptions(s, q, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := smtp.New(q, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	if !probeIsProxy(l.Addr(), s.proxyNetworks) {
		t.Fatal("probeIsProxy: false for a listener on 127.0.0.1 with 127.0.0.1/32 a proxy network")
	}
	if err := health.SMTPProbeBehindProxy(l.Addr().String(), probeTimeout).Check(context.Background()); err != nil {
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
