package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicemta/sluice/queue"
)

// queueFlags are the flags every queue subcommand takes.
type queueFlags struct {
	config, spool string
	json          bool
	apiFlags
}

func queueFlagSet(name string, out io.Writer) (*flag.FlagSet, *queueFlags) {
	f := &queueFlags{}
	fs := flag.NewFlagSet("queue "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&f.config, "config", "", "TOML configuration `file` (for its http.listen and http.token_file)")
	fs.StringVar(&f.spool, "spool", "", "work on the spool `directory` directly instead of the daemon (it must be stopped)")
	fs.BoolVar(&f.json, "json", false, "print JSON, one object per line")
	addAPIFlags(fs, &f.apiFlags)
	return fs, f
}

func addAPIFlags(fs *flag.FlagSet, f *apiFlags) {
	fs.StringVar(&f.api, "api", "", "`address` of the daemon's HTTP listener (default: the configuration's http.listen, else "+defaultHTTP+")")
	fs.StringVar(&f.tokenFile, "token-file", "", "`file` whose first line is the admin API token (default: the configuration's, else $SLUICE_ADMIN_TOKEN)")
}

// queueCommands are the subcommands of "sluice queue": each takes the
// queue and the arguments left after the flags.
var queueCommands = map[string]struct {
	args, summary string
	run           func(ctx context.Context, q queueOps, f *queueFlags, args []string, out io.Writer) error
}{
	"list":    {"[filters]", "list queued messages, oldest first", nil}, // run set in runQueueList
	"show":    {"ID", "show one message: envelope, recipients, attempts, last replies", queueShow},
	"stats":   {"", "count messages by state and by recipient domain", queueStats},
	"hold":    {"ID...", "stop trying messages until released", eachID(queueOps.Hold, "held")},
	"release": {"ID...", "make held messages due now", eachID(queueOps.Release, "released")},
	"delete":  {"ID...", "remove messages without notifying anyone", eachID(queueOps.Delete, "deleted")},
	"requeue": {"ID...", "make messages due now; the route is looked up again", eachID(queueOps.Requeue, "requeued")},
	"bounce":  {"ID...", "return messages to their senders (at their next attempt)", eachID(queueOps.Bounce, "bounced")},
	"flush":   {"", "make every deferred message due now (spread over the restart window)", queueFlush},
}

func queueUsage(w io.Writer) {
	fmt.Fprint(w, `usage: sluice queue <command> [flags] [args]

Inspect and manage the queue of a running sluice serve through its admin
API, or, with --spool, the spool of a stopped one directly.

commands:
`)
	for _, name := range []string{"list", "show", "stats", "hold", "release", "delete", "requeue", "bounce", "flush"} {
		c := queueCommands[name]
		fmt.Fprintf(w, "  %-8s %-9s %s\n", name, c.args, c.summary)
	}
	fmt.Fprint(w, `
flags (every command): --api ADDR, --token-file FILE, --config FILE, --spool DIR, --json
list filters: --domain D, --sender ADDR ("<>" for bounces), --state pending|deferred|held,
              --older-than DUR, --newer-than DUR, --limit N, --after ID (the previous page's last id)
hold, release, delete, requeue and bounce take IDs, or instead the list filters
(--all for every message) to act on every message that matches, with progress
on standard error; e.g. sluice queue requeue --domain example.com --state deferred
`)
}

func runQueue(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		queueUsage(stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	if name == "help" || name == "-h" || name == "--help" {
		queueUsage(stdout)
		return exitOK
	}
	c, ok := queueCommands[name]
	if !ok {
		fmt.Fprintf(stderr, "sluice queue: unknown command %q\n", name)
		queueUsage(stderr)
		return exitUsage
	}
	fs, f := queueFlagSet(name, stderr)
	var lo queue.ListOptions
	var older, newer time.Duration
	var state string
	var all bool
	bulk := bulkOps[name]
	if name == "list" || bulk != nil {
		fs.StringVar(&lo.Domain, "domain", "", "only messages with a recipient at `domain`")
		fs.StringVar(&lo.Sender, "sender", "", "only messages from `address`")
		fs.StringVar(&state, "state", "", "only messages in `state`: pending, deferred, held or in-flight")
		fs.DurationVar(&older, "older-than", 0, "only messages received at least `duration` ago")
		fs.DurationVar(&newer, "newer-than", 0, "only messages received less than `duration` ago")
	}
	if name == "list" {
		fs.IntVar(&lo.Limit, "limit", 100, "at most `n` messages")
		fs.StringVar(&lo.After, "after", "", "continue after the message `id`")
		c.run = func(ctx context.Context, q queueOps, f *queueFlags, _ []string, out io.Writer) error {
			lo.State, lo.OlderThan, lo.NewerThan = queue.State(state), older, newer
			return queueList(ctx, q, f, lo, out)
		}
	}
	if bulk != nil {
		fs.BoolVar(&all, "all", false, "act on every queued message (or every one the filters select)")
	}
	ids, code, ok := parseArgs(fs, rest)
	if !ok {
		return code
	}
	filtered := all || lo.Domain != "" || lo.Sender != "" || state != "" || older != 0 || newer != 0
	if bulk != nil && filtered {
		if len(ids) > 0 {
			fmt.Fprintf(stderr, "usage: sluice queue %s takes IDs or filters, not both\n", name)
			return exitUsage
		}
		c.run = func(ctx context.Context, q queueOps, f *queueFlags, _ []string, out io.Writer) error {
			lo.State, lo.OlderThan, lo.NewerThan = queue.State(state), older, newer
			return queueBulk(ctx, q, lo, bulk, out, stderr)
		}
	} else if wantIDs := strings.HasPrefix(c.args, "ID"); wantIDs != (len(ids) > 0) || (c.args == "ID" && len(ids) != 1) {
		fmt.Fprintf(stderr, "usage: sluice queue %s [flags] %s\n", name, c.args)
		return exitUsage
	}
	var err error
	if f.spool != "" {
		var q *queue.Queue
		if q, err = queue.New(f.spool); err != nil {
			fmt.Fprintf(stderr, "sluice queue: %v\n", err)
			return exitFailure
		}
		err = c.run(ctx, spoolOps{q}, f, ids, stdout)
		if cerr := q.Close(); err == nil {
			err = cerr
		}
	} else {
		client, cerr := newAPIClient(&f.apiFlags, f.config)
		if cerr != nil {
			fmt.Fprintln(stderr, cerr)
			return exitUsage
		}
		err = c.run(ctx, client, f, ids, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice queue %s: %v\n", name, err)
		return exitFailure
	}
	return exitOK
}

func queueList(ctx context.Context, q queueOps, f *queueFlags, o queue.ListOptions, out io.Writer) error {
	page, err := q.List(ctx, o)
	if err != nil {
		return err
	}
	if f.json {
		enc := json.NewEncoder(out)
		for _, m := range page.Messages {
			if err := enc.Encode(m); err != nil {
				return err
			}
		}
		return enc.Encode(map[string]any{"next": page.Next, "damaged": page.Damaged})
	}
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tAGE\tSIZE\tRCPTS\tFROM\tLAST REPLY")
	now := time.Now()
	for _, m := range page.Messages {
		from := m.From
		if from == "" {
			from = "<>"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d/%d\t%s\t%s\n", m.ID, m.State, now.Sub(m.Received).Round(time.Second),
			m.Size, m.Undone, m.Recipients, from, clip(m.LastReply, 60))
	}
	tw.Flush()
	if page.Damaged > 0 {
		fmt.Fprintf(out, "%d damaged records skipped (quarantined when they come due)\n", page.Damaged)
	}
	if page.Next != "" {
		fmt.Fprintf(out, "more: --after %s\n", page.Next)
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

func queueShow(ctx context.Context, q queueOps, f *queueFlags, args []string, out io.Writer) error {
	info, err := q.Show(ctx, args[0])
	if err != nil {
		return err
	}
	if f.json {
		return json.NewEncoder(out).Encode(info)
	}
	from := info.From
	if from == "" {
		from = "<>"
	}
	fmt.Fprintf(out, "id:        %s\nstate:     %s\nfrom:      %s\nreceived:  %s\nsize:      %d\nattempts:  %d\n",
		info.ID, info.State, from, info.Received.Format(time.RFC3339), info.Size, info.Attempts)
	if !info.LastTry.IsZero() {
		fmt.Fprintf(out, "last try:  %s\n", info.LastTry.Format(time.RFC3339))
	}
	if !info.Next.IsZero() {
		fmt.Fprintf(out, "next try:  %s\n", info.Next.Format(time.RFC3339))
	}
	if c := info.Envelope.Client; c.Addr.IsValid() {
		fmt.Fprintf(out, "client:    %s (helo %s)\n", c.Addr, c.Helo)
	}
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "\nRECIPIENT\tSTATE\tATTEMPTS\tLAST REPLY")
	for _, r := range info.Recipients {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Address, r.State, r.Attempts, r.LastReply)
	}
	return tw.Flush()
}

func queueStats(ctx context.Context, q queueOps, f *queueFlags, _ []string, out io.Writer) error {
	st, err := q.Stats(ctx)
	if err != nil {
		return err
	}
	if f.json {
		return json.NewEncoder(out).Encode(st)
	}
	fmt.Fprintf(out, "pending %d  deferred %d  held %d  in-flight %d\n", st.Pending, st.Deferred, st.Held, st.InFlight)
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "\nDOMAIN\tMESSAGES\tOLDEST")
	for _, d := range st.Domains {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", d.Domain, d.Messages, time.Since(d.Oldest).Round(time.Second))
	}
	if st.OtherDomains > 0 {
		fmt.Fprintf(tw, "(other)\t%d\t\n", st.OtherDomains)
	}
	return tw.Flush()
}

func queueFlush(ctx context.Context, q queueOps, _ *queueFlags, _ []string, out io.Writer) error {
	n, err := q.Flush(ctx)
	fmt.Fprintf(out, "%d deferred messages made due\n", n)
	return err
}

// eachID makes a subcommand that applies op to every id argument.
func eachID(op func(queueOps, context.Context, string) error, done string) func(context.Context, queueOps, *queueFlags, []string, io.Writer) error {
	return func(ctx context.Context, q queueOps, _ *queueFlags, ids []string, out io.Writer) error {
		var errs []error
		for _, id := range ids {
			if err := op(q, ctx, id); err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Fprintf(out, "%s %s\n", id, done)
		}
		return errors.Join(errs...)
	}
}

// bulkOp is an operation that "sluice queue" can apply to every message a
// filter selects.
type bulkOp struct {
	op   func(queueOps, context.Context, string) error
	done string
}

var bulkOps = map[string]*bulkOp{
	"hold":    {queueOps.Hold, "held"},
	"release": {queueOps.Release, "released"},
	"delete":  {queueOps.Delete, "deleted"},
	"requeue": {queueOps.Requeue, "requeued"},
	"bounce":  {queueOps.Bounce, "bounced"},
}

// queueBulk applies b to every message that o selects, a page at a time,
// reporting progress on progress. A message that left the queue between
// the listing and the operation is not an error.
func queueBulk(ctx context.Context, q queueOps, o queue.ListOptions, b *bulkOp, out, progress io.Writer) error {
	o.Limit = 1000
	n, gone := 0, 0
	for {
		page, err := q.List(ctx, o)
		if err != nil {
			return err
		}
		for _, m := range page.Messages {
			switch err := b.op(q, ctx, m.ID); {
			case errors.Is(err, queue.ErrNotFound):
				gone++
			case err != nil:
				return fmt.Errorf("after %d messages %s: %s: %w", n, b.done, m.ID, err)
			default:
				n++
			}
		}
		if page.Next == "" {
			break
		}
		fmt.Fprintf(progress, "%d messages %s so far...\n", n, b.done)
		o.After = page.Next
	}
	fmt.Fprintf(out, "%d messages %s\n", n, b.done)
	if gone > 0 {
		fmt.Fprintf(out, "%d left the queue before their turn\n", gone)
	}
	return nil
}
