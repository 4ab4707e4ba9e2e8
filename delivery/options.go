package delivery

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Option configures an [Agent].
type Option func(*config)

// Timeouts bounds each network stage of a delivery attempt. RFC 5321
// section 4.5.3.2 suggests minutes for most stages; the defaults (see
// [WithTimeouts]) are shorter because a hung next hop must cost a queue
// worker seconds, and a deferred message is simply retried later. The
// reply to the final "." keeps a long timeout: giving up there while the
// next hop still works can duplicate the message. A zero field means the
// default.
type Timeouts struct {
	// Connect bounds the TCP connection to one address.
	Connect time.Duration
	// Greeting bounds the wait for the 220 greeting and the EHLO reply.
	Greeting time.Duration
	// Command bounds each command's reply (STARTTLS and its handshake,
	// MAIL, RCPT, DATA, QUIT) and each write of the message body.
	Command time.Duration
	// Data bounds the wait for the reply after the final "." of DATA.
	Data time.Duration
	// DNS bounds each DNS query to one resolver.
	DNS time.Duration
}

type config struct {
	hostname   string
	smarthost  string
	resolvers  []string
	port       int
	dial       func(ctx context.Context, network, addr string) (net.Conn, error)
	timeouts   Timeouts
	maxHosts   int
	destConc   int           // sessions at once per destination
	cacheSize  int           // DNS cache entries; 0 disables the cache
	negTTL     time.Duration // cap on negative DNS caching
	now        func() time.Time
	tls        *tls.Config // nil: no STARTTLS
	logger     *slog.Logger
	registerer prometheus.Registerer
}

func defaultConfig() config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	var d net.Dialer
	return config{
		hostname: host,
		port:     25,
		dial:     d.DialContext,
		timeouts: Timeouts{
			Connect:  30 * time.Second,
			Greeting: 60 * time.Second,
			Command:  60 * time.Second,
			Data:     5 * time.Minute,
			DNS:      10 * time.Second,
		},
		maxHosts:  5,
		destConc:  20,
		cacheSize: 10000,
		negTTL:    5 * time.Minute,
		now:       time.Now,
		tls:       &tls.Config{InsecureSkipVerify: true}, // RFC 7435: encrypt without authenticating
		logger:    slog.New(slog.DiscardHandler),
		resolvers: nil, // read from /etc/resolv.conf by New when needed
	}
}

// WithHostname sets the name the agent gives in EHLO and as Reporting-MTA
// in delivery status notifications. It should be a fully qualified domain
// name that resolves back to the sending address.
// Default: os.Hostname(), or "localhost" if that fails.
func WithHostname(name string) Option { return func(c *config) { c.hostname = name } }

// WithSmarthost sends all mail to the relay at hostport ("host:port")
// instead of the recipients' MX hosts, in one session per message. The
// host may be a name, resolved through the agent's resolvers.
// Default: "" (deliver to the MX hosts).
func WithSmarthost(hostport string) Option { return func(c *config) { c.smarthost = hostport } }

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
// example to bind a source address or to go through a proxy. It must
// honour ctx.
// Default: (&net.Dialer{}).DialContext.
func WithDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(c *config) { c.dial = dial }
}

// WithTimeouts sets the deadlines of each network stage. Zero fields keep
// their defaults; negative ones are an error.
// Default: Connect 30s, Greeting 60s, Command 60s, Data 5m, DNS 10s.
func WithTimeouts(t Timeouts) Option {
	return func(c *config) {
		d := &c.timeouts
		for _, f := range []struct {
			dst *time.Duration
			v   time.Duration
		}{
			{&d.Connect, t.Connect}, {&d.Greeting, t.Greeting}, {&d.Command, t.Command},
			{&d.Data, t.Data}, {&d.DNS, t.DNS},
		} {
			if f.v != 0 {
				*f.dst = f.v
			}
		}
	}
}

// WithMaxHosts limits how many next-hop addresses (the IP addresses of the
// MX hosts, in preference order) one attempt tries for a domain.
// Default: 5.
func WithMaxHosts(n int) Option { return func(c *config) { c.maxHosts = n } }

// WithTLS sets the TLS configuration used for STARTTLS (cloned; its
// ServerName is set to the next hop's name when empty). TLS stays
// opportunistic: when the handshake fails, the agent reconnects once to
// the same address without TLS. A nil config disables STARTTLS.
// Default: STARTTLS whenever offered, without certificate verification
// (RFC 7435 opportunistic security).
func WithTLS(cfg *tls.Config) Option {
	if cfg != nil {
		cfg = cfg.Clone()
	}
	return func(c *config) { c.tls = cfg }
}

// WithLogger sets the logger for delivery log records (message
// "delivery", one per recipient and attempt) and debug records.
// Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithRegisterer registers the agent's metrics with r:
// sluice_delivery_attempts_total{result} and
// sluice_delivery_attempt_duration_seconds.
// Default: nil (no metrics).
func WithRegisterer(r prometheus.Registerer) Option { return func(c *config) { c.registerer = r } }

// WithDNSCache sets how many DNS answers (one per name and record type)
// the agent keeps, each for its TTL; "no such domain" and "no data"
// answers are kept too (see [WithNegativeTTL]). Failed lookups are never
// kept. When the cache is full, expired answers are dropped first, then
// arbitrary ones. 0 disables the cache.
// Default: 10000.
func WithDNSCache(entries int) Option { return func(c *config) { c.cacheSize = entries } }

// WithNegativeTTL caps how long a "no such domain" or "no data" answer is
// cached: the answer's own negative TTL (RFC 2308: the smaller of the SOA
// record's TTL and MINIMUM) when it carries a SOA, else d itself.
// Default: 5m.
func WithNegativeTTL(d time.Duration) Option { return func(c *config) { c.negTTL = d } }

// WithClock sets the clock that ages DNS cache entries. Tests pass a
// fake clock to expire entries without waiting.
// Default: time.Now.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithDestinationConcurrency caps the SMTP sessions open at once to one
// destination: a recipient domain, or the smarthost. Deliveries beyond
// the cap wait for a free session until their attempt's deadline, then
// defer with 451 4.4.5.
// Default: 20 (as Postfix's default_destination_concurrency_limit).
func WithDestinationConcurrency(n int) Option { return func(c *config) { c.destConc = n } }
