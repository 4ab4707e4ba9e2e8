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
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
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
	Log      logConfig      `toml:"log"`
}

type smtpConfig struct {
	Listen          string   `toml:"listen"`
	Hostname        string   `toml:"hostname"`
	TrustedNetworks []string `toml:"trusted_networks"`
	LocalDomains    []string `toml:"local_domains"`
	MaxMessageSize  *int64   `toml:"max_message_size"`
	MaxRecipients   *int     `toml:"max_recipients"`
}

type queueConfig struct {
	Spool    string `toml:"spool"`
	Workers  *int   `toml:"workers"`
	RetryMin string `toml:"retry_min"`
	RetryMax string `toml:"retry_max"`
	MaxAge   string `toml:"max_age"`
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
	DNSCache         *int          `toml:"dns_cache"`
	DeadHostTime     string        `toml:"dead_host_time"`
	ShapeBy          string        `toml:"shape_by"`
	Shaping          shapingConfig `toml:"shaping"`
	Pools            []poolConfig  `toml:"pool"`
	Routes           []routeConfig `toml:"route"`
}

type httpConfig struct {
	Listen string `toml:"listen"`
}

type logConfig struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
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

	spool              string
	workers            int
	retryMin, retryMax time.Duration
	maxAge             time.Duration

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
	dnsCache  *int // nil: not set
	deadHost  time.Duration
	shapeBy   delivery.ShapeKey
	shaping   delivery.Shaping // zero fields: not set
	routes    *delivery.Routes // nil: no routes table

	httpListen string
	logLevel   slog.Level
	logFormat  string

	configFile string           // the file read, for reloads; "" if none
	reload     <-chan os.Signal // SIGHUP: reload the routes; nil in tests of parseConfig
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
		"[]string": "an array of strings", "[]int": "an array of integers", "float64": "a number"}[m[2]]
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
	counts := make(map[string]int) // array table -> entries so far
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			table = keyParts(e.Key())
		case unstable.ArrayTable:
			// Each entry of [[delivery.route]] is "delivery.route[i]", so
			// that errors name the entry and its line.
			table = keyParts(e.Key())
			name := strings.Join(table, ".")
			table[len(table)-1] += fmt.Sprintf("[%d]", counts[name])
			counts[name]++
			if it := e.Key(); it.Next() {
				lines[strings.Join(table, ".")] = p.Shape(it.Node().Raw).Start.Line
			}
		case unstable.KeyValue:
			addKeyLines(&p, lines, table, e)
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
		shaping:   v.shaping(&fc.Delivery.Shaping),
		routes:    v.routes(&fc.Delivery),

		httpListen: v.hostPort("http.listen", fc.HTTP.Listen, true),
		logFormat:  v.logFormat("log.format", fc.Log.Format),
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
	if fc.Log.Level != "" {
		if err := s.logLevel.UnmarshalText([]byte(fc.Log.Level)); err != nil {
			v.fail("log.level", "bad level %q (want debug, info, warn or error)", fc.Log.Level)
		}
	}
	return s
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
