package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/queue"
)

// Enqueuer is where the agent queues the delivery status notifications it
// builds; *queue.Queue implements it.
type Enqueuer interface {
	Enqueue(ctx context.Context, env *sluice.Envelope, body io.Reader) (string, error)
}

// Agent delivers queued messages to their next hops over SMTP or LMTP and
// builds delivery status notifications. It is safe for concurrent use: the
// queue calls Deliver from many workers at once. Close it to close the
// connections it keeps for reuse.
type Agent struct {
	cfg    config
	dsn    Enqueuer
	dns    *resolver
	shaper *shaper
	routes atomic.Pointer[Routes] // never nil after New
	// replyRules are the rules of SetReplyRules; nil or empty for none.
	replyRules atomic.Pointer[[]ReplyRule]
	probes     poolProbes // of the pools with a ProbeInterval
	metrics    *metrics   // nil without a Registerer
	log        *slog.Logger
}

var (
	_ queue.Deliverer     = (*Agent)(nil)
	_ queue.Bouncer       = (*Agent)(nil)
	_ queue.DelayNotifier = (*Agent)(nil)
)

// maxParallelGroups bounds the sessions one Deliver call runs at once
// for the different destinations of a message.
const maxParallelGroups = 8

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
	routes := cfg.routes
	if routes == nil {
		routes = &Routes{}
	}
	if cfg.smarthost != "" {
		routes = routes.withSmarthost(cfg.smarthost)
	}
	if len(cfg.resolvers) == 0 && (!routes.coversAll() || routes.needsDNS()) {
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
	a := &Agent{
		cfg:     cfg,
		dsn:     dsn,
		dns:     &resolver{servers: cfg.resolvers, timeout: cfg.timeouts.DNS, cache: newDNSCache(cfg.dnsCache, cfg.now)},
		shaper:  newShaper(cfg.shaping, lowerShapingRules(cfg.shapingRules), cfg.deadHost, cfg.now),
		metrics: m,
		log:     cfg.logger.With("component", "delivery"),
	}
	a.routes.Store(routes)
	a.replyRules.Store(&cfg.replyRules)
	if cfg.registerer != nil {
		err := cfg.registerer.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sluice_delivery_dns_failures_total",
			Help: "DNS lookups that no resolver answered (timeouts, SERVFAIL, REFUSED; NXDOMAIN is an answer).",
		}, func() float64 { return float64(a.DNSFailures()) }))
		if err != nil {
			return nil, fmt.Errorf("delivery: register metrics: %w", err)
		}
	}
	a.probes.sync(routes, cfg.hostname, a) // last: nothing fails after the probes start
	return a, nil
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
	for _, d := range []time.Duration{t.Connect, t.Greeting, t.Hello, t.StartTLS, t.Mail, t.Rcpt, t.DataStart, t.Data, t.Command, t.DNS} {
		if d < 0 {
			return fmt.Errorf("delivery: negative timeout in %+v", t)
		}
	}
	if t.DataRate < 0 {
		return fmt.Errorf("delivery: negative data rate %d", t.DataRate)
	}
	if c.maxHosts < 1 {
		return fmt.Errorf("delivery: max hosts %d must be at least 1", c.maxHosts)
	}
	if c.dnsCache < 0 {
		return fmt.Errorf("delivery: DNS cache size %d is negative", c.dnsCache)
	}
	if c.now == nil {
		return errors.New("delivery: nil clock")
	}
	if err := c.shaping.validate(); err != nil {
		return err
	}
	if err := checkShapingRules(c.shapingRules, c.shaping); err != nil {
		return err
	}
	if err := checkReplyRules(c.replyRules, c.shaping); err != nil {
		return err
	}
	if c.shapeBy != ShapeByDomain && c.shapeBy != ShapeBySite {
		return fmt.Errorf("delivery: unknown shaping key %d", c.shapeBy)
	}
	if c.deadHost < 0 {
		return fmt.Errorf("delivery: negative dead-host time %v", c.deadHost)
	}
	if c.logger == nil {
		return errors.New("delivery: nil logger")
	}
	return nil
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

// SetRoutes replaces the routes table. It applies from the next attempt of
// every message, queued ones included, since routes are looked up on every
// attempt and never stored (seed 004). A nil table means MX delivery for
// every domain (or the smarthost of [WithSmarthost]).
func (a *Agent) SetRoutes(r *Routes) {
	if r == nil {
		r = &Routes{}
	}
	if a.cfg.smarthost != "" {
		r = r.withSmarthost(a.cfg.smarthost)
	}
	a.routes.Store(r)
	a.probes.sync(r, a.cfg.hostname, a)
}

// DNSFailures returns the number of DNS lookups that no resolver answered
// (timeouts, SERVFAIL, REFUSED; an NXDOMAIN is an answer), since New.
// Watch how fast it grows: a failing resolver defers all MX mail.
func (a *Agent) DNSFailures() uint64 { return a.dns.failures.Load() }

// Close closes the idle connections kept for reuse and stops the probes of
// pool hosts; sessions in progress finish and close theirs. It is idempotent, and the agent keeps
// working, without reusing connections.
func (a *Agent) Close() error {
	a.probes.close()
	a.shaper.closeAll()
	return nil
}

// rcptState is one recipient of an attempt and what happened to it.
type rcptState struct {
	rcpt   sluice.Recipient
	done   bool          // a final outcome for this attempt is known
	reply  *sluice.Reply // the reply that decided it (or the last error)
	route  string        // "mx", or "pool:NAME"
	relay  string        // next hop host name, "" if none was reached
	ip     string        // next hop address, host:port
	source string        // our address of the session, host:port
	tls    string        // TLS version, "" in plain text
}

func (r *rcptState) finish(reply *sluice.Reply) {
	r.done = true
	r.reply = reply
}

// group is the recipients of one message that go to one destination in
// one session.
type group struct {
	route  *Route // nil: MX with defaults
	pool   *Pool  // nil: MX
	domain string // recipient domain, for MX
	rcpts  []*rcptState
}

// Deliver tries msg for each of its recipients and returns one result per
// recipient, in the order of msg.Envelope.Recipients. Recipients are
// grouped by route and domain; routes are looked up on every call.
func (a *Agent) Deliver(ctx context.Context, msg *queue.Message) []queue.Result {
	if a.cfg.postQueue.Has(filter.StagePostQueue) {
		return a.deliverFiltered(ctx, msg)
	}
	return a.deliver(ctx, msg)
}

// deliver is Deliver without post-queue filters.
func (a *Agent) deliver(ctx context.Context, msg *queue.Message) []queue.Result {
	start := time.Now()
	states, groups := a.groups(msg)

	deliverGroup := func(g *group) {
		gstart := time.Now()
		a.deliverGroup(ctx, msg, g)
		a.metrics.observe(time.Since(gstart))
	}
	if len(groups) == 1 {
		// The common case, on the caller's goroutine: a new one per
		// message would also grow a fresh stack for every session.
		deliverGroup(groups[0])
	} else {
		sem := make(chan struct{}, maxParallelGroups)
		var wg sync.WaitGroup
		for _, g := range groups {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				deliverGroup(g)
			}()
		}
		wg.Wait()
	}

	results := make([]queue.Result, len(states))
	for i, st := range states {
		outcome := sluice.Classify(st.reply)
		if st.reply == nil {
			outcome = sluice.OutcomeDeferred // never reached a decision
			st.reply = sluice.NewReply(451, sluice.EnhancedCode{4, 4, 0}, "delivery not attempted")
		}
		results[i] = queue.Result{Outcome: outcome, Reply: st.reply}
		a.metrics.attempt(outcome)
		a.logResult(ctx, msg, st, outcome, time.Since(start))
	}
	return results
}

// groups looks up the route of each recipient and groups them.
func (a *Agent) groups(msg *queue.Message) ([]*rcptState, []*group) {
	env := msg.Envelope
	rt := a.routes.Load()
	states := make([]*rcptState, len(env.Recipients))
	type groupKey struct {
		route *Route
		dest  string // "pool:NAME", or the domain in lower case
	}
	var byKey map[groupKey]*group
	if len(env.Recipients) > 1 {
		byKey = make(map[groupKey]*group)
	}
	order := make([]*group, 0, 1)
	for i, r := range env.Recipients {
		states[i] = &rcptState{rcpt: r}
		domain := sluice.Domain(r.Address)
		route := rt.lookup(domain, sluice.Domain(env.From))
		g := &group{route: route, domain: domain}
		if route != nil && route.Pool != "" {
			g.pool = rt.pools[route.Pool]
		}
		if route != nil && route.Fallback != "" && msg.Attempt > 1 {
			g.pool = rt.pools[route.Fallback]
		}
		if byKey == nil { // one recipient: one group
			order = append(order, g)
			g.rcpts = append(g.rcpts, states[i])
			continue
		}
		key := groupKey{route: route, dest: strings.ToLower(domain)}
		if g.pool != nil {
			key.dest = "pool:" + g.pool.Name
		}
		if prev, ok := byKey[key]; ok {
			g = prev
		} else {
			byKey[key] = g
			order = append(order, g)
		}
		g.rcpts = append(g.rcpts, states[i])
	}
	return states, order
}

// target is where a group goes now.
type target struct {
	name string // for the delivery log: "mx" or "pool:NAME"
	hops []hop
	pol  policy
	dest *destination
}

// target resolves the group's next hops and session policy.
func (a *Agent) target(ctx context.Context, g *group) (*target, error) {
	t := &target{name: "mx", pol: policy{tls: TLSOpportunistic, helo: a.cfg.hostname}}
	var eg Egress
	if g.route != nil {
		eg, t.pol.tls = g.route.Egress, g.route.TLS
	}
	var key string
	var names []string // what shaping rules match
	if p := g.pool; p != nil {
		hops, err := a.poolRoute(ctx, p)
		if err != nil {
			return nil, err
		}
		t.name, t.hops, key = "pool:"+p.Name, hops, "pool:"+p.Name
		names = []string{strings.ToLower(key)}
		t.pol.transport, t.pol.tls, t.pol.user, t.pol.pass = p.Transport, p.TLS, p.Username, p.Password
		if p.Egress.SourceIP.IsValid() {
			eg.SourceIP = p.Egress.SourceIP
		}
		if p.Egress.Helo != "" {
			eg.Helo = p.Egress.Helo
		}
	} else {
		hops, site, err := a.mxRoute(ctx, g.domain)
		if err != nil {
			return nil, err
		}
		t.hops, key = hops, strings.ToLower(g.domain)
		names = []string{key}
		if a.cfg.shapeBy == ShapeBySite {
			key, names = "site:"+site, strings.Split(site, ",")
		}
	}
	if eg.SourceIP.IsValid() {
		t.pol.source = eg.SourceIP.String()
	}
	if eg.Helo != "" {
		t.pol.helo = eg.Helo
	}
	t.dest = a.shaper.dest(key, names)
	return t, nil
}

// deliverGroup delivers to the recipients of one group: route lookup,
// then a connection slot of the destination, then addresses in order
// until every recipient has a final reply.
func (a *Agent) deliverGroup(ctx context.Context, msg *queue.Message, g *group) {
	if msg.Envelope.Body == "BINARYMIME" {
		// BINARYMIME needs BDAT (RFC 3030), which this agent does not send.
		finishAll(g.rcpts, sluice.NewReply(554, sluice.EnhancedCode{5, 6, 3}, "BINARYMIME messages cannot be relayed"))
		return
	}
	for _, r := range g.rcpts {
		r.route = "mx"
		if g.pool != nil {
			r.route = "pool:" + g.pool.Name
		}
	}
	t, err := a.target(ctx, g)
	if err != nil {
		finishAll(g.rcpts, replyFor(err))
		return
	}
	hops := a.liveHops(t.hops)
	if len(hops) == 0 {
		finishAll(g.rcpts, sluice.NewReply(451, sluice.EnhancedCode{4, 4, 1},
			"all next hops of %s were unreachable recently (%s)", t.dest.key, hopNames(t.hops)))
		return
	}
	l, err := t.dest.acquire(ctx)
	if err != nil {
		finishAll(g.rcpts, sluice.NewReply(451, sluice.EnhancedCode{4, 4, 5}, "%s: %v", t.dest.key, err))
		return
	}
	if err := t.dest.msgs.Wait(ctx); err != nil {
		l.release(l.conn, true)
		finishAll(g.rcpts, sluice.NewReply(451, sluice.EnhancedCode{4, 4, 5}, "%s: message rate: %v", t.dest.key, err))
		return
	}
	cn := a.reuse(l.conn, t, hops)
	if cn != nil {
		a.metrics.connection(true)
	}
	var last error
	for i := 0; len(pendingOf(g.rcpts)) > 0; {
		if ctx.Err() != nil {
			last = fmt.Errorf("attempt interrupted: %w", ctx.Err())
			break
		}
		if cn == nil {
			if i >= len(hops) {
				break
			}
			h := hops[i]
			i++
			if cn, err = a.dial(ctx, t, h); err != nil {
				a.hopFailed(ctx, msg, t, err)
				last = err
				if a.ruleEndsGroup(ctx, t, g, err) {
					break
				}
				continue
			}
			a.metrics.connection(false)
		}
		sent := pendingOf(g.rcpts)
		if err := cn.send(ctx, msg, sent); err != nil {
			cn.quit()
			cn = nil
			if he := (*hopError)(nil); errors.As(err, &he) && he.stale {
				// Closed while idle: not the host's failure, and
				// nothing was sent, so a new connection is tried now
				// (a new one is never stale, so this happens once).
				a.log.DebugContext(ctx, "cached connection closed by the next hop, opening a new one",
					"queue_id", msg.Envelope.ID, "destination", t.dest.key, "err", err)
				continue
			}
			a.hopFailed(ctx, msg, t, err)
			last = err
			if a.ruleEndsGroup(ctx, t, g, err) {
				break
			}
			continue
		}
		if r := a.applyRules(ctx, t, sent); r != nil {
			// The session's recipients have their replies; any others
			// of the group wait for the suspension to end.
			finishAll(g.rcpts, suspendedReply(t.dest, r))
			break
		}
		if cn.hung {
			a.hopFailed(ctx, msg, t, &hopError{h: cn.h, phase: "DATA", err: errors.New("no reply after end of data"), unreachable: true})
			continue
		}
		t.dest.success()
		a.shaper.markAlive(cn.h.addr)
	}
	l.release(cn, cn != nil && !cn.broken)
	for _, r := range pendingOf(g.rcpts) {
		r.finish(connReply(last))
	}
}

// reuse returns the cached connection c if it suits t, and closes it
// otherwise. It is not verified first (no RSET): a next hop that closed it
// while idle makes its first command fail, and the message is then tried
// on a new connection without counting a failure (hopError.stale).
func (a *Agent) reuse(c *conn, t *target, hops []hop) *conn {
	if c == nil {
		return nil
	}
	if c.pol == t.pol && slices.ContainsFunc(hops, func(h hop) bool { return h.addr == c.h.addr }) {
		c.cached = true
		return c
	}
	c.quit()
	return nil
}

// dial opens a session with h under the connection rate of the
// destination, retrying once without TLS when an opportunistic handshake
// fails (RFC 7435).
func (a *Agent) dial(ctx context.Context, t *target, h hop) (*conn, error) {
	if err := t.dest.conns.Wait(ctx); err != nil {
		// Not the host's fault: no feedback, no dead mark.
		return nil, fmt.Errorf("%s: waiting for the connection rate of %s: %w", h, t.dest.key, err)
	}
	useTLS := a.cfg.tls != nil && t.pol.tls != TLSNone
	cn, err := a.open(ctx, h, t.pol, useTLS)
	var tf *tlsFailure
	if useTLS && t.pol.tls == TLSOpportunistic && errors.As(err, &tf) {
		a.log.DebugContext(ctx, "STARTTLS failed, retrying without TLS", "relay", h.name, "ip", h.addr.String(), "err", err)
		cn, err = a.open(ctx, h, t.pol, false)
	}
	return cn, err
}

// hopFailed records a connection-level failure: negative feedback for the
// destination, and the dead-host memory for an unreachable address.
func (a *Agent) hopFailed(ctx context.Context, msg *queue.Message, t *target, err error) {
	var he *hopError
	// An attempt cut short by its context (shutdown, attempt deadline)
	// says nothing about the host.
	if errors.As(err, &he) && ctx.Err() == nil {
		if he.unreachable && a.shaper.markDead(he.h.addr) {
			a.metrics.deadHost()
			a.log.WarnContext(ctx, "next hop marked dead", "ip", he.h.addr.String(), "relay", he.h.name,
				"for", a.cfg.deadHost.String(), "err", err)
		}
		if he.unreachable || he.throttled() || he.phase == "connect" || he.phase == "greeting" {
			drop, parked := t.dest.failure()
			quitAll(drop)
			if parked {
				a.metrics.park()
				a.log.WarnContext(ctx, "destination parked", "destination", t.dest.key, "err", err)
			}
		}
	}
	a.log.DebugContext(ctx, "next hop failed", "queue_id", msg.Envelope.ID, "destination", t.dest.key, "err", err)
}

// liveHops returns hops without the addresses in the dead-host memory,
// and with suspect addresses (a connection still waits for their greeting
// after a quarter of the greeting timeout) after the others of their
// preference.
func (a *Agent) liveHops(hops []hop) []hop {
	var out []hop
	for _, h := range hops {
		if !a.shaper.isDead(h.addr) {
			out = append(out, h)
		}
	}
	after := a.cfg.timeouts.Greeting / 4
	suspect := make(map[netip.AddrPort]bool)
	for _, h := range out {
		if a.shaper.suspect(h.addr, after) {
			suspect[h.addr] = true
		}
	}
	if len(suspect) > 0 {
		// Hops are in preference order: a stable sort on (pref,
		// suspect) keeps both that order and the random order within a
		// preference.
		slices.SortStableFunc(out, func(x, y hop) int {
			if x.pref != y.pref {
				return x.pref - y.pref
			}
			return boolInt(suspect[x.addr]) - boolInt(suspect[y.addr])
		})
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func hopNames(hops []hop) string {
	names := make([]string, len(hops))
	for i, h := range hops {
		names[i] = h.String()
	}
	return strings.Join(names, ", ")
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
		return &sluice.Reply{Code: r.Code, Enhanced: r.Enhanced, Message: r.Message + " (" + errorContext(err) + ")"}
	}
	code := sluice.EnhancedCode{4, 4, 1}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		code = sluice.EnhancedCode{4, 4, 2}
	}
	return sluice.NewReply(451, code, "%v", err)
}

// errorContext names the host and phase of a *hopError.
func errorContext(err error) string {
	var he *hopError
	if errors.As(err, &he) {
		return he.h.String() + " " + he.phase
	}
	return "next hop"
}
