package main

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/queue"
	"github.com/sluicemta/sluice/smtp"
)

// exampleConfigs are the configurations shipped to operators, and the
// empty one (every default).
func exampleConfigs(t *testing.T) map[string]*settings {
	t.Helper()
	configs := map[string]*settings{"(defaults)": {}}
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.toml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configurations in docs/ (%v)", err)
	}
	for _, f := range files {
		s, err := loadConfig(f)
		if err != nil {
			t.Fatal(err)
		}
		configs[f] = s
	}
	return configs
}

// serveSMTP serves sluice serve's SMTP acceptor for the settings s, with
// extra options after its own, on 127.0.0.1:0 and a queue in a temporary
// spool, until the test ends; it returns the listener's address.
func serveSMTP(t *testing.T, s *settings, extra ...smtp.Option) string {
	t.Helper()
	s.spool = t.TempDir()
	q, err := queue.New(s.spool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	opts, _, err := smtpOptions(s, q, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := smtp.New(q, append(opts, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	return l.Addr().String()
}

// TestNoOpenRelay: in the default configuration and in every example, a
// client outside the trusted networks, not authenticated, cannot relay to
// a foreign domain. The test client claims an outside address
// (198.51.100.1) through a PROXY header, the one way a loopback client can
// look like an outsider.
func TestNoOpenRelay(t *testing.T) {
	for name, s := range exampleConfigs(t) {
		t.Run(name, func(t *testing.T) {
			for _, p := range s.trustedNetworks {
				if p.Bits() == 0 {
					t.Errorf("trusted network %v trusts the whole Internet", p)
				}
			}
			addr := serveSMTP(t, s, smtp.WithProxyNetworks(netip.MustParsePrefix("127.0.0.0/8")), smtp.WithHostname("mx.test"))
			nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(nc)
			io.WriteString(nc, "PROXY TCP4 198.51.100.1 192.0.2.1 40000 25\r\n")
			for _, st := range []struct{ send, want string }{
				{"", "220 "},
				{"EHLO outside.test", "250 "},
				{"MAIL FROM:<spammer@example.org>", "250 "},
				{"RCPT TO:<victim@foreign.example>", "554 5.7.1 "},
			} {
				if st.send != "" {
					io.WriteString(nc, st.send+"\r\n")
				}
				var line string
				for {
					if line, err = r.ReadString('\n'); err != nil || len(line) < 4 || line[3] != '-' {
						break
					}
				}
				if !strings.HasPrefix(line, st.want) {
					t.Fatalf("after %q got %q (%v), want %q", st.send, line, err, st.want)
				}
			}
		})
	}
}
