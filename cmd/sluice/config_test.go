package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want string // the whole error text, or its first line when several
	}{
		{
			name: "unknown key",
			toml: "[smtp]\nlisten = \"127.0.0.1:25\"\nlistn = \"x\"\n",
			want: "sluice.toml:3: unknown key smtp.listn",
		},
		{
			name: "unknown section",
			toml: "[smtp]\n\n[queu]\nspool = \"x\"\n",
			want: "sluice.toml:3: unknown key queu",
		},
		{
			name: "syntax error",
			toml: "[smtp]\nlisten = \"127.0.0.1:25\n",
			want: "sluice.toml:2: ",
		},
		{
			name: "negative in-flow delay",
			toml: "[smtp.limits]\nin_flow_delay = \"-1s\"\n",
			want: `sluice.toml:2: smtp.limits.in_flow_delay: bad duration "-1s" (want 0s to turn it off, or a positive duration)`,
		},
		{
			name: "zero pace backlog",
			toml: "[queue]\npace_backlog = 0\n",
			want: "sluice.toml:2: queue.pace_backlog: ",
		},
		{
			name: "wrong type",
			toml: "[queue]\n\nworkers = \"many\"\n",
			want: "sluice.toml:3: queue.workers: want an integer, not a TOML string",
		},
		{
			name: "bad duration",
			toml: "[queue]\nspool = \"/var/spool/sluice\"\nretry_min = \"1x\"\nretry_max = \"1h\"\n",
			want: `sluice.toml:3: queue.retry_min: bad duration "1x"`,
		},
		{
			name: "negative duration",
			toml: "[delivery]\nconnect_timeout = \"-5s\"\n",
			want: `sluice.toml:2: delivery.connect_timeout: duration "-5s" must be positive`,
		},
		{
			name: "retry bounds set alone",
			toml: "[queue]\nretry_max = \"1h\"\n",
			want: "sluice.toml:2: queue.retry_max: set queue.retry_min and queue.retry_max together",
		},
		{
			name: "retry bounds reversed",
			toml: "[queue]\nretry_min = \"2h\"\nretry_max = \"1h\"\n",
			want: "sluice.toml:3: queue.retry_max: 1h0m0s is less than queue.retry_min 2h0m0s",
		},
		{
			name: "bad listener kind",
			toml: "[[smtp.listener]]\naddress = \"127.0.0.1:25\"\nkind = \"smtp\"\n\n[[smtp.listener]]\naddress = \"127.0.0.1:587\"\nkind = \"submision\"\n",
			want: `sluice.toml:7: smtp.listener.1.kind: bad kind "submision" (want smtp, submission or submissions)`,
		},
		{
			name: "submission without TLS and AUTH",
			toml: "[[smtp.listener]]\naddress = \"127.0.0.1:587\"\nkind = \"submission\"\n",
			want: "sluice.toml:3: smtp.listener.0.kind: a submission listener needs smtp.tls_cert, smtp.tls_key and smtp.auth_users_file",
		},
		{
			name: "gate watermarks reversed",
			toml: "[smtp.gate]\nqueue_depth_high = 10.0\nqueue_depth_low = 20.0\n",
			want: "sluice.toml:3: smtp.gate.queue_depth_low: 20 must be between 0 and smtp.gate.queue_depth_high (10)",
		},
		{
			name: "bad smtp timeout",
			toml: "[smtp.timeouts]\ncommand = \"soon\"\n",
			want: `sluice.toml:2: smtp.timeouts.command: bad duration "soon"`,
		},
		{
			name: "rate without burst",
			toml: "[smtp.limits]\nmax_errors = 5\nconnection_rate = 2.0\n",
			want: "sluice.toml:3: smtp.limits.connection_rate: set smtp.limits.connection_rate and connection_burst together",
		},
		{
			name: "bad proxy network",
			toml: "[smtp]\nproxy_networks = [\"10.0.0.0/40\"]\n",
			want: `sluice.toml:2: smtp.proxy_networks: bad CIDR "10.0.0.0/40"`,
		},
		{
			name: "bad CIDR",
			toml: "[smtp]\ntrusted_networks = [\n  \"127.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n",
			want: `sluice.toml:2: smtp.trusted_networks: bad CIDR "10.0.0.0/33"`,
		},
		{
			name: "bad listen address",
			toml: "[http]\nlisten = \"localhost\"\n",
			want: `sluice.toml:2: http.listen: bad address "localhost": want host:port`,
		},
		{
			name: "bad smarthost port",
			toml: "[delivery]\nsmarthost = \"relay.example:smtp\"\n",
			want: `sluice.toml:2: delivery.smarthost: bad address "relay.example:smtp": bad port "smtp"`,
		},
		{
			name: "bad resolver",
			toml: "[delivery]\nresolvers = [\"127.0.0.1\"]\n",
			want: `sluice.toml:2: delivery.resolvers: bad address "127.0.0.1": want host:port`,
		},
		{
			name: "mx port out of range",
			toml: "[delivery]\nmx_port = 70000\n",
			want: "sluice.toml:2: delivery.mx_port: port 70000 out of range 1-65535",
		},
		{
			name: "zero workers",
			toml: "[queue]\nworkers = 0\n",
			want: "sluice.toml:2: queue.workers: 0 must be at least 1",
		},
		{
			name: "bad hostname",
			toml: "[smtp]\nhostname = \"mx_1.example\"\n",
			want: `sluice.toml:2: smtp.hostname: bad domain "mx_1.example": character '_' not allowed in domain`,
		},
		{
			name: "bad log level",
			toml: "[log]\nlevel = \"loud\"\n",
			want: `sluice.toml:2: log.level: bad level "loud" (want debug, info, warn or error)`,
		},
		{
			name: "bad log format",
			toml: "[log]\nformat = \"xml\"\n",
			want: `sluice.toml:2: log.format: bad format "xml" (want json or text)`,
		},
		{
			name: "bad CPU scheduling",
			toml: "[process]\ncpu_scheduling = \"fifo\"\n",
			want: `sluice.toml:2: process.cpu_scheduling: bad value "fifo" (want batch or inherit)`,
		},
		{
			name: "DNSBL zone weight",
			toml: "[smtp.dnsbl]\nresolver = \"127.0.0.1:53\"\nzones = [\"bl.example=0\"]\n",
			want: `sluice.toml:3: smtp.dnsbl.zones: bad weight in "bl.example=0" (want zone=N, N at least 1)`,
		},
		{
			name: "DNSBL without a resolver",
			toml: "[smtp.dnsbl]\nzones = [\"bl.example\"]\n",
			want: "sluice.toml:2: smtp.dnsbl.zones: set smtp.dnsbl.resolver (host:port of a resolver that may query the lists)",
		},
		{
			name: "queue age gauge reversed",
			toml: "[smtp.gate]\nqueue_age_high = \"1h\"\nqueue_age_low = \"2h\"\n",
			want: "sluice.toml:3: smtp.gate.queue_age_low: 2h0m0s must be at most smtp.gate.queue_age_high (1h0m0s)",
		},
		{
			name: "retry budget out of range",
			toml: "[queue]\nretry_budget = 1.5\n",
			want: "sluice.toml:2: queue.retry_budget: 1.5 is out of range [0.01, 1]",
		},
		{
			name: "backoff factor not a number",
			toml: "[queue]\n\nbackoff_factor = \"2\"\n",
			want: "sluice.toml:3: queue.backoff_factor: want a number, not a TOML string",
		},
		{
			name: "dotted key at the root",
			toml: "# comment\nqueue.max_age = \"soon\"\n",
			want: `sluice.toml:2: queue.max_age: bad duration "soon"`,
		},
		{
			name: "inline table",
			toml: "queue = { workers = 4, max_age = \"soon\" }\n",
			want: `sluice.toml:1: queue.max_age: bad duration "soon"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig("sluice.toml", []byte(tc.toml))
			if err == nil {
				t.Fatalf("parseConfig(%q) succeeded, want error %q", tc.toml, tc.want)
			}
			got, _, _ := strings.Cut(err.Error(), "\n")
			if strings.HasSuffix(tc.want, ": ") {
				if !strings.HasPrefix(got, tc.want) {
					t.Errorf("error = %q, want prefix %q", got, tc.want)
				}
				return
			}
			if got != tc.want {
				t.Errorf("error = %q\n          want %q", got, tc.want)
			}
		})
	}
}

func TestParseConfigReportsEveryError(t *testing.T) {
	_, err := parseConfig("s.toml", []byte("[queue]\nworkers = 0\nmax_age = \"x\"\n"))
	want := "s.toml:2: queue.workers: 0 must be at least 1\ns.toml:3: queue.max_age: bad duration \"x\""
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}

func TestParseConfig(t *testing.T) {
	const doc = `
[smtp]
listen = "0.0.0.0:25"
hostname = "mx.example.org"
trusted_networks = ["127.0.0.0/8", "::1/128", "192.0.2.7/24"]
local_domains = ["example.org"]
max_message_size = 10485760
max_recipients = 100

[queue]
spool = "/var/spool/sluice"
workers = 8
retry_min = "1m"
retry_max = "1h"
max_age = "120h"

[delivery]
smarthost = "relay.example.net:587"
resolvers = ["127.0.0.1:53"]
mx_port = 2525
connect_timeout = "10s"
command_timeout = "1m"

[http]
listen = "127.0.0.1:9025"

[log]
level = "debug"
format = "text"

[process]
cpu_scheduling = "inherit"
`
	got, err := parseConfig("sluice.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := &settings{
		smtpListen: "0.0.0.0:25",
		hostname:   "mx.example.org",
		trustedNetworks: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("192.0.2.0/24"),
		},
		localDomains:   []string{"example.org"},
		maxMessageSize: 10485760,
		maxRecipients:  100,
		spool:          "/var/spool/sluice",
		workers:        8,
		retryMin:       time.Minute,
		retryMax:       time.Hour,
		maxAge:         120 * time.Hour,
		smarthost:      "relay.example.net:587",
		resolvers:      []string{"127.0.0.1:53"},
		mxPort:         2525,
		connect:        10 * time.Second,
		command:        time.Minute,
		httpListen:     "127.0.0.1:9025",
		logLevel:       -4,
		logFormat:      "text",
		cpuScheduling:  "inherit",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseConfig:\n got %+v\nwant %+v", got, want)
	}
}

// TestParseConfigPacing: "0s" turns the in-flow delay off, which is not
// the same as leaving it unset (the library's default, 1s).
func TestParseConfigPacing(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want *time.Duration
	}{
		{"", nil},
		{"[smtp.limits]\nin_flow_delay = \"0s\"\n", new(time.Duration(0))},
		{"[smtp.limits]\nin_flow_delay = \"250ms\"\n", new(250 * time.Millisecond)},
	} {
		got, err := parseConfig("sluice.toml", []byte(tc.doc+"[queue]\npace_backlog = 7\n"))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.smtpLimits.inFlowDelay, tc.want) {
			t.Errorf("%q: in-flow delay %v, want %v", tc.doc, got.smtpLimits.inFlowDelay, tc.want)
		}
		if got.paceBacklog != 7 {
			t.Errorf("%q: pace backlog %d, want 7", tc.doc, got.paceBacklog)
		}
	}
}

// An empty file sets nothing: every setting keeps the library's default.
func TestParseConfigEmpty(t *testing.T) {
	got, err := parseConfig("empty.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, &settings{}) {
		t.Errorf("parseConfig(empty) = %+v, want zero settings", got)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	_, err := loadConfig(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("loadConfig(missing) = %v, want an error naming the file", err)
	}
}

func TestServeFlagsOverrideConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.toml")
	if err := os.WriteFile(cfg, []byte("[smtp]\nlisten = \"127.0.0.1:25\"\n[queue]\nspool = \"/from/file\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs, f := serveFlagSet(new(strings.Builder))
	if err := fs.Parse([]string{"--config", cfg, "--spool", "/from/flag", "--log-format", "text"}); err != nil {
		t.Fatal(err)
	}
	s, err := serveSettings(fs, f)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"listen", s.smtpListen, "127.0.0.1:25"},
		{"spool", s.spool, "/from/flag"},
		{"http", s.httpListen, defaultHTTP},
		{"log format", s.logFormat, "text"},
		{"hostname", s.hostname, ""},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestServeBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "nowhere"}, `sluice serve: --listen: want host:port`},
		{[]string{"--smarthost", "relay:0"}, `sluice serve: --smarthost: bad port "0"`},
		{[]string{"--log-level", "loud"}, `sluice serve: --log-level: `},
		{[]string{"--hostname", "bad host"}, `sluice serve: --hostname: `},
	}
	for _, tc := range tests {
		fs, f := serveFlagSet(new(strings.Builder))
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		_, err := serveSettings(fs, f)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("serve %v: error = %v, want prefix %q", tc.args, err, tc.want)
		}
	}
}

// The example configuration shipped in docs/ stays valid.
func TestExampleConfigParses(t *testing.T) {
	if _, err := loadConfig(filepath.Join("..", "..", "docs", "sluice.example.toml")); err != nil {
		t.Error(err)
	}
}

// A token file's first line is the admin token without its blanks: HTTP
// trims them from the Authorization header, so a token kept with them
// could never be presented (and sluice's own client reads it the same way).
func TestAdminTokenIsTrimmed(t *testing.T) {
	for _, content := range []string{"s3cret \n", "s3cret\t\r\nsecond line\r\n", " s3cret"} {
		path := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := parseConfig("sluice.toml", []byte("[http]\ntoken_file = \""+path+"\"\n"))
		if err != nil {
			t.Fatalf("%q: %v", content, err)
		}
		if s.adminToken != "s3cret" {
			t.Errorf("token file %q: token %q, want s3cret", content, s.adminToken)
		}
		c, err := newAPIClient(&apiFlags{tokenFile: path}, "")
		if err != nil {
			t.Fatal(err)
		}
		if c.token != "s3cret" {
			t.Errorf("token file %q: the client sends %q, want s3cret", content, c.token)
		}
	}
}
