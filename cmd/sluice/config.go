package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/smtp"
)

// fileConfig is the TOML configuration file. A field left out of the file
// is its zero value (nil, ""), which means "not set": the library's
// default applies, so the binary keeps no second set of defaults.
// Durations, networks and addresses are strings here and checked by
// validate, so their errors can name the line.
type fileConfig struct {
	SMTP     smtpConfig     `toml:"smtp"`
	Queue    queueConfig    `toml:"queue"`
	Delivery deliveryConfig `toml:"delivery"`
	HTTP     httpConfig     `toml:"http"`
	Alerts   alertsConfig   `toml:"alerts"`
	Log      logConfig      `toml:"log"`
	Process  processConfig  `toml:"process"`
	Filters  []filterConfig `toml:"filter"`
}

type smtpConfig struct {
	Listen          string           `toml:"listen"`
	Listeners       []listenerConfig `toml:"listener"`
	Hostname        string           `toml:"hostname"`
	TrustedNetworks []string         `toml:"trusted_networks"`
	LocalDomains    []string         `toml:"local_domains"`
	ProxyNetworks   []string         `toml:"proxy_networks"`
	MaxMessageSize  *int64           `toml:"max_message_size"`
	MaxRecipients   *int             `toml:"max_recipients"`
	TLSCert         string           `toml:"tls_cert"`
	TLSKey          string           `toml:"tls_key"`
	AuthUsersFile   string           `toml:"auth_users_file"`
	Limits          smtpLimits       `toml:"limits"`
	Timeouts        smtpTimeouts     `toml:"timeouts"`
	Gate            smtpGate         `toml:"gate"`
	DNSBL           smtpDNSBL        `toml:"dnsbl"`
	FilterBudget    string           `toml:"filter_budget"`
}

// smtpDNSBL is [smtp.dnsbl]: connect-time blocklist screening.
type smtpDNSBL struct {
	Resolver  string   `toml:"resolver"`
	Threshold *int     `toml:"threshold"`
	Zones     []string `toml:"zones"` // "zone" or "zone=weight"
	Timeout   string   `toml:"timeout"`
}

// listenerConfig is one [[smtp.listener]] table.
type listenerConfig struct {
	Address string `toml:"address"`
	Kind    string `toml:"kind"`
}

type smtpLimits struct {
	MaxConnections         *int     `toml:"max_connections"`
	MaxConnectionsPerIP    *int     `toml:"max_connections_per_ip"`
	ConnectionRate         *float64 `toml:"connection_rate"`
	ConnectionBurst        *int     `toml:"connection_burst"`
	MessageRate            *float64 `toml:"message_rate"`
	MessageBurst           *int     `toml:"message_burst"`
	MaxErrors              *int     `toml:"max_errors"`
	MaxCommandsWithoutMail *int     `toml:"max_commands_without_mail"`
	MaxLineLength          *int     `toml:"max_line_length"`
	MaxHops                *int     `toml:"max_hops"`
	NormalizeLineEndings   bool     `toml:"normalize_line_endings"`
	AuthFailures           *int     `toml:"auth_failures"`
	AuthWindow             string   `toml:"auth_window"`
	InFlowDelay            string   `toml:"in_flow_delay"`
}

type smtpTimeouts struct {
	Greeting          string `toml:"greeting"`
	Command           string `toml:"command"`
	Data              string `toml:"data"`
	Session           string `toml:"session"`
	Handshake         string `toml:"handshake"`
	Stress            string `toml:"stress"`
	StressConnections *int   `toml:"stress_connections"`
}

// smtpGate holds the watermarks of the health gate; a gauge is on when
// its high watermark is set.
type smtpGate struct {
	QueueDepthHigh *float64 `toml:"queue_depth_high"`
	QueueDepthLow  *float64 `toml:"queue_depth_low"`
	QueueAgeHigh   string   `toml:"queue_age_high"`
	QueueAgeLow    string   `toml:"queue_age_low"`
	DiskHigh       *float64 `toml:"disk_high"`
	DiskLow        *float64 `toml:"disk_low"`
	OpenFilesHigh  *float64 `toml:"open_files_high"`
	OpenFilesLow   *float64 `toml:"open_files_low"`
}

type queueConfig struct {
	Spool         string   `toml:"spool"`
	Workers       *int     `toml:"workers"`
	RetryMin      string   `toml:"retry_min"`
	RetryMax      string   `toml:"retry_max"`
	BackoffFactor *float64 `toml:"backoff_factor"`
	RetryBudget   *float64 `toml:"retry_budget"`
	RestartSpread string   `toml:"restart_spread"`
	MaxAge        string   `toml:"max_age"`
	DelayWarning  string   `toml:"delay_warning"`
	PaceBacklog   *int     `toml:"pace_backlog"`
}

type deliveryConfig struct {
	Smarthost        string        `toml:"smarthost"`
	Resolvers        []string      `toml:"resolvers"`
	MXPort           *int          `toml:"mx_port"`
	ConnectTimeout   string        `toml:"connect_timeout"`
	GreetingTimeout  string        `toml:"greeting_timeout"`
	HelloTimeout     string        `toml:"hello_timeout"`
	StartTLSTimeout  string        `toml:"starttls_timeout"`
	MailTimeout      string        `toml:"mail_timeout"`
	RcptTimeout      string        `toml:"rcpt_timeout"`
	DataStartTimeout string        `toml:"data_start_timeout"`
	CommandTimeout   string        `toml:"command_timeout"`
	DataTimeout      string        `toml:"data_timeout"`
	DNSTimeout       string        `toml:"dns_timeout"`
	DataRate         *int          `toml:"data_rate"`
	DNSCache         *int          `toml:"dns_cache"`
	DeadHostTime     string        `toml:"dead_host_time"`
	ShapeBy          string        `toml:"shape_by"`
	Shaping          shapingConfig `toml:"shaping"`
	Pools            []poolConfig  `toml:"pool"`
	Routes           []routeConfig `toml:"route"`
	Limits           []limitConfig `toml:"limits"`
	ReplyRules       []replyConfig `toml:"reply_rule"`
}

type httpConfig struct {
	Listen    string `toml:"listen"`
	TokenFile string `toml:"token_file"`
	LameDuck  string `toml:"lame_duck"`
	Pprof     bool   `toml:"pprof"`
}

type logConfig struct {
	Level        string  `toml:"level"`
	Format       string  `toml:"format"`
	DeliveryFile *string `toml:"delivery_file"`
}

// processConfig is [process]: how the operating system runs the process.
type processConfig struct {
	CPUScheduling string `toml:"cpu_scheduling"`
}

// settings is the checked configuration, from the file and the flags.
// Zero values mean "library default" except where the binary has its own
// setting (addresses, spool, logging), whose defaults are in serveFlags.
type settings struct {
	smtpListen      string
	hostname        string
	trustedNetworks []netip.Prefix // nil: not set
	localDomains    []string       // nil: not set
	maxMessageSize  int64
	maxRecipients   int
	listeners       []listenerSetting
	proxyNetworks   []netip.Prefix
	dnsblResolver   string
	dnsblThreshold  int
	dnsblZones      []smtp.DNSBL
	dnsblTimeout    time.Duration
	tlsCert, tlsKey string
	authUsersFile   string
	smtpLimits      smtpLimitSettings
	smtpTimeouts    smtpTimeoutSettings
	gate            []gateSetting
	filterBudget    time.Duration
	filters         []filterSpec // the [[filter]] tables; nil: none

	spool              string
	workers            int
	retryMin, retryMax time.Duration
	backoffFactor      float64
	retryBudget        float64
	restartSpread      *time.Duration // nil: not set (zero is a setting)
	maxAge             time.Duration
	delayWarning       time.Duration
	paceBacklog        int

	smarthost string
	resolvers []string
	mxPort    int
	connect   time.Duration
	greeting  time.Duration
	hello     time.Duration
	startTLS  time.Duration
	mail      time.Duration
	rcpt      time.Duration
	dataStart time.Duration
	command   time.Duration
	data      time.Duration
	dns       time.Duration
	dataRate  int
	dnsCache  *int // nil: not set
	deadHost  time.Duration
	shapeBy   delivery.ShapeKey
	shaping   delivery.Shaping // zero fields: not set
	routes    *delivery.Routes // nil: no routes table
	limits    []delivery.ShapingRule
	replies   []delivery.ReplyRule

	httpListen   string
	adminToken   string        // bearer token of the admin API; "" for none
	lameDuck     time.Duration // not ready but serving, before the listeners close
	alerts       alertSettings
	logLevel     slog.Level
	logFormat    string
	deliveryFile *string // the delivery log; nil: in the spool, "": none
	pprof        bool    // serve /debug/pprof/ on the HTTP listener

	cpuScheduling string // "batch" or "inherit"; "": not set (batch)

	configFile string           // the file read, for reloads; "" if none
	reload     <-chan os.Signal // SIGHUP: reload the routes and rules; nil in tests of parseConfig
}

// listenerSetting is an extra SMTP listener.
type listenerSetting struct {
	address string
	kind    smtp.Kind
}

// smtpLimitSettings are the acceptor's limits; zero means the library's
// default.
type smtpLimitSettings struct {
	maxConns, maxConnsPerIP int
	connRate, msgRate       float64
	connBurst, msgBurst     int
	maxErrors, maxIdle      int
	maxLineLength, maxHops  int
	normalize               bool
	authFailures            int
	authWindow              time.Duration
	inFlowDelay             *time.Duration // nil: not set (zero turns pacing off)
}

type smtpTimeoutSettings struct {
	greeting, command, data, session, handshake, stress time.Duration
	stressConnections                                   int
}

// gateSetting is one gauge of the health gate: "queue_depth", "queue_age"
// (seconds), "disk" or
// "open_files".
type gateSetting struct {
	gauge     string
	high, low float64
}

// configError is an operator's mistake in the configuration file, located
// by file and line.
type configError struct {
	file string
	line int
	msg  string
}

func (e *configError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.file, e.line, e.msg)
	}
	return fmt.Sprintf("%s: %s", e.file, e.msg)
}

// loadConfig reads and checks the configuration file at path.
func loadConfig(path string) (*settings, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parseConfig(path, data)
}

// parseConfig decodes data strictly (unknown keys are errors) and checks
// every value; name is the file name used in error messages.
func parseConfig(name string, data []byte) (*settings, error) {
	var fc fileConfig
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return nil, decodeError(name, err)
	}
	lines, err := keyLines(data)
	if err != nil {
		return nil, decodeError(name, err) // not reached: Decode parsed it
	}
	v := validator{file: name, lines: lines}
	s := v.settings(&fc)
	if err := errors.Join(v.errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// decodeError turns a go-toml error into configErrors with file and line.
func decodeError(name string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		errs := make([]error, 0, len(strict.Errors))
		for _, e := range strict.Errors {
			line, _ := e.Position()
			errs = append(errs, &configError{name, line, "unknown key " + strings.Join(e.Key(), ".")})
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		msg := friendlyTypeError(strings.TrimPrefix(de.Error(), "toml: "))
		if k := de.Key(); len(k) > 0 {
			msg = strings.Join(k, ".") + ": " + msg
		}
		return &configError{name, line, msg}
	}
	var pe *unstable.ParserError
	if errors.As(err, &pe) {
		return &configError{name, 0, pe.Error()}
	}
	return &configError{name, 0, err.Error()}
}

var typeErrorRE = regexp.MustCompile(`^cannot decode TOML (\w+) into struct field \S+ of type (\S+)$`)

// friendlyTypeError rewords go-toml's type mismatch, which names Go types
// an operator has never seen.
func friendlyTypeError(msg string) string {
	m := typeErrorRE.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	want := map[string]string{"string": "a string", "int": "an integer", "*int": "an integer", "*int64": "an integer",
		"*float64": "a number", "float64": "a number", "[]string": "an array of strings", "[]int": "an array of integers"}[m[2]]
	if want == "" {
		want = "another type"
	}
	return fmt.Sprintf("want %s, not a TOML %s", want, m[1])
}

// keyLines maps each dotted key path of the document ("queue.retry_min")
// to the line where its value is set, using go-toml's parser because the
// decoder does not report positions of values it decoded successfully.
func keyLines(data []byte) (map[string]int, error) {
	lines := make(map[string]int)
	var p unstable.Parser
	p.Reset(data)
	var table []string
	// Keys of the i-th element of an array table are recorded under two
	// names: "smtp.listener.i.address" and "delivery.route[i].pool".
	arrays := make(map[string]int) // elements of each array table so far
	var bracketed []string         // the bracketed name of the current table, if any
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			table, bracketed = keyParts(e.Key()), nil
		case unstable.ArrayTable:
			table = keyParts(e.Key())
			name := strings.Join(table, ".")
			bracketed = append([]string(nil), table...)
			bracketed[len(bracketed)-1] += fmt.Sprintf("[%d]", arrays[name])
			if it := e.Key(); it.Next() {
				lines[strings.Join(bracketed, ".")] = p.Shape(it.Node().Raw).Start.Line
			}
			table = append(table, strconv.Itoa(arrays[name]))
			arrays[name]++
		case unstable.KeyValue:
			addKeyLines(&p, lines, table, e)
			if bracketed != nil {
				addKeyLines(&p, lines, bracketed, e)
			}
		}
	}
	return lines, p.Error()
}

func addKeyLines(p *unstable.Parser, lines map[string]int, prefix []string, kv *unstable.Node) {
	it := kv.Key()
	var line int
	path := append([]string(nil), prefix...)
	for it.Next() {
		n := it.Node()
		path = append(path, string(n.Data))
		if line == 0 {
			line = p.Shape(n.Raw).Start.Line
		}
	}
	lines[strings.Join(path, ".")] = line
	if v := kv.Value(); v != nil && v.Kind == unstable.InlineTable {
		children := v.Children()
		for children.Next() {
			addKeyLines(p, lines, path, children.Node())
		}
	}
}

func keyParts(it unstable.Iterator) []string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}

// validator checks decoded values, collecting one error per bad key.
type validator struct {
	file  string
	lines map[string]int
	errs  []error
}

// fail records an error at the line of key, or, for a key missing from
// an entry of an array of tables, at the line of the entry's header.
func (v *validator) fail(key, format string, args ...any) {
	line := v.lines[key]
	for k := key; line == 0 && strings.Contains(k, "."); {
		k = k[:strings.LastIndexByte(k, '.')]
		line = v.lines[k]
	}
	v.errs = append(v.errs, &configError{v.file, line, key + ": " + fmt.Sprintf(format, args...)})
}

func (v *validator) settings(fc *fileConfig) *settings {
	s := &settings{
		smtpListen:     v.hostPort("smtp.listen", fc.SMTP.Listen, true),
		hostname:       v.domain("smtp.hostname", fc.SMTP.Hostname),
		maxMessageSize: v.positive64("smtp.max_message_size", fc.SMTP.MaxMessageSize),
		maxRecipients:  v.positive("smtp.max_recipients", fc.SMTP.MaxRecipients),

		spool:    fc.Queue.Spool,
		workers:  v.positive("queue.workers", fc.Queue.Workers),
		retryMin: v.duration("queue.retry_min", fc.Queue.RetryMin),
		retryMax: v.duration("queue.retry_max", fc.Queue.RetryMax),
		maxAge:   v.duration("queue.max_age", fc.Queue.MaxAge),

		backoffFactor: v.float("queue.backoff_factor", fc.Queue.BackoffFactor, 1, 16),
		retryBudget:   v.float("queue.retry_budget", fc.Queue.RetryBudget, 0.01, 1),
		delayWarning:  v.duration("queue.delay_warning", fc.Queue.DelayWarning),
		paceBacklog:   v.positive("queue.pace_backlog", fc.Queue.PaceBacklog),

		smarthost: v.hostPort("delivery.smarthost", fc.Delivery.Smarthost, false),
		mxPort:    v.port("delivery.mx_port", fc.Delivery.MXPort),
		connect:   v.duration("delivery.connect_timeout", fc.Delivery.ConnectTimeout),
		greeting:  v.duration("delivery.greeting_timeout", fc.Delivery.GreetingTimeout),
		hello:     v.duration("delivery.hello_timeout", fc.Delivery.HelloTimeout),
		startTLS:  v.duration("delivery.starttls_timeout", fc.Delivery.StartTLSTimeout),
		mail:      v.duration("delivery.mail_timeout", fc.Delivery.MailTimeout),
		rcpt:      v.duration("delivery.rcpt_timeout", fc.Delivery.RcptTimeout),
		dataStart: v.duration("delivery.data_start_timeout", fc.Delivery.DataStartTimeout),
		command:   v.duration("delivery.command_timeout", fc.Delivery.CommandTimeout),
		data:      v.duration("delivery.data_timeout", fc.Delivery.DataTimeout),
		dns:       v.duration("delivery.dns_timeout", fc.Delivery.DNSTimeout),
		dnsCache:  v.nonNegative("delivery.dns_cache", fc.Delivery.DNSCache),
		deadHost:  v.duration("delivery.dead_host_time", fc.Delivery.DeadHostTime),
		shapeBy:   v.shapeBy("delivery.shape_by", fc.Delivery.ShapeBy),
		dataRate:  v.positive("delivery.data_rate", fc.Delivery.DataRate),
		shaping:   v.shaping("delivery.shaping", &fc.Delivery.Shaping),
		routes:    v.routes(&fc.Delivery),
		limits:    v.limits(fc.Delivery.Limits),
		replies:   v.replyRules(fc.Delivery.ReplyRules),

		filterBudget: v.duration("smtp.filter_budget", fc.SMTP.FilterBudget),
		filters:      v.filters(fc.Filters),

		httpListen:   v.hostPort("http.listen", fc.HTTP.Listen, true),
		logFormat:    v.logFormat("log.format", fc.Log.Format),
		deliveryFile: fc.Log.DeliveryFile,
		pprof:        fc.HTTP.Pprof,
		lameDuck:     v.duration("http.lame_duck", fc.HTTP.LameDuck),
		alerts:       v.alerts(&fc.Alerts),

		cpuScheduling: v.oneOf("process.cpu_scheduling", fc.Process.CPUScheduling, "batch", "inherit"),
	}
	v.parkBounds(s.shaping, s.limits, s.replies)
	if fc.HTTP.TokenFile != "" {
		// A bearer token never holds blanks, and HTTP trims them from
		// the header: a token kept with them could never be presented.
		if s.adminToken = strings.TrimSpace(v.secret("http.token_file", fc.HTTP.TokenFile)); s.adminToken == "" && len(v.errs) == 0 {
			v.fail("http.token_file", "the first line of %s is empty", fc.HTTP.TokenFile)
		}
	}
	if fc.SMTP.TrustedNetworks != nil {
		s.trustedNetworks = make([]netip.Prefix, 0, len(fc.SMTP.TrustedNetworks))
		for _, n := range fc.SMTP.TrustedNetworks {
			p, err := netip.ParsePrefix(n)
			if err != nil {
				v.fail("smtp.trusted_networks", "bad CIDR %q", n)
				continue
			}
			s.trustedNetworks = append(s.trustedNetworks, p.Masked())
		}
	}
	if fc.SMTP.LocalDomains != nil {
		s.localDomains = make([]string, 0, len(fc.SMTP.LocalDomains))
		for _, d := range fc.SMTP.LocalDomains {
			s.localDomains = append(s.localDomains, v.domain("smtp.local_domains", d))
		}
	}
	v.smtpExtras(&fc.SMTP, s)
	if fc.Delivery.Resolvers != nil {
		for _, r := range fc.Delivery.Resolvers {
			if a := v.hostPort("delivery.resolvers", r, false); a != "" {
				s.resolvers = append(s.resolvers, a)
			}
		}
	}
	if (fc.Queue.RetryMin == "") != (fc.Queue.RetryMax == "") {
		key := "queue.retry_min"
		if fc.Queue.RetryMin == "" {
			key = "queue.retry_max"
		}
		v.fail(key, "set queue.retry_min and queue.retry_max together")
	} else if s.retryMin > s.retryMax {
		v.fail("queue.retry_max", "%v is less than queue.retry_min %v", s.retryMax, s.retryMin)
	}
	if fc.Queue.RestartSpread != "" {
		d := v.duration("queue.restart_spread", fc.Queue.RestartSpread)
		s.restartSpread = &d
	}
	if fc.Log.Level != "" {
		if err := s.logLevel.UnmarshalText([]byte(fc.Log.Level)); err != nil {
			v.fail("log.level", "bad level %q (want debug, info, warn or error)", fc.Log.Level)
		}
	}
	return s
}

// float checks an optional number against [lo, hi]; 0 means not set.
func (v *validator) float(key string, f *float64, lo, hi float64) float64 {
	if f == nil {
		return 0
	}
	if *f < lo || *f > hi {
		v.fail(key, "%v is out of range [%v, %v]", *f, lo, hi)
		return 0
	}
	return *f
}

func (v *validator) duration(key, s string) time.Duration {
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		v.fail(key, "bad duration %q", s)
		return 0
	}
	if d <= 0 {
		v.fail(key, "duration %q must be positive", s)
		return 0
	}
	return d
}

func (v *validator) positive(key string, n *int) int {
	if n == nil {
		return 0
	}
	if *n < 1 {
		v.fail(key, "%d must be at least 1", *n)
		return 0
	}
	return *n
}

func (v *validator) positive64(key string, n *int64) int64 {
	if n == nil {
		return 0
	}
	if *n < 1 {
		v.fail(key, "%d must be at least 1", *n)
		return 0
	}
	return *n
}

func (v *validator) port(key string, n *int) int {
	if n == nil {
		return 0
	}
	if *n < 1 || *n > 65535 {
		v.fail(key, "port %d out of range 1-65535", *n)
		return 0
	}
	return *n
}

// hostPort checks a "host:port" address; a listen address may have port 0
// and an empty host.
func (v *validator) hostPort(key, s string, listen bool) string {
	if s == "" {
		return ""
	}
	if err := checkHostPort(s, listen); err != nil {
		v.fail(key, "bad address %q: %v", s, err)
		return ""
	}
	return s
}

func (v *validator) domain(key, s string) string {
	if s == "" {
		return ""
	}
	if err := sluice.CheckDomain(s, false); err != nil {
		v.fail(key, "bad domain %q: %v", s, err)
		return ""
	}
	return s
}

// oneOf checks an optional word against the allowed ones; "" is not set.
func (v *validator) oneOf(key, s string, allowed ...string) string {
	if s == "" || slices.Contains(allowed, s) {
		return s
	}
	v.fail(key, "bad value %q (want %s)", s, strings.Join(allowed, " or "))
	return ""
}

func (v *validator) logFormat(key, s string) string {
	if err := checkLogFormat(s); err != nil {
		v.fail(key, "%v", err)
		return ""
	}
	return s
}

// checkHostPort accepts "host:port" with a numeric port (0 only for
// listen addresses, where it asks the kernel for one).
func checkHostPort(s string, listen bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port")
	}
	n, err := strconv.Atoi(port)
	min := 1
	if listen {
		min = 0
	}
	if err != nil || n < min || n > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	if host == "" && !listen {
		return errors.New("empty host")
	}
	return nil
}

func checkLogFormat(s string) error {
	switch s {
	case "", "json", "text":
		return nil
	}
	return fmt.Errorf("bad format %q (want json or text)", s)
}

// smtpExtras checks the listeners, TLS, AUTH, PROXY, limits, timeouts and
// gate of [smtp].
// dnsbl checks [smtp.dnsbl]: zones as "zone" (weight 1) or "zone=weight",
// a resolver, and a threshold that defaults to 1.
func (v *validator) dnsbl(c *smtpDNSBL, s *settings) {
	s.dnsblTimeout = v.duration("smtp.dnsbl.timeout", c.Timeout)
	if len(c.Zones) == 0 {
		if c.Resolver != "" || c.Threshold != nil {
			v.fail("smtp.dnsbl.zones", "no zones: set smtp.dnsbl.zones or remove [smtp.dnsbl]")
		}
		return
	}
	for _, z := range c.Zones {
		name, w, found := strings.Cut(z, "=")
		weight := 1
		if found {
			n, err := strconv.Atoi(w)
			if err != nil || n < 1 {
				v.fail("smtp.dnsbl.zones", "bad weight in %q (want zone=N, N at least 1)", z)
				continue
			}
			weight = n
		}
		if err := sluice.CheckDomain(name, false); err != nil {
			v.fail("smtp.dnsbl.zones", "bad zone %q: %v", name, err)
			continue
		}
		s.dnsblZones = append(s.dnsblZones, smtp.DNSBL{Zone: name, Weight: weight})
	}
	if s.dnsblResolver = v.hostPort("smtp.dnsbl.resolver", c.Resolver, false); c.Resolver == "" {
		v.fail("smtp.dnsbl.zones", "set smtp.dnsbl.resolver (host:port of a resolver that may query the lists)")
	}
	s.dnsblThreshold = 1
	if c.Threshold != nil {
		s.dnsblThreshold = v.positive("smtp.dnsbl.threshold", c.Threshold)
	}
}

func (v *validator) smtpExtras(c *smtpConfig, s *settings) {
	for i, l := range c.Listeners {
		key := fmt.Sprintf("smtp.listener.%d", i)
		addr := v.hostPort(key+".address", l.Address, true)
		if l.Address == "" {
			v.fail(key+".address", "missing")
		}
		kind, ok := map[string]smtp.Kind{"smtp": smtp.KindSMTP, "submission": smtp.KindSubmission, "submissions": smtp.KindSubmissions}[l.Kind]
		if !ok {
			v.fail(key+".kind", "bad kind %q (want smtp, submission or submissions)", l.Kind)
			continue
		}
		if kind != smtp.KindSMTP && (c.TLSCert == "" || c.AuthUsersFile == "") {
			v.fail(key+".kind", "a %s listener needs smtp.tls_cert, smtp.tls_key and smtp.auth_users_file", l.Kind)
		}
		s.listeners = append(s.listeners, listenerSetting{address: addr, kind: kind})
	}
	for _, n := range c.ProxyNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			v.fail("smtp.proxy_networks", "bad CIDR %q", n)
			continue
		}
		s.proxyNetworks = append(s.proxyNetworks, p.Masked())
	}
	v.dnsbl(&c.DNSBL, s)
	if (c.TLSCert == "") != (c.TLSKey == "") {
		v.fail("smtp.tls_cert", "set smtp.tls_cert and smtp.tls_key together")
	}
	s.tlsCert, s.tlsKey, s.authUsersFile = c.TLSCert, c.TLSKey, c.AuthUsersFile

	l := c.Limits
	s.smtpLimits = smtpLimitSettings{
		maxConns:      v.positive("smtp.limits.max_connections", l.MaxConnections),
		maxConnsPerIP: v.positive("smtp.limits.max_connections_per_ip", l.MaxConnectionsPerIP),
		connRate:      v.rate("smtp.limits.connection_rate", l.ConnectionRate),
		connBurst:     v.positive("smtp.limits.connection_burst", l.ConnectionBurst),
		msgRate:       v.rate("smtp.limits.message_rate", l.MessageRate),
		msgBurst:      v.positive("smtp.limits.message_burst", l.MessageBurst),
		maxErrors:     v.positive("smtp.limits.max_errors", l.MaxErrors),
		maxIdle:       v.positive("smtp.limits.max_commands_without_mail", l.MaxCommandsWithoutMail),
		maxLineLength: v.positive("smtp.limits.max_line_length", l.MaxLineLength),
		maxHops:       v.positive("smtp.limits.max_hops", l.MaxHops),
		normalize:     l.NormalizeLineEndings,
		authFailures:  v.positive("smtp.limits.auth_failures", l.AuthFailures),
		authWindow:    v.duration("smtp.limits.auth_window", l.AuthWindow),
	}
	if l.InFlowDelay != "" {
		d, err := time.ParseDuration(l.InFlowDelay)
		if err != nil || d < 0 {
			v.fail("smtp.limits.in_flow_delay", "bad duration %q (want 0s to turn it off, or a positive duration)", l.InFlowDelay)
		}
		s.smtpLimits.inFlowDelay = &d
	}
	if (l.ConnectionRate == nil) != (l.ConnectionBurst == nil) {
		v.fail("smtp.limits.connection_rate", "set smtp.limits.connection_rate and connection_burst together")
	}
	if (l.MessageRate == nil) != (l.MessageBurst == nil) {
		v.fail("smtp.limits.message_rate", "set smtp.limits.message_rate and message_burst together")
	}
	if (l.AuthFailures == nil) != (l.AuthWindow == "") {
		v.fail("smtp.limits.auth_failures", "set smtp.limits.auth_failures and auth_window together")
	}
	t := c.Timeouts
	s.smtpTimeouts = smtpTimeoutSettings{
		greeting:          v.duration("smtp.timeouts.greeting", t.Greeting),
		command:           v.duration("smtp.timeouts.command", t.Command),
		data:              v.duration("smtp.timeouts.data", t.Data),
		session:           v.duration("smtp.timeouts.session", t.Session),
		handshake:         v.duration("smtp.timeouts.handshake", t.Handshake),
		stress:            v.duration("smtp.timeouts.stress", t.Stress),
		stressConnections: v.positive("smtp.timeouts.stress_connections", t.StressConnections),
	}
	g := c.Gate
	v.gauge(s, "queue_depth", g.QueueDepthHigh, g.QueueDepthLow)
	v.ageGauge(s, g.QueueAgeHigh, g.QueueAgeLow)
	v.gauge(s, "disk", g.DiskHigh, g.DiskLow)
	v.gauge(s, "open_files", g.OpenFilesHigh, g.OpenFilesLow)
}

// ageGauge checks the watermarks of the oldest-message gauge, given as
// durations and kept in seconds.
func (v *validator) ageGauge(s *settings, high, low string) {
	const key = "smtp.gate.queue_age"
	if high == "" && low == "" {
		return
	}
	if high == "" || low == "" {
		v.fail(key+"_high", "set %s_high and %s_low together", key, key)
		return
	}
	h, l := v.duration(key+"_high", high), v.duration(key+"_low", low)
	if h == 0 || l == 0 {
		return
	}
	if l > h {
		v.fail(key+"_low", "%v must be at most %s_high (%v)", l, key, h)
		return
	}
	s.gate = append(s.gate, gateSetting{gauge: "queue_age", high: h.Seconds(), low: l.Seconds()})
}

// gauge checks the watermarks of one gauge of the health gate: both set
// or neither, low <= high, and fractions for disk and open files.
func (v *validator) gauge(s *settings, name string, high, low *float64) {
	key := "smtp.gate." + name
	if high == nil && low == nil {
		return
	}
	if high == nil || low == nil {
		v.fail(key+"_high", "set %s_high and %s_low together", key, key)
		return
	}
	if *low > *high || *low < 0 {
		v.fail(key+"_low", "%v must be between 0 and %s_high (%v)", *low, key, *high)
		return
	}
	if name != "queue_depth" && *high > 1 {
		v.fail(key+"_high", "%v is a fraction: want at most 1", *high)
		return
	}
	s.gate = append(s.gate, gateSetting{gauge: name, high: *high, low: *low})
}
