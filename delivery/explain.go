package delivery

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/sluicemta/sluice"
)

// Explanation is what the agent would do now with mail for one recipient:
// the route it would take, the next hops in the order it would try them,
// and the state of the destination's limits. It answers "why is this
// mail not leaving" without reading logs.
type Explanation struct {
	Recipient string `json:"recipient"`
	Sender    string `json:"sender"`
	// Route is "mx" or "pool:NAME"; RouteDomain is the domain pattern of
	// the route that matched, "" when none did (MX delivery).
	Route       string `json:"route"`
	RouteDomain string `json:"route_domain,omitempty"`
	// Fallback is the pool that takes the recipient once it has been
	// deferred, "" for none.
	Fallback string `json:"fallback,omitempty"`
	// Error is the reply every recipient of the domain would get when the
	// next hops cannot be found (DNS failure, null MX), "" otherwise.
	Error string `json:"error,omitempty"`
	// Hops are the next hops, in the order they would be tried.
	Hops     []ExplainedHop `json:"hops,omitempty"`
	SourceIP string         `json:"source_ip,omitempty"` // "" for any
	Helo     string         `json:"helo"`
	TLS      string         `json:"tls"` // "opportunistic", "required" or "none"
	// Destination is the key of the limits that apply: the domain,
	// "site:HOSTS" or "pool:NAME".
	Destination string             `json:"destination"`
	Limits      ExplainedShaping   `json:"limits"`
	State       ExplainedDestState `json:"state"`
}

// ExplainedHop is one next hop of an [Explanation].
type ExplainedHop struct {
	Name       string `json:"name"`
	Address    string `json:"address"`
	Preference int    `json:"preference"`
	// Dead is set while the address is skipped after a failure to reach
	// it; Suspect while a connection waits for its greeting too long;
	// Down while the pool's probes say the host does not answer (it is
	// tried after the others).
	Dead    bool `json:"dead,omitempty"`
	Suspect bool `json:"suspect,omitempty"`
	Down    bool `json:"down,omitempty"`
}

// ExplainedShaping is the limits in force on a destination.
type ExplainedShaping struct {
	Concurrency      int     `json:"concurrency"`
	MessageRate      float64 `json:"message_rate,omitempty"`
	ConnectionRate   float64 `json:"connection_rate,omitempty"`
	MaxPerConnection int     `json:"max_per_connection"`
	IdleTimeout      string  `json:"idle_timeout"`
}

// ExplainedDestState is the adaptive state of a destination.
type ExplainedDestState struct {
	// Window is the concurrency the destination has earned so far, Open
	// the connections open now (idle ones included).
	Window int `json:"window"`
	Open   int `json:"open"`
	Idle   int `json:"idle"`
	// ParkedUntil is set while mail for the destination is deferred
	// without a session; ParkedWhy says why.
	ParkedUntil time.Time `json:"parked_until,omitzero"`
	ParkedWhy   string    `json:"parked_why,omitempty"`
	// BackoffUntil is set while a reply rule's backoff profile is in
	// force.
	BackoffUntil time.Time `json:"backoff_until,omitzero"`
}

// Explain tells what the agent would do now with mail from sender to
// rcpt: routes are looked up and next hops resolved as for a delivery
// attempt (a first one; Fallback names the pool of later ones), without
// connecting to anything. Only an invalid address is an error; a failed
// lookup is in Explanation.Error.
func (a *Agent) Explain(ctx context.Context, rcpt, sender string) (*Explanation, error) {
	if _, err := sluice.ParseMailbox(rcpt, true); err != nil {
		return nil, err
	}
	domain := sluice.Domain(rcpt)
	rt := a.routes.Load()
	route := rt.lookup(domain, sluice.Domain(sender))
	g := &group{route: route, domain: domain}
	e := &Explanation{Recipient: rcpt, Sender: sender, Route: "mx"}
	if route != nil {
		e.RouteDomain, e.Fallback = route.Domain, route.Fallback
		if route.Pool != "" {
			g.pool = rt.pools[route.Pool]
			e.Route = "pool:" + route.Pool
		}
	}
	t, err := a.target(ctx, g)
	if err != nil {
		e.Error = replyFor(err).Error()
		return e, nil
	}
	e.SourceIP, e.Helo, e.TLS, e.Destination = t.pol.source, t.pol.helo, t.pol.tls.String(), t.dest.key
	after := a.cfg.timeouts.Greeting / 4
	for _, h := range t.hops {
		xh := ExplainedHop{Name: h.name, Address: h.addr.String(), Preference: h.pref,
			Dead: a.shaper.isDead(h.addr), Suspect: a.shaper.suspect(h.addr, after)}
		if p := g.pool; p != nil && p.ProbeInterval > 0 {
			xh.Down = a.probes.down(p, net.JoinHostPort(h.name, strconv.Itoa(int(h.addr.Port()))))
		}
		e.Hops = append(e.Hops, xh)
	}
	e.Limits, e.State = t.dest.explain()
	return e, nil
}

// explain reports the limits in force and the adaptive state.
func (d *destination) explain() (ExplainedShaping, ExplainedDestState) {
	d.mu.Lock()
	drop := d.refreshLocked()
	s := d.s
	st := ExplainedDestState{Window: d.window, Open: d.open, Idle: len(d.idle),
		ParkedUntil: d.parkedUntil, BackoffUntil: d.backoffUntil}
	if !d.parkedUntil.IsZero() {
		st.ParkedWhy = d.parkWhy
	}
	d.mu.Unlock()
	quitAll(drop)
	return ExplainedShaping{Concurrency: s.Concurrency, MessageRate: s.MessageRate, ConnectionRate: s.ConnectionRate,
		MaxPerConnection: s.MaxPerConnection, IdleTimeout: s.IdleTimeout.String()}, st
}

// String returns "opportunistic", "required" or "none".
func (p TLSPolicy) String() string {
	switch p {
	case TLSOpportunistic:
		return "opportunistic"
	case TLSRequired:
		return "required"
	case TLSNone:
		return "none"
	}
	return fmt.Sprintf("TLSPolicy(%d)", int(p))
}
