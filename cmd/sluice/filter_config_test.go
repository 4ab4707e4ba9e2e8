package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/admin"
	"github.com/sluicemta/sluice/filter/spamd/spamdtest"
)

func TestParseFilterConfigErrors(t *testing.T) {
	dir := t.TempDir()
	lists := filepath.Join(dir, "suppress.txt")
	if err := os.WriteFile(lists, []byte("example.org bounce\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, toml, want string
	}{
		{"unknown type", "[[filter]]\ntype = \"spam\"\n",
			`sluice.toml:2: filter[0].type: unknown filter type "spam" (want parse, suppress, limit, dkim, dnsbl, spamd or rspamd)`},
		{"dkim without keys", "[[filter]]\ntype = \"dkim\"\n",
			`sluice.toml:1: filter[0].keys: missing: a dkim filter needs keys = ["domain:selector:/path/key.pem", ...]`},
		{"dkim key without a path", "[[filter]]\ntype = \"dkim\"\nkeys = [\"example.org:s1\"]\n",
			`sluice.toml:3: filter[0].keys: bad key "example.org:s1" (want domain:selector:/path/key.pem)`},
		{"dkim key file missing", "[[filter]]\ntype = \"dkim\"\nkeys = [\"example.org:s1:" + filepath.Join(dir, "none.pem") + "\"]\n",
			`sluice.toml:3: filter[0].keys: key for example.org: open ` + filepath.Join(dir, "none.pem") + `: no such file or directory`},
		{"dnsbl without a resolver", "[[filter]]\ntype = \"dnsbl\"\nzones = [\"zen.example\"]\n",
			`sluice.toml:1: filter[0].resolver: missing: host:port of a resolver that may query the lists`},
		{"dnsbl zero weight", "[[filter]]\ntype = \"dnsbl\"\nresolver = \"127.0.0.1:53\"\nzones = [\"zen.example=0\"]\n",
			`sluice.toml:4: filter[0].zones: bad weight in "zen.example=0" (want zone=N, N not 0)`},
		{"dnsbl bad codes", "[[filter]]\ntype = \"dnsbl\"\nresolver = \"127.0.0.1:53\"\nzones = [\"zen.example=2=127.0.0\"]\n",
			`sluice.toml:4: filter[0].zones: bad codes in "zen.example=2=127.0.0": `},
		{"bad stage", "[[filter]]\ntype = \"parse\"\nstage = \"queue\"\n",
			`sluice.toml:3: filter[0].stage: bad stage "queue" (want connect, mail, rcpt, data or postqueue)`},
		{"bad policy", "[[filter]]\ntype = \"parse\"\non_timeout = \"drop\"\n",
			`sluice.toml:3: filter[0].on_timeout: bad policy "drop" (want tempfail, accept, reject or quarantine)`},
		{"key of another type", "[[filter]]\ntype = \"parse\"\ndaily = 10\n",
			`sluice.toml:3: filter[0].daily: does not apply to a filter of type "parse"`},
		{"duplicate name", "[[filter]]\ntype = \"parse\"\n[[filter]]\ntype = \"parse\"\n",
			`sluice.toml:3: filter[1].name: duplicate filter name "parse" (set name to tell filters of one type apart)`},
		{"suppress without a file", "[[filter]]\ntype = \"suppress\"\n",
			`sluice.toml:1: filter[0].file: missing: a suppress filter needs its list file`},
		{"bad suppression file", "[[filter]]\ntype = \"suppress\"\nfile = \"" + lists + "\"\n",
			`sluice.toml:3: filter[0].file: ` + lists + `:1: want "account list address", got 2 fields`},
		{"limit without limits", "[[filter]]\ntype = \"limit\"\nname = \"quota\"\n",
			`sluice.toml:2: filter[0].type: neither a rate nor a daily quota set`},
		{"rate without burst", "[[filter]]\ntype = \"limit\"\nrate = 1.0\n",
			`sluice.toml:3: filter[0].rate: set rate and burst together`},
		{"breaker window without failures", "[[filter]]\ntype = \"parse\"\nbreaker_window = \"1m\"\n",
			`sluice.toml:1: filter[0].breaker_failures: missing: set breaker_failures with breaker_window and breaker_cooldown`},
		{"bad timeout", "[[filter]]\ntype = \"parse\"\ntimeout = \"soon\"\n",
			`sluice.toml:3: filter[0].timeout: bad duration "soon"`},
		{"bad budget", "[smtp]\nfilter_budget = \"-1s\"\n",
			`sluice.toml:2: smtp.filter_budget: duration "-1s" must be positive`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig("sluice.toml", []byte(tc.toml))
			if err == nil {
				t.Fatalf("parseConfig succeeded, want %q", tc.want)
			}
			if got, _, _ := strings.Cut(err.Error(), "\n"); got != tc.want && !(strings.HasSuffix(tc.want, ": ") && strings.HasPrefix(got, tc.want)) {
				t.Errorf("error = %q\n          want %q", got, tc.want)
			}
		})
	}
}

func TestParseFilterConfig(t *testing.T) {
	lists := filepath.Join(t.TempDir(), "suppress.txt")
	if err := os.WriteFile(lists, []byte("example.org bounce gone@example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "dkim.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := `
[smtp]
filter_budget = "1m"

[[filter]]
type = "parse"
max_header_fields = 500

[[filter]]
type = "suppress"
name = "suppress-rcpt"
stage = "rcpt"
file = "` + lists + `"
check_interval = "10s"
timeout = "2s"
on_error = "accept"
on_timeout = "accept"
concurrency = 50
breaker_failures = 3
breaker_window = "1m"
breaker_cooldown = "20s"

[[filter]]
type = "limit"
stage = "postqueue"
group = "accounts"
rate = 10.0
burst = 20
daily = 10000
max_accounts = 1000

[[filter]]
type = "dkim"
keys = ["example.org:s1:` + keyFile + `"]
sign_networks = ["192.0.2.0/24"]

[[filter]]
type = "dnsbl"
stage = "connect"
resolver = "127.0.0.1:53"
zones = ["zen.example=5=127.0.0.2-127.0.0.11", "wl.example=-3"]
reject_score = 5
`
	s, err := parseConfig("sluice.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.filters) != 5 || s.filterBudget != time.Minute {
		t.Errorf("%d filters, budget %v; want 5 and 1m", len(s.filters), s.filterBudget)
	}
}

// TestServeRunsConfiguredFilters: a suppression filter configured at
// RCPT refuses a listed recipient in the dialogue of a running server;
// one configured after the queue accepts the message, delivers it to the
// other recipient and bounces the listed one with a DSN to the sender.
func TestServeRunsConfiguredFilters(t *testing.T) {
	sink := newSink(t)
	dir := t.TempDir()
	rcptList := filepath.Join(dir, "rcpt.txt")
	postList := filepath.Join(dir, "post.txt")
	if err := os.WriteFile(rcptList, []byte("example.org bounce gone@example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(postList, []byte("example.org unsubscribe late@example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "sluice.toml")
	doc := "[[filter]]\ntype = \"suppress\"\nstage = \"rcpt\"\nfile = \"" + rcptList + "\"\n" +
		"\n[[filter]]\ntype = \"parse\"\n" +
		"\n[[filter]]\ntype = \"suppress\"\nname = \"suppress-post\"\nstage = \"postqueue\"\nfile = \"" + postList + "\"\n"
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var log syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"serve", "--config", cfg, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
			"--spool", filepath.Join(dir, "spool"), "--smarthost", sink.Addr(), "--hostname", "sluice.test"},
			nil, io.Discard, &log)
	}()
	smtpAddr, _ := listening(t, &log, exited)
	code, stdout, stderr := runCmd(t, "hi\n", "send", "--server", smtpAddr, "--from", "a@example.org",
		"--to", "gone@example.com", "--subject", "x", "--body", "-")
	if code == exitOK || !strings.Contains(stdout+stderr, "550 5.7.1 gone@example.com is on the bounce list") {
		t.Errorf("send to a suppressed recipient: exit %d, stdout %q, stderr %q; want the 550 refusal", code, stdout, stderr)
	}
	code, stdout, stderr = runCmd(t, "hi\n", "send", "--server", smtpAddr, "--from", "a@example.org",
		"--to", "ok@example.com", "--to", "late@example.com", "--subject", "x", "--body", "-")
	if code != exitOK {
		t.Fatalf("send: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sink.WaitFor(wctx, 2); err != nil {
		t.Fatalf("sink got %d messages, want the delivery and the DSN: %v\n%s", sink.Count(), err, log.String())
	}
	var got []string
	for _, m := range sink.Messages() {
		got = append(got, m.From+" -> "+strings.Join(m.To, ","))
		if m.From == "" && !strings.Contains(string(m.Data), "late@example.com is on the unsubscribe list") {
			t.Errorf("DSN lacks the reason:\n%s", m.Data)
		}
	}
	slices.Sort(got)
	if want := []string{" -> a@example.org", "a@example.org -> ok@example.com"}; !slices.Equal(got, want) {
		t.Errorf("sink got %q, want %q", got, want)
	}
	stop()
	select {
	case <-exited:
	case <-time.After(40 * time.Second):
		t.Fatal("serve did not exit")
	}
}

// TestServeScansWithSpamd: a spamd filter configured with two replicas,
// one of them hung, refuses GTUBE at the end of DATA and tags a clean
// message, and the hung replica is ejected from the pool.
func TestServeScansWithSpamd(t *testing.T) {
	sink := newSink(t)
	good, err := spamdtest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { good.Close() })
	hung, err := spamdtest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hung.Close() })
	hung.SetHung(true)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.toml")
	doc := "[[filter]]\ntype = \"spamd\"\nreplicas = [\"" + hung.Addr() + "\", \"" + good.Addr() + "\"]\nstrategy = \"failover\"\n" +
		"timeout = \"2s\"\nprobe_interval = \"100ms\"\nfall = 1\n"
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var log syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"serve", "--config", cfg, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
			"--spool", filepath.Join(dir, "spool"), "--smarthost", sink.Addr(), "--hostname", "sluice.test"},
			nil, io.Discard, &log)
	}()
	smtpAddr, httpAddr := listening(t, &log, exited)
	// The hung replica is first in failover order: its probe takes it out.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), `"pool":"spamd"`) || !strings.Contains(log.String(), hung.Addr()) {
		if time.Now().After(deadline) {
			t.Fatalf("the hung replica was not taken down within 10s:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, stdout, stderr := runCmd(t, spamdtest.GTUBE+"\n", "send", "--server", smtpAddr, "--from", "a@example.org",
		"--to", "b@example.com", "--subject", "spam", "--body", "-")
	if code == exitOK || !strings.Contains(stdout+stderr, "550 5.7.1") {
		t.Errorf("send GTUBE: exit %d, stdout %q, stderr %q; want a 550 5.7.1 refusal", code, stdout, stderr)
	}
	if code, stdout, stderr = runCmd(t, "hello\n", "send", "--server", smtpAddr, "--from", "a@example.org",
		"--to", "b@example.com", "--subject", "ham", "--body", "-"); code != exitOK {
		t.Fatalf("send a clean message: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sink.WaitFor(wctx, 1); err != nil {
		t.Fatal(err)
	}
	if m := sink.Messages()[0]; !strings.Contains(string(m.Data), "X-Spam-Flag: NO") {
		t.Errorf("clean message lacks the X-Spam-Flag header:\n%s", m.Data)
	}
	// The status API shows the breaker and both replicas.
	resp, err := http.Get("http://" + httpAddr + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st admin.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"breaker spamd": "closed", "replica spamd " + hung.Addr(): "down", "replica spamd " + good.Addr(): "up"}
	for _, c := range st.Components {
		if w, ok := want[c.Kind+" "+c.Name]; ok {
			if c.State != w {
				t.Errorf("component %s %s is %s, want %s", c.Kind, c.Name, c.State, w)
			}
			delete(want, c.Kind+" "+c.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("status lacks components %v: %+v", want, st.Components)
	}
}
