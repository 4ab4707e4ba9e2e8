package rspamd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/health"
)

// Pool is the set of rspamd replicas a [Filter] talks to; [health.Pool]
// implements it. Pick returns the address of a healthy replica other than
// those excluded ("host:port" or "unix:/path"); Done reports the outcome
// of the exchange with it.
type Pool interface {
	Pick(exclude ...string) (string, error)
	Done(addr string, err error)
}

var _ Pool = (*health.Pool)(nil)

// Filter checks messages with rspamd. It is safe for concurrent use.
type Filter struct {
	pool   Pool
	cfg    config
	client *http.Client
}

var _ filter.Filter = (*Filter)(nil)

// maxAnswer bounds the JSON answer read from rspamd.
const maxAnswer = 4 << 20

// New returns a Filter that sends messages to the replicas of pool.
func New(pool Pool, opts ...Option) (*Filter, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if pool == nil {
		return nil, errors.New("rspamd: nil pool")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	f := &Filter{pool: pool, cfg: cfg}
	f.client = &http.Client{Transport: &http.Transport{
		// rspamd's workers close after each answer; a new connection per
		// check also means a dead replica is noticed at once.
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			addr, _ := ctx.Value(endpointKey{}).(string)
			network, address := health.SplitAddr(addr)
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, address)
			if err != nil {
				return nil, &dialError{err}
			}
			return conn, nil
		},
	}}
	return f, nil
}

// endpointKey carries the picked replica's address to the dialer.
type endpointKey struct{}

// dialError is a failure to reach a replica: nothing was sent, so another
// replica may be tried.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// Check asks rspamd about m and maps its action to a verdict (see the
// package documentation). An error means no replica answered: the chain's
// failure policy decides.
func (f *Filter) Check(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	if m.Size > f.cfg.maxSize {
		return filter.Verdict{}, nil
	}
	res, err := f.Scan(ctx, m)
	if err != nil {
		return filter.Verdict{}, err
	}
	return verdict(res)
}

// Scan sends m to an rspamd replica and returns its answer, trying another
// replica when one cannot be reached, up to the attempts set by
// [WithAttempts].
func (f *Filter) Scan(ctx context.Context, m *filter.Message) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.timeout)
	defer cancel()
	res, err := health.Try(ctx, f.pool, f.cfg.attempts, unreachable, func(addr string) (*Result, error) {
		return f.exchange(ctx, addr, m)
	})
	if err != nil {
		return nil, fmt.Errorf("rspamd %w", err)
	}
	return res, nil
}

// unreachable reports whether err says the replica could not be reached,
// so that another one may be tried.
func unreachable(err error) bool {
	_, ok := errors.AsType[*dialError](err)
	return ok
}

// exchange POSTs m to /checkv2 of the replica at addr and decodes the
// answer; ctx bounds every read and write.
func (f *Filter) exchange(ctx context.Context, addr string, m *filter.Message) (*Result, error) {
	host := addr
	if network, _ := health.SplitAddr(addr); network == "unix" {
		host = "localhost"
	}
	ctx = context.WithValue(ctx, endpointKey{}, addr)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+host+"/checkv2", m.Reader())
	if err != nil {
		return nil, err
	}
	req.ContentLength = m.Size
	f.setHeaders(req.Header, m)
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, unwrapURL(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("answer %s: %.200s", resp.Status, strings.TrimSpace(string(body)))
	}
	return parseResult(body)
}

// setHeaders passes the envelope as rspamd's request headers, leaving out
// a value HTTP cannot carry (a control character: a HELO, or a quoted
// local part, may hold any). net/http would refuse the whole request, and
// the error would count against a healthy replica: a client could eject
// every replica with a few messages and switch scanning off for everyone.
func (f *Filter) setHeaders(h http.Header, m *filter.Message) {
	set := func(k, v string) {
		if v != "" && headerValue(v) {
			h.Add(k, v)
		}
	}
	set("Password", f.cfg.password)
	e := m.Envelope
	if e == nil {
		return
	}
	set("From", e.From)
	for _, r := range e.Recipients {
		set("Rcpt", r.Address)
	}
	if e.Client.Addr.IsValid() {
		set("IP", e.Client.Addr.Addr().Unmap().String())
	}
	set("Helo", e.Client.Helo)
	set("User", e.Client.AuthUser)
	set("Queue-Id", e.ID)
}

// headerValue reports whether v may be an HTTP header field's value (RFC
// 9110 section 5.5): no control character but HTAB.
func headerValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// unwrapURL drops net/http's *url.Error wrapper, whose text repeats the
// URL, keeping the cause (a dialError, a context error).
func unwrapURL(err error) error {
	if u, ok := errors.AsType[*url.Error](err); ok {
		return u.Err
	}
	return err
}
