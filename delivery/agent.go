package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// Enqueuer is where the agent queues the delivery status notifications it
// builds; *queue.Queue implements it.
type Enqueuer interface {
	Enqueue(ctx context.Context, env *sluice.Envelope, body io.Reader) (string, error)
}

// Agent delivers queued messages to their next hops over SMTP and builds
// delivery status notifications. It is safe for concurrent use: the queue
// calls Deliver from many workers at once.
type Agent struct {
	cfg     config
	dsn     Enqueuer
	dns     *resolver
	limits  *destLimiter
	metrics *metrics // nil without a Registerer
	log     *slog.Logger
}

var (
	_ queue.Deliverer     = (*Agent)(nil)
	_ queue.Bouncer       = (*Agent)(nil)
	_ queue.DelayNotifier = (*Agent)(nil)
)

// maxParallelDomains bounds the sessions one Deliver call runs at once
// for the different domains of a message.
const maxParallelDomains = 8

// New returns an Agent that queues delivery status notifications into dsn.
func New(dsn Enqueuer, opts ...Option) (*Agent, error) {
	if dsn == nil {
		return nil, errors.New("delivery: nil Enqueuer for notifications")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(cfg.resolvers) == 0 && cfg.needsDNS() {
		rs, err := systemResolvers()
		if err != nil {
			return nil, fmt.Errorf("delivery: no resolvers given and /etc/resolv.conf unusable: %w", err)
		}
		cfg.resolvers = rs
	}
	m, err := newMetrics(cfg.registerer)
	if err != nil {
		return nil, err
	}
	var cache *dnsCache
	if cfg.cacheSize > 0 {
		cache = newDNSCache(cfg.cacheSize, cfg.negTTL, cfg.now)
	}
	return &Agent{
		cfg:     cfg,
		dsn:     dsn,
		dns:     &resolver{servers: cfg.resolvers, timeout: cfg.timeouts.DNS, cache: cache},
		limits:  newDestLimiter(cfg.destConc),
		metrics: m,
		log:     cfg.logger.With("component", "delivery"),
	}, nil
}

func (c *config) validate() error {
	if c.hostname == "" || strings.ContainsAny(c.hostname, " \t\r\n") {
		return fmt.Errorf("delivery: bad hostname %q", c.hostname)
	}
	if c.smarthost != "" {
		if _, err := splitHostPort(c.smarthost); err != nil {
			return fmt.Errorf("delivery: smarthost: %w", err)
		}
	}
	for _, r := range c.resolvers {
		if _, err := splitHostPort(r); err != nil {
			return fmt.Errorf("delivery: resolver: %w", err)
		}
	}
	if c.port < 1 || c.port > 65535 {
		return fmt.Errorf("delivery: port %d out of range", c.port)
	}
	if c.dial == nil {
		return errors.New("delivery: nil dialer")
	}
	t := c.timeouts
	if t.Connect < 0 || t.Greeting < 0 || t.Command < 0 || t.Data < 0 || t.DNS < 0 {
		return fmt.Errorf("delivery: negative timeout in %+v", t)
	}
	if c.destConc < 1 {
		return fmt.Errorf("delivery: destination concurrency %d must be at least 1", c.destConc)
	}
	if c.maxHosts < 1 {
		return fmt.Errorf("delivery: max hosts %d must be at least 1", c.maxHosts)
	}
	if c.logger == nil {
		return errors.New("delivery: nil logger")
	}
	if c.cacheSize < 0 {
		return fmt.Errorf("delivery: DNS cache size %d must not be negative", c.cacheSize)
	}
	if c.negTTL < 0 {
		return fmt.Errorf("delivery: negative TTL %v must not be negative", c.negTTL)
	}
	if c.now == nil {
		return errors.New("delivery: nil clock")
	}
	return nil
}

// needsDNS reports whether routing can need a resolver: always for MX
// delivery, and for a smarthost given by name.
func (c *config) needsDNS() bool {
	if c.smarthost == "" {
		return true
	}
	host, _, _ := net.SplitHostPort(c.smarthost)
	return net.ParseIP(host) == nil
}

func splitHostPort(hostport string) (int, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 || host == "" {
		return 0, fmt.Errorf("bad host:port %q", hostport)
	}
	return port, nil
}

// rcptState is one recipient of an attempt and what happened to it.
type rcptState struct {
	rcpt  sluice.Recipient
	done  bool          // a final outcome for this attempt is known
	reply *sluice.Reply // the reply that decided it (or the last error)
	relay string        // next hop host name, "" if none was reached
	ip    string        // next hop address, host:port
	tls   bool
}

func (r *rcptState) finish(reply *sluice.Reply) {
	r.done = true
	r.reply = reply
}

// Deliver tries msg for each of its recipients and returns one result per
// recipient, in the order of msg.Envelope.Recipients. Recipients are
// grouped by domain (or all sent to the smarthost in one session); routes
// are looked up on every call.
func (a *Agent) Deliver(ctx context.Context, msg *queue.Message) []queue.Result {
	env := msg.Envelope
	states := make([]*rcptState, len(env.Recipients))
	groups := make(map[string][]*rcptState)
	var order []string
	for i, r := range env.Recipients {
		states[i] = &rcptState{rcpt: r}
		key := ""
		if a.cfg.smarthost == "" {
			key = sluice.Domain(r.Address)
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], states[i])
	}

	sem := make(chan struct{}, maxParallelDomains)
	var wg sync.WaitGroup
	for _, domain := range order {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			start := time.Now()
			a.deliverGroup(ctx, msg, domain, groups[domain])
			a.metrics.observe(time.Since(start))
		}()
	}
	wg.Wait()

	results := make([]queue.Result, len(states))
	for i, st := range states {
		outcome := sluice.Classify(st.reply)
		if st.reply == nil {
			outcome = sluice.OutcomeDeferred // never reached a decision
			st.reply = sluice.NewReply(451, sluice.EnhancedCode{4, 4, 0}, "delivery not attempted")
		}
		results[i] = queue.Result{Outcome: outcome, Reply: st.reply}
		a.metrics.attempt(outcome)
		a.logResult(msg, st, outcome)
	}
	return results
}

// deliverGroup delivers to the recipients of one domain (or of the
// smarthost): route lookup, then addresses in order until every recipient
// has a final reply.
func (a *Agent) deliverGroup(ctx context.Context, msg *queue.Message, domain string, rcpts []*rcptState) {
	if msg.Envelope.Body == "BINARYMIME" {
		// BINARYMIME needs BDAT (RFC 3030), which this agent does not send.
		finishAll(rcpts, sluice.NewReply(554, sluice.EnhancedCode{5, 6, 3}, "BINARYMIME messages cannot be relayed"))
		return
	}
	var hops []hop
	var err error
	if a.cfg.smarthost != "" {
		hops, err = a.smarthostRoute(ctx)
	} else {
		hops, err = a.routeDomain(ctx, domain)
	}
	if err != nil {
		finishAll(rcpts, replyFor(err))
		return
	}
	dest := domain
	if a.cfg.smarthost != "" {
		dest = a.cfg.smarthost
	}
	release, err := a.limits.acquire(ctx, dest)
	if err != nil {
		finishAll(rcpts, sluice.NewReply(451, sluice.EnhancedCode{4, 4, 5}, "no free session to %s before the deadline", dest))
		return
	}
	defer release()
	var last error
	for _, h := range hops {
		pending := pendingOf(rcpts)
		if len(pending) == 0 {
			return
		}
		if ctx.Err() != nil {
			last = fmt.Errorf("attempt interrupted: %w", ctx.Err())
			break
		}
		last = a.tryHop(ctx, msg, h, pending)
		if last == nil {
			return
		}
		a.log.DebugContext(ctx, "next hop failed", "queue_id", msg.Envelope.ID, "relay", h.name, "ip", h.addr.String(), "err", last)
	}
	for _, r := range pendingOf(rcpts) {
		r.finish(connReply(last))
	}
}

// tryHop runs a session with h, and once more without TLS if the TLS
// handshake failed (opportunistic TLS, RFC 7435). A non-nil error means
// the pending recipients should move to the next address.
func (a *Agent) tryHop(ctx context.Context, msg *queue.Message, h hop, rcpts []*rcptState) error {
	useTLS := a.cfg.tls != nil
	err := a.session(ctx, msg, h, rcpts, useTLS)
	var tf *tlsFailure
	if useTLS && errors.As(err, &tf) {
		a.log.DebugContext(ctx, "STARTTLS failed, retrying without TLS", "relay", h.name, "ip", h.addr.String(), "err", err)
		err = a.session(ctx, msg, h, rcpts, false)
	}
	return err
}

func pendingOf(rcpts []*rcptState) []*rcptState {
	var out []*rcptState
	for _, r := range rcpts {
		if !r.done {
			out = append(out, r)
		}
	}
	return out
}

func finishAll(rcpts []*rcptState, reply *sluice.Reply) {
	for _, r := range rcpts {
		if !r.done {
			r.finish(reply)
		}
	}
}

// replyFor returns the *sluice.Reply in err's chain, or a made-up 451.
func replyFor(err error) *sluice.Reply {
	if r, ok := sluice.ReplyOf(err); ok {
		return r
	}
	return sluice.NewReply(451, sluice.EnhancedCode{4, 4, 0}, "%v", err)
}

// connReply turns the last connection-level error of a destination into
// the deferral reply of its remaining recipients. It is always temporary:
// a 5xx greeting of one host must not bounce mail that another host, or a
// later attempt, may accept.
func connReply(err error) *sluice.Reply {
	if err == nil {
		return sluice.NewReply(451, sluice.EnhancedCode{4, 4, 1}, "no next hop could be reached")
	}
	if r, ok := sluice.ReplyOf(err); ok && r.Temporary() {
		return r
	}
	return sluice.NewReply(451, sluice.EnhancedCode{4, 4, 1}, "%v", err)
}

func (a *Agent) logResult(msg *queue.Message, st *rcptState, outcome sluice.Outcome) {
	env := msg.Envelope
	var delay time.Duration
	if !env.Received.IsZero() {
		delay = time.Since(env.Received).Round(time.Millisecond)
	}
	category := ""
	if outcome != sluice.OutcomeDelivered {
		category = string(Categorize(st.reply))
	}
	a.log.Info("delivery",
		"queue_id", env.ID,
		"from", env.From,
		"to", st.rcpt.Address,
		"relay", st.relay,
		"ip", st.ip,
		"attempt", msg.Attempt,
		"tls", st.tls,
		"reply", st.reply.Error(),
		"result", outcome.String(),
		"category", category, // "" when delivered
		// Seconds, as Postfix's delay=: a Duration would log as nanoseconds in JSON.
		"delay", delay.Seconds(),
	)
}
