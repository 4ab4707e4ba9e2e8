// Command sluice is the reference binary of the sluice mail transfer agent:
// a small, strict SMTP relay built from the sluice packages.
//
//	sluice serve [--config FILE] [--listen ADDR] [--spool DIR] [--smarthost HOST:PORT]
//	             [--http ADDR] [--hostname NAME] [--log-level LEVEL] [--log-format json|text]
//	sluice send  --server ADDR --from ADDR --to ADDR [--to ADDR ...] [--subject S] [--body FILE|-]
//	sluice queue list|show|stats|hold|release|delete|requeue|bounce|flush [--api ADDR | --spool DIR] [...]
//	sluice explain [--api ADDR] ID | --rcpt ADDR [--sender ADDR]
//	sluice log [--api ADDR] [--rcpt ADDR] [--sender ADDR] [--id ID] [--result R] [--since T] [--until T]
//	sluice probe [--proto smtp|lmtp|spamd|rspamd|http|dns|tcp] [--timeout D] [--warning D] HOST:PORT
//	sluice version
//	sluice help [COMMAND]
//
// serve accepts mail over SMTP, spools it durably and relays it to a
// smarthost or to the recipients' MX hosts; it serves /livez, /readyz and
// /metrics, and its admin API under /api/, over HTTP. send submits one
// small text message, for trials and scripts. queue inspects and manages
// the queue of the running daemon through that API (or, with --spool, the
// spool of a stopped one); explain tells what delivery would do with a
// message or an address; log searches the delivery log. Exit status: 0 on success, 1 on a runtime failure, 2 on a usage
// or configuration error.
//
// The binary only wires the packages together: everything it does that a
// program embedding sluice would also need lives in those packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure
	exitUsage   = 2 // bad command line or configuration
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one subcommand: its one-line summary and its entry point.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

func commands() map[string]command {
	return map[string]command{
		"serve":   {"run the relay: accept, queue and deliver mail", runServe},
		"send":    {"submit one text message to an SMTP server", runSend},
		"queue":   {"inspect and manage the queue", runQueue},
		"explain": {"tell what delivery would do with a queued message or an address", runExplain},
		"log":     {"search the delivery log", runLog},
		"probe":   {"check a server by speaking its protocol (exit 0 ok, 1 warning, 2 critical)", runProbe},
		"version": {"print the version", runVersion},
	}
}

// run dispatches to a subcommand and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		return runHelp(ctx, rest, stdin, stdout, stderr)
	}
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(stderr, "sluice: unknown command %q\n", name)
		usage(stderr)
		return exitUsage
	}
	return cmd.run(ctx, rest, stdin, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: sluice <command> [flags]

commands:
  serve     run the relay: accept, queue and deliver mail
  send      submit one text message to an SMTP server
  queue     inspect and manage the queue (the daemon's, or a spool with --spool): sluice queue help
  explain   tell what delivery would do with a queued message or an address
  log       search the delivery log
  probe     check a server by speaking its protocol (exit 0 ok, 1 warning, 2 critical)
  version   print the version
  help      show help for a command: sluice help serve
`)
}

func runHelp(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stdout)
		return exitOK
	}
	switch args[0] {
	case "serve":
		fs, _ := serveFlagSet(stdout)
		fs.Usage()
	case "send":
		fs, _ := sendFlagSet(stdout)
		fs.Usage()
	case "queue":
		queueUsage(stdout)
	case "version":
		fmt.Fprintln(stdout, "usage: sluice version")
	case "explain", "log", "probe":
		// Their flag sets print their usage for -h, on the output given.
		commands()[args[0]].run(ctx, []string{"-h"}, nil, stdout, stdout)
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q\n", args[0])
		return exitUsage
	}
	return exitOK
}

func runVersion(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: sluice version")
		return exitUsage
	}
	fmt.Fprintln(stdout, "sluice", version())
	return exitOK
}

// version reports the module version the binary was built from, or the
// VCS revision for a build from a checkout.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && (v == "" || v == "(devel)") {
			v = s.Value
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return v
}

// parseFlags parses args with fs, mapping -h to exit 0 and every other
// error to a usage error; the flag package has already printed the reason.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		if fs.NArg() > 0 {
			fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
			return exitUsage, false
		}
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		return exitOK, false
	default:
		return exitUsage, false
	}
}

// parseArgs parses flags placed anywhere among the positional arguments,
// which it returns.
func parseArgs(fs *flag.FlagSet, args []string) (pos []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitUsage, false
		}
		if fs.NArg() == 0 {
			return pos, 0, true
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
