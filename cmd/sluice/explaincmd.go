package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicemta/sluice/delivery"
)

// clientFlags are the flags of explain and log.
type clientFlags struct {
	config string
	json   bool
	apiFlags
}

func clientFlagSet(name string, out io.Writer) (*flag.FlagSet, *clientFlags) {
	f := &clientFlags{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&f.config, "config", "", "TOML configuration `file` (for its http.listen and http.token_file)")
	fs.BoolVar(&f.json, "json", false, "print JSON")
	addAPIFlags(fs, &f.apiFlags)
	return fs, f
}

// runExplain prints what the daemon would do now with a queued message
// (per recipient) or with mail for one address.
func runExplain(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs, f := clientFlagSet("explain", stderr)
	rcpt := fs.String("rcpt", "", "explain mail to this `address` instead of a queued message")
	sender := fs.String("sender", "", "with --rcpt: the sender `address`, for routes that match senders")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sluice explain [flags] ID | --rcpt ADDR [--sender ADDR]")
		fs.PrintDefaults()
	}
	ids, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if (*rcpt == "" && len(ids) != 1) || (*rcpt != "" && len(ids) != 0) {
		fs.Usage()
		return exitUsage
	}
	c, err := newAPIClient(&f.apiFlags, f.config)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	if *rcpt != "" {
		x, err := c.explainRcpt(ctx, *rcpt, *sender)
		if err == nil {
			err = printExplanation(stdout, f.json, x)
		}
		return report(stderr, "explain", err)
	}
	ex, err := c.explainID(ctx, ids[0])
	if err != nil {
		return report(stderr, "explain", err)
	}
	if f.json {
		return report(stderr, "explain", json.NewEncoder(stdout).Encode(ex))
	}
	m := ex.Message
	fmt.Fprintf(stdout, "message %s from %s, %s, %d attempts\n", m.ID, orNull(m.From), m.State, m.Attempts)
	for _, f := range ex.Filters {
		breaker := f.Breaker
		if breaker == "" {
			breaker = "none"
		}
		fmt.Fprintf(stdout, "post-queue filter %s: circuit breaker %s", f.Name, breaker)
		if !f.OpenedAt.IsZero() {
			fmt.Fprintf(stdout, " since %s (its failure policy applies)", f.OpenedAt.Format(time.RFC3339))
		}
		fmt.Fprintln(stdout)
	}
	for _, r := range ex.Recipients {
		fmt.Fprintf(stdout, "\n%s: %s after %d attempts", r.Address, r.State, r.Attempts)
		if r.LastReply != "" {
			fmt.Fprintf(stdout, ", last reply %q", r.LastReply)
		}
		if !r.Next.IsZero() {
			fmt.Fprintf(stdout, ", next attempt %s", r.Next.Format(time.RFC3339))
		}
		fmt.Fprintln(stdout)
		if r.Explain != nil {
			printExplanation(stdout, false, r.Explain)
		}
	}
	return exitOK
}

func report(stderr io.Writer, cmd string, err error) int {
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
		return exitFailure
	}
	return exitOK
}

func orNull(from string) string {
	if from == "" {
		return "<>"
	}
	return from
}

func printExplanation(w io.Writer, asJSON bool, x *delivery.Explanation) error {
	if asJSON {
		return json.NewEncoder(w).Encode(x)
	}
	route := x.Route
	if x.RouteDomain != "" {
		route += " (route " + x.RouteDomain + ")"
	}
	if x.Fallback != "" {
		route += ", after a deferral: pool:" + x.Fallback
	}
	fmt.Fprintf(w, "  route:        %s\n", route)
	if x.Error != "" {
		fmt.Fprintf(w, "  lookup:       %s\n", x.Error)
		return nil
	}
	for i, h := range x.Hops {
		var notes []string
		if h.Dead {
			notes = append(notes, "DEAD (skipped)")
		}
		if h.Suspect {
			notes = append(notes, "greeting overdue")
		}
		if h.Down {
			notes = append(notes, "DOWN (probes fail; tried last)")
		}
		label := ""
		if i == 0 {
			label = "next hops:"
		}
		fmt.Fprintf(w, "  %-13s %d. %s [%s] pref %d %s\n", label, i+1, h.Name, h.Address, h.Preference, strings.Join(notes, ", "))
	}
	src := x.SourceIP
	if src == "" {
		src = "any"
	}
	fmt.Fprintf(w, "  source:       %s, EHLO %s, TLS %s\n", src, x.Helo, x.TLS)
	l, st := x.Limits, x.State
	fmt.Fprintf(w, "  destination:  %s: concurrency %d of %d (%d open, %d idle), %s messages/s, %s connections/s\n",
		x.Destination, st.Window, l.Concurrency, st.Open, st.Idle, rateText(l.MessageRate), rateText(l.ConnectionRate))
	if !st.ParkedUntil.IsZero() {
		fmt.Fprintf(w, "  PARKED        %s until %s\n", st.ParkedWhy, st.ParkedUntil.Format(time.RFC3339))
	}
	if !st.BackoffUntil.IsZero() {
		fmt.Fprintf(w, "  BACKOFF       reply rule limits until %s\n", st.BackoffUntil.Format(time.RFC3339))
	}
	return nil
}

func rateText(r float64) string {
	if r == 0 {
		return "unlimited"
	}
	return strconv.FormatFloat(r, 'g', -1, 64)
}

// runLog searches the daemon's delivery log.
func runLog(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs, f := clientFlagSet("log", stderr)
	q := url.Values{}
	for _, p := range []struct{ name, key, usage string }{
		{"rcpt", "rcpt", "recipient `address`, or @domain"},
		{"sender", "sender", "sender `address`, @domain, or <> for notifications"},
		{"id", "id", "queue `id`"},
		{"result", "result", "`result`: delivered, deferred or bounced"},
		{"since", "since", "from this `time` (RFC 3339) or duration ago (1h)"},
		{"until", "until", "before this `time` (RFC 3339) or duration ago"},
		{"limit", "limit", "at most `n` attempts, the newest (default 100)"},
	} {
		fs.Func(p.name, p.usage, func(v string) error { q.Set(p.key, v); return nil })
	}
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sluice log [--rcpt ADDR] [--sender ADDR] [--id ID] [--result R] [--since T] [--until T] [--limit N] [--json]")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	c, err := newAPIClient(&f.apiFlags, f.config)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	recs, err := c.searchLog(ctx, q)
	if err != nil {
		return report(stderr, "log", err)
	}
	if f.json {
		enc := json.NewEncoder(stdout)
		for _, r := range recs {
			if err := enc.Encode(r); err != nil {
				return report(stderr, "log", err)
			}
		}
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tQUEUE ID\tFROM\tTO\tRESULT\tRELAY\tREPLY")
	for _, r := range recs {
		relay := r.Relay
		if r.IP != "" {
			relay += "[" + r.IP + "]"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Format(time.RFC3339), r.QueueID, orNull(r.From), r.To,
			r.Result, relay, clip(r.Reply, 70))
	}
	if err := tw.Flush(); err != nil {
		return report(stderr, "log", err)
	}
	if len(recs) == 0 {
		fmt.Fprintln(stderr, "no matching delivery attempts")
	}
	return exitOK
}
