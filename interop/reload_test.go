//go:build interop

package interop

import (
	"context"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A queued message follows a route changed by SIGHUP. The first
// configuration routes everything to a pool whose only host answers 421,
// and a reply rule suspends that pool on its text; the message is
// acknowledged and stays queued. The file is then rewritten to route to
// smtp-sink through another pool, the running process gets SIGHUP, and the
// message arrives: routes are looked up at each attempt (seed 004), reply
// rules act on real replies, and the binary reloads both.
func TestSIGHUPReroutesQueuedMail(t *testing.T) {
	t.Parallel()
	swaksBin := tool(t, "swaks")
	down := tempFailServer(t)
	snk := startSink(t)
	const rules = `
[[delivery.reply_rule]]
name = "down"
match = "^421 4\\.3\\.2 down for the test"
action = "suspend"
for = "1h"

[[delivery.route]]
domain = "*"
pool = "%POOL%"
`
	pool := func(name, host string) string {
		return "\n[[delivery.pool]]\nname = \"" + name + "\"\nhosts = [\"" + host + "\"]\n" + strings.ReplaceAll(rules, "%POOL%", name)
	}
	srv := startSluiceWith(t, t.TempDir(), pool("broken", down))

	file := messageFile(t, "From: a@example.org\nTo: b@example.net\nSubject: rerouted by SIGHUP\n\nqueued before the reload\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ok, out := swaks(ctx, swaksBin, srv.smtpAddr, "a@example.org", "b@example.net", file); !ok {
		t.Fatalf("swaks not acknowledged:\n%s", out)
	}
	logged := func(parts ...string) func() bool {
		return func() bool {
			for _, l := range srv.log.snapshot() {
				if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(l, p) }) {
					return true
				}
			}
			return false
		}
	}
	if !poll(20*time.Second, logged(`"msg":"reply rule matched"`, `"rule":"down"`, `"action":"suspend"`, `"destination":"pool:broken"`)) {
		t.Fatal("the 421 of the broken pool did not trigger the reply rule within 20s")
	}
	if n := snk.count(t); n != 0 {
		t.Fatalf("sink has %d messages before the reload, want 0", n)
	}

	// Replace the pool, route and rule, keeping the harness's settings.
	conf := readFile(t, srv.config)
	conf = conf[:strings.Index(conf, "\n[[delivery.pool]]")] + pool("fixed", snk.addr)
	if err := os.WriteFile(srv.config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !poll(20*time.Second, logged(`"msg":"routes and rules reloaded"`)) {
		t.Fatal("no reload logged within 20s of SIGHUP")
	}
	if !poll(30*time.Second, func() bool {
		d := snk.dumps(t)
		return len(d) == 1 && strings.Contains(d[0], "queued before the reload")
	}) {
		t.Fatalf("the queued message did not reach the new route within 30s of the reload (sink has %d)", snk.count(t))
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
