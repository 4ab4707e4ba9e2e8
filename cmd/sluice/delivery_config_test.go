package main

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/queue"
)

const poolA = "[[delivery.pool]]\nname = \"a\"\nhosts = [\"192.0.2.1:25\"]\n"

func TestParseDeliveryConfigErrors(t *testing.T) {
	tests := []struct {
		name, toml, want string
	}{
		{"route to an unknown pool", poolA + "\n[[delivery.route]]\ndomain = \"*\"\npool = \"b\"\n",
			`sluice.toml:7: delivery.route[0].pool: no pool named "b"`},
		{"second route's bad source IP", poolA + "[[delivery.route]]\ndomain = \"x.test\"\n[[delivery.route]]\ndomain = \"y.test\"\nsource_ip = \"10.0.0.300\"\n",
			`sluice.toml:8: delivery.route[1].source_ip: bad IP address "10.0.0.300"`},
		{"route without a domain", "[[delivery.route]]\npool = \"\"\n",
			`sluice.toml:1: delivery.route[0].domain: missing (want a domain, ".domain" for its subdomains, or "*")`},
		{"bad pattern", "[[delivery.route]]\ndomain = \"..x\"\n",
			`sluice.toml:2: delivery.route[0].domain: bad pattern "..x": empty label in domain`},
		{"bad strategy", poolA + "strategy = \"random\"\n",
			`sluice.toml:4: delivery.pool[0].strategy: bad strategy "random" (want failover or spread)`},
		{"bad TLS policy", poolA + "tls = \"always\"\n",
			`sluice.toml:4: delivery.pool[0].tls: bad TLS policy "always" (want opportunistic, required or none)`},
		{"weights mismatch", poolA + "weights = [1, 2]\n",
			`sluice.toml:4: delivery.pool[0].weights: 2 weights for 1 hosts`},
		{"username without password file", poolA + "username = \"u\"\n",
			`sluice.toml:1: delivery.pool[0].password_file: missing: a username needs a password file`},
		{"duplicate pool", poolA + poolA,
			`sluice.toml:5: delivery.pool[1].name: duplicate pool name "a"`},
		{"negative rate", "[delivery.shaping]\nmessage_rate = -1.0\n",
			`sluice.toml:2: delivery.shaping.message_rate: -1 must be positive (leave it out for no limit)`},
		{"park max below park for", "[delivery.shaping]\npark_for = \"10m\"\npark_max = \"1m\"\n",
			`sluice.toml:3: delivery.shaping.park_max: park_max 1m0s is less than park_for 10m0s (a bound not set here is the one it inherits)`},
		{"park for alone above the default park max", "[delivery.shaping]\npark_for = \"1h\"\n",
			`sluice.toml:2: delivery.shaping.park_for: park_max 30m0s is less than park_for 1h0m0s (a bound not set here is the one it inherits)`},
		{"a limit's park for above the park max it inherits", "[delivery.shaping]\npark_max = \"10m\"\n\n[[delivery.limits]]\nmatch = \"example.com\"\npark_for = \"20m\"\n",
			`sluice.toml:6: delivery.limits[0].park_for: park_max 10m0s is less than park_for 20m0s (a bound not set here is the one it inherits)`},
		{"bad shape_by", "[delivery]\nshape_by = \"mx\"\n",
			`sluice.toml:2: delivery.shape_by: bad value "mx" (want domain or site)`},
		{"negative DNS cache", "[delivery]\ndns_cache = -1\n",
			`sluice.toml:2: delivery.dns_cache: -1 must not be negative`},
		{"limits without match", "[[delivery.limits]]\nconcurrency = 2\n",
			`sluice.toml:1: delivery.limits[0].match: missing (want a domain, ".domain" for its subdomains, or "*")`},
		{"limits with a bad count", "[[delivery.limits]]\nmatch = \"x.test\"\nconcurrency = 0\n",
			`sluice.toml:3: delivery.limits[0].concurrency: 0 must be at least 1`},
		{"reply rule with a bad regexp", "[[delivery.reply_rule]]\nname = \"r\"\nmatch = \"(\"\naction = \"bounce\"\n",
			"sluice.toml:3: delivery.reply_rule[0].match: error parsing regexp: missing closing ): `(`"},
		{"reply rule with a bad action", "[[delivery.reply_rule]]\nname = \"r\"\nmatch = \"x\"\naction = \"drop\"\n",
			`sluice.toml:4: delivery.reply_rule[0].action: bad action "drop" (want backoff, suspend or bounce)`},
		{"suspend without a duration", "[[delivery.reply_rule]]\nname = \"r\"\nmatch = \"x\"\naction = \"suspend\"\n",
			`sluice.toml:1: delivery.reply_rule[0].for: missing: suspend needs a duration`},
		{"limits on a bounce rule", "[[delivery.reply_rule]]\nname = \"r\"\nmatch = \"x\"\naction = \"bounce\"\nconcurrency = 1\n",
			`sluice.toml:1: delivery.reply_rule[0]: limits are set but only a backoff applies them`},
		{"zero data rate", "[delivery]\ndata_rate = 0\n",
			`sluice.toml:2: delivery.data_rate: 0 must be at least 1`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig("sluice.toml", []byte(tc.toml))
			if err == nil {
				t.Fatalf("parseConfig succeeded, want %q", tc.want)
			}
			if got, _, _ := strings.Cut(err.Error(), "\n"); got != tc.want {
				t.Errorf("error = %q\n          want %q", got, tc.want)
			}
		})
	}
}

func TestParseDeliveryConfig(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(dir, "relay.pass")
	if err := os.WriteFile(pass, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := `
[delivery]
hello_timeout = "20s"
mail_timeout = "15s"
dns_cache = 0
dead_host_time = "2m"
shape_by = "site"

[delivery.shaping]
concurrency = 10
message_rate = 5.5
idle_timeout = "30s"

[[delivery.pool]]
name = "relays"
hosts = ["relay1.example.net:587", "relay2.example.net:587"]
weights = [1, 3]
strategy = "spread"
tls = "required"
username = "sluice"
password_file = "` + pass + `"
source_ip = "192.0.2.10"
helo = "out1.example.org"
probe_interval = "5s"

[[delivery.pool]]
name = "mailstore"
hosts = ["127.0.0.1:24"]
transport = "lmtp"

[[delivery.limits]]
match = ".outlook.com"
concurrency = 2
message_rate = 1.5

[[delivery.limits]]
match = "pool:relays"
max_per_connection = 50

[[delivery.reply_rule]]
name = "throttled"
match = "(?i)^421 .*too many connections"
action = "backoff"
for = "10m"
concurrency = 1

[[delivery.reply_rule]]
name = "blocked"
match = "blocked using"
action = "suspend"
for = "1h"

[[delivery.route]]
domain = ".comcast.net"
source_ip = "192.0.2.11"
helo = "out2.example.org"

[[delivery.route]]
domain = "example.org"
pool = "mailstore"

[[delivery.route]]
domain = "*"
sender = "bulk.example.org"
pool = "relays"
fallback = "relays"
`
	s, err := parseConfig("sluice.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	wantRoutes, err := delivery.NewRoutes([]delivery.Pool{
		{Name: "relays", Strategy: delivery.Spread, TLS: delivery.TLSRequired, Username: "sluice", Password: "s3cret",
			Hosts:  []delivery.PoolHost{{Addr: "relay1.example.net:587", Weight: 1}, {Addr: "relay2.example.net:587", Weight: 3}},
			Egress: delivery.Egress{SourceIP: netip.MustParseAddr("192.0.2.10"), Helo: "out1.example.org"}, ProbeInterval: 5 * time.Second},
		{Name: "mailstore", Transport: delivery.LMTP, Hosts: []delivery.PoolHost{{Addr: "127.0.0.1:24"}}},
	}, []delivery.Route{
		{Domain: ".comcast.net", Egress: delivery.Egress{SourceIP: netip.MustParseAddr("192.0.2.11"), Helo: "out2.example.org"}},
		{Domain: "example.org", Pool: "mailstore"},
		{Domain: "*", Sender: "bulk.example.org", Pool: "relays", Fallback: "relays"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.routes, wantRoutes) {
		t.Errorf("routes:\n got %+v\nwant %+v", s.routes, wantRoutes)
	}
	if s.hello != 20*time.Second || s.mail != 15*time.Second || s.dnsCache == nil || *s.dnsCache != 0 ||
		s.deadHost != 2*time.Minute || s.shapeBy != delivery.ShapeBySite {
		t.Errorf("got hello %v mail %v dnsCache %v deadHost %v shapeBy %v", s.hello, s.mail, s.dnsCache, s.deadHost, s.shapeBy)
	}
	if want := (delivery.Shaping{Concurrency: 10, MessageRate: 5.5, IdleTimeout: 30 * time.Second}); s.shaping != want {
		t.Errorf("shaping %+v, want %+v", s.shaping, want)
	}
	wantLimits := []delivery.ShapingRule{
		{Match: ".outlook.com", Shaping: delivery.Shaping{Concurrency: 2, MessageRate: 1.5}},
		{Match: "pool:relays", Shaping: delivery.Shaping{MaxPerConnection: 50}},
	}
	if !reflect.DeepEqual(s.limits, wantLimits) {
		t.Errorf("limits:\n got %+v\nwant %+v", s.limits, wantLimits)
	}
	if len(s.replies) != 2 {
		t.Fatalf("got %d reply rules, want 2", len(s.replies))
	}
	r0, r1 := s.replies[0], s.replies[1]
	if r0.Name != "throttled" || r0.Action != delivery.ReplyBackoff || r0.For != 10*time.Minute ||
		r0.Shaping != (delivery.Shaping{Concurrency: 1}) || !r0.Match.MatchString("421 4.7.0 Too many connections") {
		t.Errorf("reply rule 0: %+v", r0)
	}
	if r1.Name != "blocked" || r1.Action != delivery.ReplySuspend || r1.For != time.Hour || r1.Match.String() != "blocked using" {
		t.Errorf("reply rule 1: %+v", r1)
	}
	// The binary's options build an agent with them.
	if _, err := delivery.New(nullEnqueuer{}, deliveryOptions(s, slog.New(slog.DiscardHandler), nil)...); err != nil {
		t.Errorf("delivery.New with the parsed settings: %v", err)
	}
}

type nullEnqueuer struct{}

func (nullEnqueuer) Enqueue(context.Context, *sluice.Envelope, io.Reader) (string, error) {
	return "", nil
}

func TestReloadRoutes(t *testing.T) {
	a, b := newSink(t), newSink(t)
	file := filepath.Join(t.TempDir(), "sluice.toml")
	write := func(addr string, extra ...string) {
		t.Helper()
		doc := "[[delivery.pool]]\nname = \"p\"\nhosts = [\"" + addr + "\"]\n[[delivery.route]]\ndomain = \"*\"\npool = \"p\"\n" + strings.Join(extra, "")
		// Replaced atomically, as an operator's tools should: a reload
		// racing with the write reads the old file or the new one, never
		// a truncated one (which would be a valid, empty configuration).
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write(a.Addr())
	s, err := loadConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	reload := make(chan os.Signal)
	s.configFile, s.reload = file, reload
	agent, err := delivery.New(nullEnqueuer{}, delivery.WithRoutes(s.routes), delivery.WithHostname("sluice.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); reloadRoutes(ctx, s, agent, slog.New(slog.DiscardHandler)) }()
	defer func() { cancel(); <-done }()

	send := func() {
		t.Helper()
		body := "Subject: x\r\n\r\nhi\r\n"
		msg := queue.NewMessage(&sluice.Envelope{ID: "Q", From: "a@x.test", Recipients: []sluice.Recipient{{Address: "b@y.test"}}},
			int64(len(body)), func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil })
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		if r := agent.Deliver(dctx, msg)[0]; r.Outcome != sluice.OutcomeDelivered {
			t.Fatalf("got %v %v", r.Outcome, r.Reply)
		}
	}
	send()
	// The channel is unbuffered: a send is received only after the
	// reloader has finished the previous reload.
	write(b.Addr())
	reload <- os.Interrupt
	reload <- os.Interrupt
	write("bad") // a broken file changes nothing
	reload <- os.Interrupt
	reload <- os.Interrupt
	// A file whose rules parse but that the running agent refuses (a
	// limit's park_for above the park_max it runs with: shaping is not
	// reloaded) changes nothing either, its routes included.
	write(a.Addr(), "[delivery.shaping]\npark_max = \"2h\"\n[[delivery.limits]]\nmatch = \"*\"\npark_for = \"1h\"\n")
	reload <- os.Interrupt
	reload <- os.Interrupt
	send()
	if a.Count() != 1 || b.Count() != 1 {
		t.Errorf("before and after reload: A has %d, B has %d; want 1 and 1", a.Count(), b.Count())
	}
}
