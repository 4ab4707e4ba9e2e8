package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sluicemta/sluice/health"
)

// Exit statuses of "sluice probe", as monitoring plugins use them.
const (
	probeOK       = 0
	probeWarning  = 1 // it answered, slower than --warning
	probeCritical = 2 // it failed or did not answer within --timeout
	probeUnknown  = 3 // bad command line
)

// probeResult is the --json output of "sluice probe".
type probeResult struct {
	Status  string  `json:"status"` // "OK", "WARNING" or "CRITICAL"
	Proto   string  `json:"proto"`
	Addr    string  `json:"addr"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

// runProbe checks a server by speaking its protocol once, for load
// balancers and monitors (seed 000: an open port is not a healthy server).
func runProbe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	proto := fs.String("proto", "smtp", "`protocol`: smtp, lmtp, spamd, rspamd, http, dns or tcp")
	timeout := fs.Duration("timeout", 5*time.Second, "critical when no answer within `duration`")
	warning := fs.Duration("warning", 0, "warning when the answer takes longer than `duration` (0: never)")
	helo := fs.String("helo", "sluice-probe.invalid", "`name` given in EHLO or LHLO")
	path := fs.String("path", "/", "`path` requested by the http probe")
	name := fs.String("name", ".", "`name` queried by the dns probe")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sluice probe [flags] HOST:PORT | unix:/PATH")
		fmt.Fprintln(stderr, "exit status: 0 OK, 1 WARNING (slow), 2 CRITICAL (failed or silent), 3 UNKNOWN (usage)")
		fs.PrintDefaults()
	}
	addrs, code, ok := parseArgs(fs, args)
	if !ok {
		if code == exitOK {
			return probeOK
		}
		return probeUnknown
	}
	probes := map[string]health.ProbeFunc{
		"smtp": health.SMTPSession(*helo), "lmtp": health.LMTPSession(*helo), "spamd": health.SpamdPing(),
		"rspamd": health.RspamdPing(), "http": health.HTTPStatus(*path), "dns": health.DNSQuery(*name), "tcp": health.TCPConnect(),
	}
	check, known := probes[*proto]
	if len(addrs) != 1 || !known || *timeout <= 0 || *warning < 0 {
		fs.Usage()
		return probeUnknown
	}
	pctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	start := time.Now()
	err := check(pctx, addrs[0])
	took := time.Since(start)
	res := probeResult{Status: "OK", Proto: *proto, Addr: addrs[0], Seconds: took.Seconds()}
	code = probeOK
	switch {
	case err != nil:
		res.Status, res.Error, code = "CRITICAL", err.Error(), probeCritical
	case *warning > 0 && took > *warning:
		res.Status, code = "WARNING", probeWarning
	}
	if *asJSON {
		json.NewEncoder(stdout).Encode(res)
		return code
	}
	fmt.Fprintf(stdout, "%s %s - %s", strings.ToUpper(*proto), res.Status, addrs[0])
	if err != nil {
		fmt.Fprintf(stdout, ": %v", err)
	} else {
		fmt.Fprintf(stdout, " answered in %v", took.Round(time.Millisecond))
	}
	fmt.Fprintf(stdout, " | time=%.3fs\n", took.Seconds())
	return code
}
