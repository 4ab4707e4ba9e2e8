package delivery

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice/filter"
)

// Option configures an [Agent].
type Option func(*config)

// DialFunc opens a connection to raddr ("host:port"), bound to the local
// address laddr (an IP address, or "" for any), and must honour ctx.
type DialFunc func(ctx context.Context, network, laddr, raddr string) (net.Conn, error)

// Timeouts bounds each network stage of a delivery attempt. RFC 5321
// section 4.5.3.2 suggests minutes for most stages; the defaults (see
// [WithTimeouts]) are much shorter because a hung next hop must cost a
// queue worker seconds (seed 001), and a deferred message is simply
// retried later, at the next MX host first. The reply to the final "."
// keeps a long timeout: giving up there while the next hop still works
// can duplicate the message. A zero field means the default.
type Timeouts struct {
	// Connect bounds the TCP connection to one address.
	Connect time.Duration
	// Greeting bounds the wait for the 220 greeting (the banner).
	Greeting time.Duration
	// Hello bounds the reply to EHLO (or LHLO), before and after STARTTLS.
	Hello time.Duration
	// StartTLS bounds the reply to STARTTLS and the TLS handshake.
	StartTLS time.Duration
	// Mail bounds the reply to MAIL FROM.
	Mail time.Duration
	// Rcpt bounds the reply to each RCPT TO.
	Rcpt time.Duration
	// DataStart bounds the 354 reply to the DATA command.
	DataStart time.Duration
	// Data bounds the wait for the reply after the final "." of DATA
	// (for LMTP, for all the per-recipient replies).
	Data time.Duration
	// Command bounds each write of the message body and the replies to
	// the other commands (AUTH, QUIT, RSET after an abandoned transaction,
	// the lone final dot after a 354 with no recipient left).
	Command time.Duration
	// DNS bounds each DNS query to one resolver.
	DNS time.Duration
	// DataRate is the watchdog on the transfer of the message body, in
	// bytes per second: the whole body must be written within Command
	// plus its size divided by DataRate. Each write is bounded by Command
	// too, but a peer that takes a few bytes at a time never trips that
	// and would hold a worker for hours with a large message.
	DataRate int
}

type config struct {
	hostname     string
	smarthost    string
	routes       *Routes
	resolvers    []string
	port         int
	dial         DialFunc
	timeouts     Timeouts
	maxHosts     int
	tls          *tls.Config // nil: no STARTTLS
	dnsCache     int         // entries; 0 disables the cache
	now          func() time.Time
	shaping      Shaping
	shapingRules []ShapingRule
	replyRules   []ReplyRule
	shapeBy      ShapeKey
	deadHost     time.Duration
	logger       *slog.Logger
	recorder     Recorder
	registerer   prometheus.Registerer
	postQueue    *filter.Chain // nil: no post-queue filtering
	tempDir      string        // for message copies the post-queue filters read
}

func defaultConfig() config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return config{
		hostname: host,
		port:     25,
		dial:     dialTCP,
		timeouts: Timeouts{
			Connect:   10 * time.Second,
			Greeting:  30 * time.Second,
			Hello:     30 * time.Second,
			StartTLS:  30 * time.Second,
			Mail:      30 * time.Second,
			Rcpt:      30 * time.Second,
			DataStart: 30 * time.Second,
			Data:      5 * time.Minute,
			Command:   30 * time.Second,
			DNS:       5 * time.Second,
			DataRate:  8 << 10,
		},
		maxHosts:  5,
		tls:       &tls.Config{InsecureSkipVerify: true}, // RFC 7435: encrypt without authenticating
		dnsCache:  10000,
		now:       time.Now,
		shaping:   DefaultShaping(),
		shapeBy:   ShapeByDomain,
		deadHost:  time.Minute,
		logger:    slog.New(slog.DiscardHandler),
		resolvers: nil, // read from /etc/resolv.conf by New when needed
	}
}

// dialTCP is the default DialFunc: a net.Dialer bound to laddr if given.
func dialTCP(ctx context.Context, network, laddr, raddr string) (net.Conn, error) {
	var d net.Dialer
	if laddr != "" {
		ip := net.ParseIP(laddr)
		if ip == nil {
			return nil, &net.AddrError{Err: "bad source address", Addr: laddr}
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return d.DialContext(ctx, network, raddr)
}

// WithHostname sets the name the agent gives in EHLO and as Reporting-MTA
// in delivery status notifications. It should be a fully qualified domain
// name that resolves back to the sending address. A route or pool may
// give its own EHLO name ([Egress]).
// Default: os.Hostname(), or "localhost" if that fails.
func WithHostname(name string) Option { return func(c *config) { c.hostname = name } }

// WithSmarthost sends all mail that no route of [WithRoutes] matches to
// the relay at hostport ("host:port") instead of the recipients' MX
// hosts. It is a shorthand for a last route "*" to a one-host [Pool]. The
// host may be a name, resolved through the agent's resolvers.
// Default: "" (deliver to the MX hosts).
func WithSmarthost(hostport string) Option { return func(c *config) { c.smarthost = hostport } }

// WithRoutes sets the routes table, looked up for every recipient on
// every attempt; [Agent.SetRoutes] replaces it at run time.
// Default: nil (every domain goes to its MX hosts, or to the smarthost).
func WithRoutes(r *Routes) Option { return func(c *config) { c.routes = r } }

// WithResolvers sets the DNS servers ("host:port") asked for MX, A and
// AAAA records, in order: the next one is asked when one fails.
// Default: the nameservers of /etc/resolv.conf, port 53.
func WithResolvers(addrs ...string) Option {
	addrs = append([]string(nil), addrs...)
	return func(c *config) { c.resolvers = addrs }
}

// WithPort sets the TCP port used to connect to MX hosts and address
// literals. Tests point it at a sink's port.
// Default: 25.
func WithPort(port int) Option { return func(c *config) { c.port = port } }

// WithDialer sets the function that opens connections to next hops, for
// example to go through a proxy. It is given the source address of the
// route or pool ([Egress]) and must bind to it.
// Default: a net.Dialer with LocalAddr set to the source address, if any.
func WithDialer(dial DialFunc) Option { return func(c *config) { c.dial = dial } }

// WithTimeouts sets the deadlines of each network stage. Zero fields keep
// their defaults; negative ones are an error.
// Default: Connect 10s, Greeting 30s, Hello 30s, StartTLS 30s, Mail 30s,
// Rcpt 30s, DataStart 30s, Data 5m, Command 30s, DNS 5s, DataRate 8 KiB/s
// (a 10 MiB message may take 30s plus about 21 minutes).
func WithTimeouts(t Timeouts) Option {
	return func(c *config) {
		d := &c.timeouts
		for _, f := range []struct {
			dst *time.Duration
			v   time.Duration
		}{
			{&d.Connect, t.Connect}, {&d.Greeting, t.Greeting}, {&d.Hello, t.Hello},
			{&d.StartTLS, t.StartTLS}, {&d.Mail, t.Mail}, {&d.Rcpt, t.Rcpt},
			{&d.DataStart, t.DataStart}, {&d.Data, t.Data}, {&d.Command, t.Command},
			{&d.DNS, t.DNS},
		} {
			if f.v != 0 {
				*f.dst = f.v
			}
		}
		if t.DataRate != 0 {
			d.DataRate = t.DataRate
		}
	}
}

// WithMaxHosts limits how many next-hop addresses (the IP addresses of the
// MX hosts, in preference order) one attempt tries for a domain.
// Default: 5.
func WithMaxHosts(n int) Option { return func(c *config) { c.maxHosts = n } }

// WithTLS sets the TLS configuration used for STARTTLS (cloned; its
// ServerName is set to the next hop's name when empty). Unless a route
// requires TLS ([TLSRequired]), TLS is opportunistic: when the handshake
// fails, the agent reconnects once to the same address without TLS. A nil
// config disables STARTTLS (and fails routes that require it).
// Default: STARTTLS whenever offered, without certificate verification
// (RFC 7435 opportunistic security).
func WithTLS(cfg *tls.Config) Option {
	if cfg != nil {
		cfg = cfg.Clone()
	}
	return func(c *config) { c.tls = cfg }
}

// WithDNSCache sets how many DNS answers (positive and negative) the
// agent caches; each is kept for its TTL (capped at one hour; negative
// answers for the SOA's negative TTL, RFC 2308). 0 disables the cache.
// Default: 10000.
func WithDNSCache(entries int) Option { return func(c *config) { c.dnsCache = entries } }

// WithClock sets the clock used for DNS cache expiry, dead-host memory
// and parking (idle connections expire on timers in real time). Tests inject one to expire entries
// without waiting.
// Default: time.Now.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// DefaultShaping returns the limits that [WithShaping] starts from, for a
// program that checks its own settings as [New] would: Concurrency 20,
// InitialConcurrency 5, no message or connection rate limit,
// MaxPerConnection 100, IdleTimeout 10s, ParkAfter 10, ParkFor 1m, ParkMax
// 30m.
func DefaultShaping() Shaping {
	return Shaping{
		Concurrency:        20,
		InitialConcurrency: 5,
		MaxPerConnection:   100,
		IdleTimeout:        10 * time.Second,
		ParkAfter:          10,
		ParkFor:            time.Minute,
		ParkMax:            30 * time.Minute,
	}
}

// WithShaping sets the limits applied to each destination (see
// [ShapeKey]). Zero fields keep their defaults; negative ones are an
// error.
// Default: Concurrency 20, InitialConcurrency 5, no message or connection
// rate limit, MaxPerConnection 100, IdleTimeout 10s, ParkAfter 10,
// ParkFor 1m, ParkMax 30m.
func WithShaping(s Shaping) Option {
	return func(c *config) { c.shaping = c.shaping.merge(s) }
}

// WithShapingRules gives the destinations each rule matches their own
// limits (the first matching rule applies), for example a lower
// concurrency and a message rate for a mailbox provider that throttles.
// [Agent.SetShapingRules] replaces them at run time.
// Default: none (every destination has the limits of [WithShaping]).
func WithShapingRules(rules ...ShapingRule) Option {
	rules = append([]ShapingRule(nil), rules...)
	return func(c *config) { c.shapingRules = rules }
}

// WithReplyRules sets the rules that match next-hop replies and back a
// destination off, suspend it or bounce its mail (see [ReplyRule]).
// [Agent.SetReplyRules] replaces them at run time.
// Default: none.
func WithReplyRules(rules ...ReplyRule) Option {
	rules = append([]ReplyRule(nil), rules...)
	return func(c *config) { c.replyRules = rules }
}

// WithShapeBy chooses what a destination is for shaping: the recipient
// domain, or the MX site (the sorted set of MX host names), so that all
// domains hosted by one provider share its limits. Routes to a pool are
// always shaped per pool.
// Default: ShapeByDomain.
func WithShapeBy(k ShapeKey) Option { return func(c *config) { c.shapeBy = k } }

// WithDeadHostTime sets how long a next-hop address that could not be
// reached (connection refused or timed out, no greeting) is skipped by
// every destination that uses it, before it is tried again. 0 disables
// the dead-host memory.
// Default: 1m.
func WithDeadHostTime(d time.Duration) Option { return func(c *config) { c.deadHost = d } }

// WithLogger sets the logger for delivery log records (message
// "delivery", one per recipient and attempt) and debug records.
// Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithRecorder hands every delivery log record to r as well as to the
// logger, for a log an operator can search.
// Default: nil (the logger only).
func WithRecorder(r Recorder) Option { return func(c *config) { c.recorder = r } }

// WithRegisterer registers the agent's metrics with r:
// sluice_delivery_attempts_total{result},
// sluice_delivery_attempt_duration_seconds,
// sluice_delivery_connections_total{kind="new"|"reused"},
// sluice_delivery_dead_hosts_total and
// sluice_delivery_destinations_parked_total.
// Default: nil (no metrics).
func WithRegisterer(r prometheus.Registerer) Option { return func(c *config) { c.registerer = r } }

// WithPostQueue sets the filter chain whose filters placed at
// filter.StagePostQueue run before every delivery attempt, on the
// recipients due in it, so a slow scanner never delays acceptance. A
// recipient the filters reject is bounced (a delivery status notification
// to the sender, none for the null sender) and logged; one they tempfail
// is deferred; one they discard is dropped and logged. A message they
// quarantine at its first attempt is held for an operator (see [Holder])
// and, once released, delivered without being held again. The headers the
// filters add are prepended to the message as it is sent; the queued copy
// is not changed. Filters of the other stages are ignored here.
// Default: nil (no post-queue filtering).
func WithPostQueue(c *filter.Chain) Option { return func(cfg *config) { cfg.postQueue = c } }

// WithTempDir sets the directory where a message larger than 1 MiB is
// copied for the post-queue filters, which need random access to it.
// Default: "" (os.TempDir()).
func WithTempDir(dir string) Option { return func(c *config) { c.tempDir = dir } }
