package smtp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
	tempDir         string
	logger          *slog.Logger
	registerer      prometheus.Registerer
	smtputf8        bool
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
		writeTimeout:    time.Minute,
		tempDir:         os.TempDir(),
		logger:          slog.New(slog.DiscardHandler),
		smtputf8:        true,
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

// WithFilters sets the pre-queue filter chain run on every message before
// it is queued; its verdict decides the reply to DATA. With filters, the
// message is spooled to a temporary file first (see [WithTempDir]).
// Default: none (messages stream straight into the queue).
func WithFilters(chain *filter.Chain) Option { return func(c *config) { c.filters = chain } }

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

// validate checks c and normalises it (lower-cased local domains, masked
// prefixes).
func (c *config) validate() error {
	switch {
	case c.hostname == "" || strings.ContainsAny(c.hostname, " \t\r\n"):
		return fmt.Errorf("smtp: hostname %q must be one non-empty word", c.hostname)
	case c.maxMessageBytes <= 0:
		return fmt.Errorf("smtp: max message bytes %d must be positive", c.maxMessageBytes)
	case c.maxRecipients <= 0:
		return fmt.Errorf("smtp: max recipients %d must be positive", c.maxRecipients)
	case c.commandTimeout <= 0 || c.dataTimeout <= 0 || c.writeTimeout <= 0:
		return errors.New("smtp: timeouts must be positive")
	case c.logger == nil:
		return errors.New("smtp: nil logger")
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
