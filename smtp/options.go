package smtp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

// Option configures a [Server].
type Option func(*config)

type config struct {
	hostname        string
	trusted         []netip.Prefix
	localDomains    []string
	maxMessageBytes int64
	maxRecipients   int
	commandTimeout  time.Duration
	dataTimeout     time.Duration
	writeTimeout    time.Duration
	filters         *filter.Chain
	filterBudget    time.Duration
	inFlowDelay     time.Duration
	tempDir         string
	logger          *slog.Logger
	registerer      prometheus.Registerer
	smtputf8        bool

	// Limits of one session.
	maxLineLength        int
	normalizeLineEndings bool
	maxHops              int
	maxErrors            int
	maxIdleCommands      int

	// Deadlines other than the command, DATA and write ones.
	greetingTimeout  time.Duration
	sessionTimeout   time.Duration
	handshakeTimeout time.Duration
	stressTimeout    time.Duration
	stressAt         int // open connections that start stress mode; 0: 80% of maxConns

	// Admission.
	maxConns      int
	maxConnsPerIP int
	connRate      rate.Limit
	connBurst     int
	msgRate       rate.Limit
	msgBurst      int
	authFailures  int
	authWindow    time.Duration
	gauges        []gaugeSpec
	gateInterval  time.Duration
	proxyNetworks []netip.Prefix
	dnsbl         dnsblConfig

	// TLS and AUTH.
	certFile, keyFile string
	tlsConfig         *tls.Config
	auth              Authenticator
}

// defaultConfig holds every default of the package; the WithX docs repeat
// them.
func defaultConfig() config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return config{
		hostname: host,
		trusted: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"),
			netip.MustParsePrefix("::1/128"),
		},
		maxMessageBytes: 25 << 20,
		maxRecipients:   1000,
		commandTimeout:  2 * time.Minute,
		dataTimeout:     2 * time.Minute,
		filterBudget:    4 * time.Minute,
		inFlowDelay:     time.Second,
		writeTimeout:    time.Minute,
		tempDir:         os.TempDir(),
		logger:          slog.New(slog.DiscardHandler),
		smtputf8:        true,

		maxLineLength:   998,
		maxHops:         50,
		maxErrors:       10,
		maxIdleCommands: 25,

		greetingTimeout:  30 * time.Second,
		sessionTimeout:   30 * time.Minute,
		handshakeTimeout: 30 * time.Second,
		stressTimeout:    10 * time.Second,

		maxConns:      1000,
		maxConnsPerIP: 20,
		connRate:      1,
		connBurst:     30,
		msgRate:       5,
		msgBurst:      100,
		authFailures:  5,
		authWindow:    10 * time.Minute,
		gateInterval:  time.Second,
		dnsbl:         dnsblConfig{timeout: 2 * time.Second},
	}
}

// WithHostname sets the name the server gives in its greeting, its EHLO
// reply and the Received header fields it adds.
// Default: os.Hostname(), or "localhost" if that fails.
func WithHostname(name string) Option { return func(c *config) { c.hostname = name } }

// WithTrustedNetworks sets the client networks that may relay to any
// domain. Clients elsewhere may only send to [WithLocalDomains]. Calling it
// with no prefixes trusts nobody.
// Default: 127.0.0.0/8 and ::1/128.
func WithTrustedNetworks(prefixes ...netip.Prefix) Option {
	p := append([]netip.Prefix{}, prefixes...)
	return func(c *config) { c.trusted = p }
}

// WithLocalDomains sets the domains the server accepts mail for from any
// client (compared case-insensitively).
// Default: none.
func WithLocalDomains(domains ...string) Option {
	d := append([]string{}, domains...)
	return func(c *config) { c.localDomains = d }
}

// WithMaxMessageBytes sets the largest message accepted, advertised with
// the SIZE extension (RFC 1870); larger messages get 552 5.3.4.
// Default: 25 MiB.
func WithMaxMessageBytes(n int64) Option { return func(c *config) { c.maxMessageBytes = n } }

// WithMaxRecipients sets the most recipients of one transaction; further
// RCPT commands get 452 4.5.3 (the client sends them in another
// transaction). Default: 1000.
func WithMaxRecipients(n int) Option { return func(c *config) { c.maxRecipients = n } }

// WithCommandTimeout sets how long the server waits for the client's next
// command line. RFC 5321 section 4.5.3.2.7 suggests 5 minutes; a shorter
// wait frees connections held by stalled or hostile clients sooner, and
// well-behaved clients send their next command at once.
// Default: 2 minutes.
func WithCommandTimeout(d time.Duration) Option { return func(c *config) { c.commandTimeout = d } }

// WithDataTimeout sets how long the server waits for each read of message
// data after DATA (an idle timeout, not a limit on the whole transfer; RFC
// 5321 section 4.5.3.2.5 gives 3 minutes per data block). It also bounds
// the filter chain of each message.
// Default: 2 minutes.
func WithDataTimeout(d time.Duration) Option { return func(c *config) { c.dataTimeout = d } }

// WithWriteTimeout sets how long a reply may take to write to the client.
// Default: 1 minute.
func WithWriteTimeout(d time.Duration) Option { return func(c *config) { c.writeTimeout = d } }

// WithFilters sets the pre-queue filter chain. Its filters run at the
// stage each was placed at (filter.AtStage): when a client connects, at
// MAIL, at each RCPT and at the end of DATA, and their verdicts are the
// replies the client gets. Headers asked for at any stage are added to the
// message. A Quarantine verdict at any stage queues the message held for
// an operator (see [HoldEnqueuer]). Filters placed after the queue
// (filter.StagePostQueue) do not run here (see delivery.WithPostQueue).
// With end-of-DATA filters the message is spooled to a temporary file
// first (see [WithTempDir]).
// Default: none (messages stream straight into the queue).
func WithFilters(chain *filter.Chain) Option { return func(c *config) { c.filters = chain } }

// WithNormalizeLineEndings makes a bare CR or LF in message data part of
// the message, completed to CRLF, instead of refusing the message with
// 550 5.5.2 and closing the connection. Either way a bare line ending never
// ends a line or the message for the protocol (SMTP smuggling): only
// CRLF.CRLF ends DATA. Default: false (refuse, as Postfix and chasquid do).
func WithNormalizeLineEndings(on bool) Option {
	return func(c *config) { c.normalizeLineEndings = on }
}

// WithFilterBudget sets the time the filters of one transaction may take
// in all, from MAIL to the end of DATA (and, separately, at connect): the
// stages share one deadline, so a client waiting on a slow filter gets a
// 451 4.3.0 before its own timeout (RFC 5321 section 4.5.3.2 suggests 5
// minutes for MAIL and RCPT). Each filter's own timeout still applies.
// Default: 4 minutes.
func WithFilterBudget(d time.Duration) Option { return func(c *config) { c.filterBudget = d } }

// WithInFlowDelay sets the longest a MAIL command waits for the queue to
// catch up when mail arrives faster than it is delivered, if the
// [Enqueuer] is a [Pacer] (*queue.Queue is). Like Postfix's in_flow_delay
// (whose default it shares), it slows each client down instead of letting
// a burst pile up in the queue, where every message costs more; it never
// refuses mail, and it does not apply while delivery is stalled (see
// queue.Queue.Pace). Zero turns it off. Default: 1s.
func WithInFlowDelay(d time.Duration) Option { return func(c *config) { c.inFlowDelay = d } }

// WithTempDir sets the directory where messages are spooled while the
// filters run. The files are removed when the transaction ends.
// Default: os.TempDir().
func WithTempDir(dir string) Option { return func(c *config) { c.tempDir = dir } }

// WithLogger sets the logger for accepted and rejected messages and for
// connection errors. Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithRegisterer sets where the server registers its metrics:
// sluice_smtp_connections_total, sluice_smtp_sessions and
// sluice_smtp_messages_total{result}. Default: none (no metrics).
func WithRegisterer(r prometheus.Registerer) Option { return func(c *config) { c.registerer = r } }

// WithSMTPUTF8 sets whether the server offers SMTPUTF8 (RFC 6531) and so
// accepts internationalised addresses from clients that ask for it.
// Default: true.
func WithSMTPUTF8(on bool) Option { return func(c *config) { c.smtputf8 = on } }

// WithMaxLineLength sets the longest line of message data, in octets
// without the CRLF; a longer line gets 550 5.6.0. Command lines may be
// somewhat longer (go-smtp's own limit, at least 2000 octets), beyond which
// the connection is closed with 500 5.4.0.
// Default: 998 (RFC 5322 section 2.1.1).
func WithMaxLineLength(n int) Option { return func(c *config) { c.maxLineLength = n } }

// WithMaxHops sets how many Received header fields a message may carry
// before it is refused as a mail loop with 554 5.4.6 (RFC 5321 section
// 6.3). Default: 50.
func WithMaxHops(n int) Option { return func(c *config) { c.maxHops = n } }

// WithMaxErrors sets how many commands of a connection may be refused (bad
// address syntax, relay denied, failed AUTH, refused message) before the
// server answers 421 4.7.0 and closes it, which slows down address
// harvesting and password guessing. go-smtp also closes a connection after
// its fourth unknown or malformed command.
// Default: 10.
func WithMaxErrors(n int) Option { return func(c *config) { c.maxErrors = n } }

// WithMaxCommandsWithoutMail sets how many commands a client may send
// outside a mail transaction (before MAIL, or between transactions: EHLO,
// NOOP, RSET, VRFY, AUTH, STARTTLS...) before the server answers 421 4.7.0
// and closes the connection. MAIL resets the count.
// Default: 25.
func WithMaxCommandsWithoutMail(n int) Option { return func(c *config) { c.maxIdleCommands = n } }

// WithGreetingTimeout sets how long a new client has to send its first
// command after the greeting.
// Default: 30 seconds.
func WithGreetingTimeout(d time.Duration) Option { return func(c *config) { c.greetingTimeout = d } }

// WithSessionTimeout sets the longest life of a connection, whatever it
// does; every other deadline is cut to end by then.
// Default: 30 minutes.
func WithSessionTimeout(d time.Duration) Option { return func(c *config) { c.sessionTimeout = d } }

// WithHandshakeTimeout bounds the TLS handshake (implicit TLS and
// STARTTLS) and the wait for the PROXY protocol header.
// Default: 30 seconds.
func WithHandshakeTimeout(d time.Duration) Option { return func(c *config) { c.handshakeTimeout = d } }

// WithStressConnections sets when stress mode starts, as Postfix's: while
// at least n connections are open, the greeting and command timeouts are
// cut to [WithStressTimeout], so idle and slow clients make room for
// others. 0 means 80% of [WithMaxConnections].
// Default: 0 (80% of the connection cap).
func WithStressConnections(n int) Option { return func(c *config) { c.stressAt = n } }

// WithStressTimeout sets the greeting and command timeout of stress mode
// (see [WithStressConnections]).
// Default: 10 seconds.
func WithStressTimeout(d time.Duration) Option { return func(c *config) { c.stressTimeout = d } }

// WithMaxConnections sets the most connections open at once, over all
// listeners. Beyond it a new connection is answered 421 4.7.0 and closed
// at once (on an implicit-TLS listener it is closed without a reply, since
// the reply would need the TLS handshake the cap is there to avoid).
// Default: 1000.
func WithMaxConnections(n int) Option { return func(c *config) { c.maxConns = n } }

// WithMaxConnectionsPerIP sets the most connections open at once from one
// client (one IPv4 address or one IPv6 /64) outside the trusted networks;
// beyond it, 421 4.7.0. Default: 20.
func WithMaxConnectionsPerIP(n int) Option { return func(c *config) { c.maxConnsPerIP = n } }

// WithConnectionRate limits new connections per second from one client
// (one IPv4 address or IPv6 /64) outside the trusted networks, with bursts
// of burst; beyond it, 421 4.7.0. rate.Inf turns the limit off.
// Default: 1 per second, bursts of 30.
func WithConnectionRate(r rate.Limit, burst int) Option {
	return func(c *config) { c.connRate, c.connBurst = r, burst }
}

// WithMessageRate limits transactions (MAIL commands) per second from one
// client outside the trusted networks, with bursts of burst; beyond it,
// 451 4.7.1. rate.Inf turns the limit off.
// Default: 5 per second, bursts of 100.
func WithMessageRate(r rate.Limit, burst int) Option {
	return func(c *config) { c.msgRate, c.msgBurst = r, burst }
}

// WithAuthFailureLimit sets how many failed AUTH attempts one client may
// make per window; once they are spent, AUTH is answered 454 4.7.0
// without checking the credentials until the budget refills.
// Default: 5 per 10 minutes.
func WithAuthFailureLimit(n int, window time.Duration) Option {
	return func(c *config) { c.authFailures, c.authWindow = n, window }
}

// WithGate adds a gauge to the health gate. When the gauge's value
// reaches high, new connections get 421 4.3.2 and new transactions 451
// 4.3.1 while transactions in progress finish; the gate opens again only
// when the value is back to low or under (hysteresis, so it does not
// flap). Gauges are sampled at most once per [WithGateInterval].
// Default: no gauges (the gate is always open).
func WithGate(name string, g Gauge, high, low float64) Option {
	return func(c *config) { c.gauges = append(c.gauges, gaugeSpec{name: name, g: g, high: high, low: low}) }
}

// WithGateInterval sets how often the gate's gauges are sampled, at most;
// they are sampled when a connection or a transaction starts.
// Default: 1 second.
func WithGateInterval(d time.Duration) Option { return func(c *config) { c.gateInterval = d } }

// WithProxyNetworks sets the networks of the load balancers that send the
// PROXY protocol header (version 1 or 2). A connection from them must
// start with one, and the client address it gives is then the client's
// address for every policy; a connection from them without a valid header
// is logged and closed. Connections from elsewhere are never read for a
// header.
// Default: none.
func WithProxyNetworks(prefixes ...netip.Prefix) Option {
	p := append([]netip.Prefix{}, prefixes...)
	return func(c *config) { c.proxyNetworks = p }
}

// WithCertificate sets the certificate and key files (PEM) of STARTTLS and
// of implicit-TLS listeners. They are loaded by New and again by
// [Server.ReloadCertificate].
// Default: none (no STARTTLS, and implicit-TLS listeners are refused).
func WithCertificate(certFile, keyFile string) Option {
	return func(c *config) { c.certFile, c.keyFile = certFile, keyFile }
}

// WithTLSConfig sets the TLS settings (versions, ciphers, client
// certificates...) used with the certificate of [WithCertificate]; the
// server keeps a copy. Without WithCertificate, cfg must hold the
// certificates itself.
// Default: Go's defaults, TLS 1.2 at least.
func WithTLSConfig(cfg *tls.Config) Option {
	var cp *tls.Config
	if cfg != nil {
		cp = cfg.Clone()
	}
	return func(c *config) { c.tlsConfig = cp }
}

// WithAuthenticator sets who checks the credentials of AUTH PLAIN and AUTH
// LOGIN, offered only over TLS. Authenticated sessions may relay to any
// domain; submission listeners require AUTH before MAIL.
// Default: none (no AUTH; submission listeners are refused).
func WithAuthenticator(a Authenticator) Option { return func(c *config) { c.auth = a } }

// validate checks c and normalises it (lower-cased local domains, masked
// prefixes).
// WithDNSBL screens clients of plain SMTP listeners at connect time
// against DNS blocklists (RFC 5782), asking resolver (host:port). Each zone
// that lists the client adds its weight; a client whose score reaches
// threshold gets 554 5.7.1 instead of a greeting. Trusted networks,
// submission listeners and clients for which a zone does not answer in
// time (that zone then counts as not listing) are let through. Answers are
// cached for their TTL (1 minute to 1 hour). Default: no screening.
func WithDNSBL(resolver string, threshold int, zones ...DNSBL) Option {
	return func(c *config) {
		c.dnsbl.resolver, c.dnsbl.threshold, c.dnsbl.zones = resolver, threshold, slices.Clone(zones)
	}
}

// WithDNSBLTimeout bounds the blocklist lookups of one connection, all
// zones together. Default: 2s.
func WithDNSBLTimeout(d time.Duration) Option { return func(c *config) { c.dnsbl.timeout = d } }

func (c *config) validateDNSBL() error {
	d := c.dnsbl
	if d.timeout <= 0 {
		return fmt.Errorf("smtp: DNSBL timeout %v must be positive", d.timeout)
	}
	if len(d.zones) == 0 {
		return nil
	}
	if _, _, err := net.SplitHostPort(d.resolver); err != nil {
		return fmt.Errorf("smtp: DNSBL resolver %q: want host:port", d.resolver)
	}
	if d.threshold < 1 {
		return fmt.Errorf("smtp: DNSBL threshold %d must be at least 1", d.threshold)
	}
	for _, z := range d.zones {
		if err := sluice.CheckDomain(strings.TrimSuffix(z.Zone, "."), false); err != nil {
			return fmt.Errorf("smtp: DNSBL zone %q: %w", z.Zone, err)
		}
		if z.Weight < 1 {
			return fmt.Errorf("smtp: DNSBL zone %s: weight %d must be at least 1", z.Zone, z.Weight)
		}
	}
	return nil
}

func (c *config) validate() error {
	if err := c.validateDNSBL(); err != nil {
		return err
	}
	switch {
	case c.hostname == "" || strings.ContainsAny(c.hostname, " \t\r\n"):
		return fmt.Errorf("smtp: hostname %q must be one non-empty word", c.hostname)
	case c.maxMessageBytes <= 0:
		return fmt.Errorf("smtp: max message bytes %d must be positive", c.maxMessageBytes)
	case c.maxRecipients <= 0:
		return fmt.Errorf("smtp: max recipients %d must be positive", c.maxRecipients)
	case c.commandTimeout <= 0 || c.dataTimeout <= 0 || c.writeTimeout <= 0 || c.filterBudget <= 0:
		return errors.New("smtp: timeouts must be positive")
	case c.inFlowDelay < 0:
		return fmt.Errorf("smtp: in-flow delay %v must not be negative", c.inFlowDelay)
	case c.logger == nil:
		return errors.New("smtp: nil logger")
	case c.maxLineLength < 78:
		return fmt.Errorf("smtp: max line length %d must be at least 78", c.maxLineLength)
	case c.maxHops <= 0 || c.maxErrors <= 0 || c.maxIdleCommands <= 0:
		return errors.New("smtp: max hops, max errors and max commands without mail must be positive")
	case c.greetingTimeout <= 0 || c.sessionTimeout <= 0 || c.handshakeTimeout <= 0 || c.stressTimeout <= 0:
		return errors.New("smtp: timeouts must be positive")
	case c.maxConns <= 0 || c.maxConnsPerIP <= 0 || c.stressAt < 0:
		return errors.New("smtp: connection limits must be positive")
	case c.connRate <= 0 || c.msgRate <= 0 || c.connBurst <= 0 || c.msgBurst <= 0:
		return errors.New("smtp: connection and message rates and bursts must be positive (rate.Inf for no limit)")
	case c.authFailures <= 0 || c.authWindow <= 0:
		return errors.New("smtp: auth failure limit and window must be positive")
	case c.gateInterval <= 0:
		return errors.New("smtp: gate interval must be positive")
	}
	if c.stressAt == 0 {
		c.stressAt = max(1, c.maxConns*4/5)
	}
	for _, g := range c.gauges {
		if err := g.check(); err != nil {
			return err
		}
	}
	for i, p := range c.proxyNetworks {
		if !p.IsValid() {
			return fmt.Errorf("smtp: proxy network %v is not a valid prefix", p)
		}
		c.proxyNetworks[i] = p.Masked()
	}
	if (c.certFile == "") != (c.keyFile == "") {
		return errors.New("smtp: certificate: give both the certificate and the key file")
	}
	for i, p := range c.trusted {
		if !p.IsValid() {
			return fmt.Errorf("smtp: trusted network %v is not a valid prefix", p)
		}
		c.trusted[i] = p.Masked()
	}
	for i, d := range c.localDomains {
		if err := sluice.CheckDomain(d, true); err != nil {
			return fmt.Errorf("smtp: local domain %q: %w", d, err)
		}
		c.localDomains[i] = strings.ToLower(d)
	}
	if c.filters.Len() > 0 {
		fi, err := os.Stat(c.tempDir)
		if err != nil {
			return fmt.Errorf("smtp: temp dir: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("smtp: temp dir %s is not a directory", c.tempDir)
		}
	}
	return nil
}
