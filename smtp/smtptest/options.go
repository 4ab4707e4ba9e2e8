package smtptest

import (
	"crypto/tls"
	"time"
)

// Option configures a [Sink].
type Option func(*config)

type config struct {
	listenAddr  string
	domain      string
	rcptFunc    func(from, to string) error
	mailFunc    func(from string) error
	dataFunc    func(m *Message) error
	tls         *tls.Config
	smtpUTF8    bool
	dsn         bool
	readTimeout time.Duration
}

func defaultConfig() config {
	return config{
		listenAddr:  "127.0.0.1:0",
		domain:      "sink.test",
		readTimeout: 30 * time.Second,
	}
}

// WithListenAddr sets the address the sink listens on, such as
// "127.0.0.2:0". Default: "127.0.0.1:0".
func WithListenAddr(addr string) Option { return func(c *config) { c.listenAddr = addr } }

// WithDomain sets the name the sink gives in its greeting and EHLO reply.
// Default: "sink.test".
func WithDomain(name string) Option { return func(c *config) { c.domain = name } }

// WithMailFunc sets a hook called for each MAIL command with the
// reverse-path. A non-nil error refuses the command: a *sluice.Reply or a
// *smtp.SMTPError is sent as is, other errors as 451 4.0.0.
// Default: accept every sender.
func WithMailFunc(f func(from string) error) Option { return func(c *config) { c.mailFunc = f } }

// WithRcptFunc sets a hook called for each RCPT command. A non-nil error
// refuses that recipient, as for [WithMailFunc].
// Default: accept every recipient.
func WithRcptFunc(f func(from, to string) error) Option { return func(c *config) { c.rcptFunc = f } }

// WithDataFunc sets a hook that decides the reply at the end of DATA. It
// sees the complete message; only messages it accepts (nil) are recorded.
// Errors are sent as for [WithMailFunc], others as 554 5.0.0.
// Default: accept every message.
func WithDataFunc(f func(m *Message) error) Option { return func(c *config) { c.dataFunc = f } }

// WithTLS makes the sink offer STARTTLS with cfg (cloned).
// Default: no STARTTLS.
func WithTLS(cfg *tls.Config) Option {
	if cfg != nil {
		cfg = cfg.Clone()
	}
	return func(c *config) { c.tls = cfg }
}

// WithSMTPUTF8 makes the sink advertise SMTPUTF8 (RFC 6531) when on.
// Default: off.
func WithSMTPUTF8(on bool) Option { return func(c *config) { c.smtpUTF8 = on } }

// WithDSN makes the sink advertise DSN (RFC 3461) when on.
// Default: off.
func WithDSN(on bool) Option { return func(c *config) { c.dsn = on } }

// WithReadTimeout bounds how long the sink waits for each client command
// or write. Default: 30s.
func WithReadTimeout(d time.Duration) Option { return func(c *config) { c.readTimeout = d } }
