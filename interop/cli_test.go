//go:build interop

package interop

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The operator's commands, run as the built binary against a running
// daemon through its admin API: every queue subcommand, explain and log,
// with --json output decoded here and the table output read too.
func TestCLIAgainstRunningDaemon(t *testing.T) {
	t.Parallel()
	swaksBin := tool(t, "swaks")
	down := tempFailServer(t)
	snk := startSink(t)
	srv := startSluiceWith(t, t.TempDir(), `
[[delivery.pool]]
name = "down"
hosts = ["`+down+`"]

[[delivery.pool]]
name = "sink"
hosts = ["`+snk.addr+`"]

[[delivery.route]]
domain = "later.test"
pool = "down"

[[delivery.route]]
domain = "*"
pool = "sink"
`)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	queuedAs := regexp.MustCompile(`queued as ([0-9A-Z]+)`)
	send := func(to, subject string) string {
		t.Helper()
		file := messageFile(t, "From: a@example.org\nTo: "+to+"\nSubject: "+subject+"\n\nbody\n")
		ok, out := swaks(ctx, swaksBin, srv.smtpAddr, "a@example.org", to, file)
		m := queuedAs.FindStringSubmatch(out)
		if !ok || m == nil {
			t.Fatalf("swaks to %s not acknowledged:\n%s", to, out)
		}
		return m[1]
	}
	sluice := func(args ...string) (string, string, error) {
		t.Helper()
		cmd := exec.CommandContext(ctx, sluiceBin, append(args, "--api", srv.httpAddr)...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	mustJSON := func(out any, args ...string) {
		t.Helper()
		stdout, stderr, err := sluice(append(args, "--json")...)
		if err != nil {
			t.Fatalf("sluice %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		if err := json.Unmarshal([]byte(strings.SplitN(stdout, "\n", 2)[0]), out); err != nil {
			t.Fatalf("sluice %s --json: %v in %q", strings.Join(args, " "), err, stdout)
		}
	}

	stuck, other, fine := send("b@later.test", "stuck"), send("c@later.test", "other"), send("d@now.test", "fine")
	if !poll(20*time.Second, func() bool { return snk.count(t) == 1 }) {
		t.Fatal("the message to now.test did not arrive")
	}
	type summary struct{ ID, State, From string }
	if !poll(20*time.Second, func() bool {
		var s summary
		mustJSON(&s, "queue", "list", "--state", "deferred")
		return s.ID == stuck
	}) {
		t.Fatal("the message to later.test is not listed as deferred")
	}

	var stats struct{ Pending, Deferred, Held, InFlight int }
	mustJSON(&stats, "queue", "stats")
	if stats.Pending+stats.Deferred+stats.InFlight != 2 || stats.Held != 0 {
		t.Errorf("queue stats: %+v, want 2 queued, none held", stats)
	}
	var info struct {
		ID         string
		Recipients []struct{ Address, State, LastReply string }
	}
	mustJSON(&info, "queue", "show", stuck)
	if info.ID != stuck || len(info.Recipients) != 1 || info.Recipients[0].Address != "b@later.test" {
		t.Errorf("queue show: %+v", info)
	}

	var ex struct {
		Recipients []struct {
			Address string
			Explain struct {
				Route string `json:"route"`
				Hops  []struct {
					Address string `json:"address"`
				} `json:"hops"`
			} `json:"explain"`
		} `json:"recipients"`
	}
	mustJSON(&ex, "explain", stuck)
	if len(ex.Recipients) != 1 || ex.Recipients[0].Explain.Route != "pool:down" || len(ex.Recipients[0].Explain.Hops) != 1 ||
		ex.Recipients[0].Explain.Hops[0].Address != down {
		t.Errorf("explain %s: %+v", stuck, ex)
	}
	var x struct {
		Route       string `json:"route"`
		Destination string `json:"destination"`
	}
	mustJSON(&x, "explain", "--rcpt", "e@now.test")
	if x.Route != "pool:sink" || x.Destination != "pool:sink" {
		t.Errorf("explain --rcpt: %+v", x)
	}
	if out, _, err := sluice("explain", stuck); err != nil || !strings.Contains(out, "route:        pool:down (route later.test)") {
		t.Errorf("explain table: %v\n%s", err, out)
	}

	var rec struct {
		QueueID string `json:"queue_id"`
		Result  string `json:"result"`
		To      string `json:"to"`
	}
	mustJSON(&rec, "log", "--rcpt", "d@now.test")
	if rec.QueueID != fine || rec.Result != "delivered" {
		t.Errorf("log --rcpt d@now.test: %+v", rec)
	}
	mustJSON(&rec, "log", "--id", stuck, "--result", "deferred", "--since", "1h")
	if rec.QueueID != stuck || rec.To != "b@later.test" {
		t.Errorf("log --id: %+v", rec)
	}
	if out, _, err := sluice("log", "--sender", "a@example.org"); err != nil || !strings.Contains(out, fine) || !strings.Contains(out, "delivered") {
		t.Errorf("log table: %v\n%s", err, out)
	}

	state := func(id string) string {
		var s struct{ State string }
		mustJSON(&s, "queue", "show", id)
		return s.State
	}
	for _, step := range []struct {
		args []string
		out  string
		held bool
	}{
		{[]string{"queue", "hold", stuck, other}, stuck + " held\n" + other + " held\n", true},
		{[]string{"queue", "release", stuck}, stuck + " released\n", false},
		{[]string{"queue", "requeue", stuck}, stuck + " requeued\n", false},
		{[]string{"queue", "flush"}, "", false},
	} {
		out, stderr, err := sluice(step.args...)
		if err != nil || (step.out != "" && out != step.out) {
			t.Errorf("sluice %v: %v %q %s", step.args, err, out, stderr)
		}
		// An operation on a message in flight applies when its attempt ends.
		if !poll(10*time.Second, func() bool { st := state(stuck); return st != "in-flight" && (st == "held") == step.held }) {
			t.Errorf("after %v: %s is %s, want held %v", step.args, stuck, state(stuck), step.held)
		}
	}
	if out, _, err := sluice("queue", "delete", other); err != nil || out != other+" deleted\n" {
		t.Errorf("queue delete: %v %q", err, out)
	}
	if _, stderr, err := sluice("queue", "show", other); err == nil || !strings.Contains(stderr, "not found") {
		t.Errorf("queue show of a deleted message: %v %q, want an error", err, stderr)
	}
	// Bounce returns the message to its sender; the notification goes
	// through the sink pool.
	if out, _, err := sluice("queue", "bounce", stuck); err != nil || out != stuck+" bounced\n" {
		t.Errorf("queue bounce: %v %q", err, out)
	}
	if !poll(30*time.Second, func() bool {
		for _, d := range snk.dumps(t) {
			if strings.Contains(d, "b@later.test") && strings.Contains(d, "multipart/report") {
				return true
			}
		}
		return false
	}) {
		t.Error("no delivery status notification for the bounced message reached the sink within 30s")
	}
	if !poll(20*time.Second, func() bool {
		var s struct{ Pending, Deferred, Held, InFlight int }
		mustJSON(&s, "queue", "stats")
		return s == struct{ Pending, Deferred, Held, InFlight int }{}
	}) {
		t.Error("the queue is not empty after bounce and delete")
	}
	// probe speaks SMTP to the daemon's listener, with monitoring exit codes.
	out, err := exec.CommandContext(ctx, sluiceBin, "probe", "--json", srv.smtpAddr).Output()
	var pr struct{ Status, Proto, Addr string }
	if err != nil || json.Unmarshal(out, &pr) != nil || pr.Status != "OK" || pr.Proto != "smtp" || pr.Addr != srv.smtpAddr {
		t.Errorf("probe of the daemon: %v %s", err, out)
	}
	var ee *exec.ExitError
	if _, err := exec.CommandContext(ctx, sluiceBin, "probe", "--timeout", "500ms", "--proto", "spamd", srv.smtpAddr).Output(); !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("spamd probe of an SMTP server: %v, want exit status 2 (critical)", err)
	}
	if out, err := exec.CommandContext(ctx, sluiceBin, "queue", "stats", "--api", "127.0.0.1:1").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "is sluice serve running?") {
		t.Errorf("queue stats against no daemon: %v %s, want an error with a hint", err, out)
	}
}
