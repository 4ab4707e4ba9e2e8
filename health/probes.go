package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ProbeFunc checks the endpoint at addr by speaking its protocol; nil
// means healthy. addr is "host:port" for TCP or "unix:/path" for a Unix
// socket (see [SplitAddr]). A ProbeFunc must honour ctx: its deadline
// bounds the whole check, and cancelling it abandons the check.
type ProbeFunc func(ctx context.Context, addr string) error

// SplitAddr returns the network and address to dial for an endpoint
// address: "unix:/run/spamd.sock" is the Unix socket /run/spamd.sock, and
// anything else is a TCP "host:port".
func SplitAddr(addr string) (network, address string) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix", path
	}
	return "tcp", addr
}

// Dial connects to the endpoint addr (see [SplitAddr]) and bounds the
// connection by ctx: its deadline becomes the connection's deadline, and
// cancelling ctx closes the connection, so no read or write outlives it.
// Call the returned stop function when done with ctx's watch (it does not
// close the connection).
func Dial(ctx context.Context, addr string) (net.Conn, func() bool, error) {
	var d net.Dialer
	network, address := SplitAddr(addr)
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	// Closing the connection unblocks a read or write if ctx is cancelled
	// before its deadline (the caller gave up).
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	return conn, stop, nil
}

// TCPConnect returns a probe that only opens a TCP connection (or connects
// to a Unix socket). It cannot tell a server that accepts connections but
// never answers from a working one (seed 000): prefer a probe that speaks
// the protocol.
func TCPConnect() ProbeFunc {
	return func(ctx context.Context, addr string) error {
		conn, stop, err := Dial(ctx, addr)
		if err != nil {
			return fmt.Errorf("health: tcp probe %s: %w", addr, err)
		}
		stop()
		return conn.Close()
	}
}

// SMTPSession returns a probe that opens an SMTP session (RFC 5321): the
// server must greet with 220, answer "EHLO helo" with 250 and QUIT with
// 221.
func SMTPSession(helo string) ProbeFunc { return session("smtp", "EHLO", helo, false) }

// LMTPSession returns a probe that opens an LMTP session (RFC 2033): the
// server must greet with 220, answer "LHLO lhlo" with 250 and QUIT with
// 221.
func LMTPSession(lhlo string) ProbeFunc { return session("lmtp", "LHLO", lhlo, false) }

// SMTPSessionBehindProxy is [SMTPSession] for a server that expects a
// PROXY protocol header from the probe's address (it trusts that address
// as a proxy): the probe sends "PROXY UNKNOWN" first, a version 1 header
// that tells the server to take the connection's own addresses (the PROXY
// protocol, section 2.1).
func SMTPSessionBehindProxy(helo string) ProbeFunc { return session("smtp", "EHLO", helo, true) }

func session(proto, verb, name string, proxyHeader bool) ProbeFunc {
	if name == "" {
		name = "sluice-health-probe"
	}
	return func(ctx context.Context, addr string) error {
		if err := probeSession(ctx, addr, verb+" "+name, proxyHeader); err != nil {
			return fmt.Errorf("health: %s probe %s: %w", proto, addr, err)
		}
		return nil
	}
}

func probeSession(ctx context.Context, addr, hello string, proxyHeader bool) error {
	conn, stop, err := Dial(ctx, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer stop()
	if proxyHeader {
		if _, err := io.WriteString(conn, "PROXY UNKNOWN\r\n"); err != nil {
			return fmt.Errorf("PROXY header: %w", ctxErr(ctx, err))
		}
	}
	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return fmt.Errorf("greeting: %w", ctxErr(ctx, err))
	}
	if err := command(tp, hello, 250); err != nil {
		return ctxErr(ctx, err)
	}
	return ctxErr(ctx, command(tp, "QUIT", 221))
}

// SpamdPing returns a probe that speaks SpamAssassin's spamd protocol: it
// sends "PING SPAMC/1.5" and wants "SPAMD/1.x 0 PONG" back.
func SpamdPing() ProbeFunc {
	return func(ctx context.Context, addr string) error {
		if err := probeSpamd(ctx, addr); err != nil {
			return fmt.Errorf("health: spamd probe %s: %w", addr, err)
		}
		return nil
	}
}

func probeSpamd(ctx context.Context, addr string) error {
	conn, stop, err := Dial(ctx, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer stop()
	if _, err := io.WriteString(conn, "PING SPAMC/1.5\r\n\r\n"); err != nil {
		return ctxErr(ctx, err)
	}
	line, err := bufio.NewReader(io.LimitReader(conn, 512)).ReadString('\n')
	if err != nil {
		return ctxErr(ctx, fmt.Errorf("read PONG: %w", err))
	}
	f := strings.Fields(line)
	if len(f) != 3 || !strings.HasPrefix(f[0], "SPAMD/") || f[1] != "0" || f[2] != "PONG" {
		return fmt.Errorf("answer %q, want SPAMD/1.5 0 PONG", strings.TrimSpace(line))
	}
	return nil
}

// HTTPStatus returns a probe that sends "GET path" to the HTTP server at
// addr on a fresh connection and wants a 2xx status.
func HTTPStatus(path string) ProbeFunc {
	return httpProbe("http", path, nil)
}

// RspamdPing returns a probe that sends "GET /ping" to rspamd (its normal
// or controller worker) and wants 200 with the body "pong".
func RspamdPing() ProbeFunc {
	return httpProbe("rspamd", "/ping", func(body []byte) error {
		if strings.TrimSpace(string(body)) != "pong" {
			return fmt.Errorf("body %q, want pong", body)
		}
		return nil
	})
}

// httpProbe GETs path on a new connection each time, so a peer that died
// behind a kept-alive connection is noticed (seed 000).
func httpProbe(proto, path string, checkBody func([]byte) error) ProbeFunc {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			addr, _ := ctx.Value(endpointKey{}).(string)
			network, address := SplitAddr(addr)
			var d net.Dialer
			return d.DialContext(ctx, network, address)
		},
	}}
	return func(ctx context.Context, addr string) error {
		err := getHTTP(context.WithValue(ctx, endpointKey{}, addr), client, addr, path, checkBody)
		if err != nil {
			return fmt.Errorf("health: %s probe %s: %w", proto, addr, err)
		}
		return nil
	}
}

// endpointKey carries the endpoint address to the probe transport's
// dialer, so Unix sockets work behind an http:// URL.
type endpointKey struct{}

func getHTTP(ctx context.Context, client *http.Client, addr, path string, checkBody func([]byte) error) error {
	host := addr
	if network, _ := SplitAddr(addr); network == "unix" {
		host = "localhost"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: status %s", path, resp.Status)
	}
	if checkBody != nil {
		return checkBody(body)
	}
	return nil
}

// DNSQuery returns a probe that asks the resolver at addr (UDP) for the A
// records of name. Any answer with RCODE NOERROR or NXDOMAIN is healthy:
// the resolver works even if the name does not exist. SERVFAIL, REFUSED
// and silence are not.
func DNSQuery(name string) ProbeFunc {
	name = dns.Fqdn(name)
	return func(ctx context.Context, addr string) error {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		c := &dns.Client{Net: "udp"}
		r, _, err := c.ExchangeContext(ctx, m, addr)
		if err != nil {
			return fmt.Errorf("health: dns probe %s: %w", addr, ctxErr(ctx, err))
		}
		if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
			return fmt.Errorf("health: dns probe %s: %s for %s", addr, dns.RcodeToString[r.Rcode], name)
		}
		return nil
	}
}

// ctxErr names the context's error when err is the I/O failure that its
// deadline or cancellation caused, so a log says "deadline exceeded"
// rather than "use of closed network connection".
func ctxErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	cerr := ctx.Err()
	if cerr == nil && errors.Is(err, os.ErrDeadlineExceeded) {
		// The connection's deadline, which is ctx's, fired first.
		cerr = context.DeadlineExceeded
	}
	if cerr == nil || errors.Is(err, cerr) {
		return err
	}
	return fmt.Errorf("%w (%w)", cerr, err)
}

// SMTPProbe returns a Checker that opens an SMTP session with the server at
// addr ("host:port") and reports it healthy only if the server greets with
// 220, answers EHLO with 250 and takes QUIT, all within timeout (or the
// check's context deadline, if sooner). A port that accepts connections but
// never greets is unhealthy: that is the failure a TCP probe misses. It is
// [SMTPSession] bound to one address; a [Probe] runs the same check
// repeatedly with rise and fall thresholds.
func SMTPProbe(addr string, timeout time.Duration) Checker {
	return smtpProbe(SMTPSession(""), addr, timeout)
}

// SMTPProbeBehindProxy is [SMTPProbe] with [SMTPSessionBehindProxy], for
// a server that takes the probe's address for a proxy's.
func SMTPProbeBehindProxy(addr string, timeout time.Duration) Checker {
	return smtpProbe(SMTPSessionBehindProxy(""), addr, timeout)
}

func smtpProbe(probe ProbeFunc, addr string, timeout time.Duration) Checker {
	return CheckerFunc(func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return probe(ctx, addr)
	})
}

func command(tp *textproto.Conn, cmd string, want int) error {
	if err := tp.PrintfLine("%s", cmd); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if _, _, err := tp.ReadResponse(want); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return nil
}
