package main

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
)

// shapingConfig is [delivery.shaping]: the limits of each destination.
type shapingConfig struct {
	Concurrency        *int     `toml:"concurrency"`
	InitialConcurrency *int     `toml:"initial_concurrency"`
	MessageRate        *float64 `toml:"message_rate"`
	ConnectionRate     *float64 `toml:"connection_rate"`
	MaxPerConnection   *int     `toml:"max_per_connection"`
	IdleTimeout        string   `toml:"idle_timeout"`
	ParkAfter          *int     `toml:"park_after"`
	ParkFor            string   `toml:"park_for"`
	ParkMax            string   `toml:"park_max"`
}

// limitConfig is one [[delivery.limits]]: the limits of the destinations
// it matches, over those of [delivery.shaping].
type limitConfig struct {
	Match string `toml:"match"`
	shapingConfig
}

// replyConfig is one [[delivery.reply_rule]]: a pattern on next-hop
// replies and what it does to the destination.
type replyConfig struct {
	Name   string `toml:"name"`
	Match  string `toml:"match"`
	Action string `toml:"action"`
	For    string `toml:"for"`
	shapingConfig
}

// poolConfig is one [[delivery.pool]]: relays or LMTP servers.
type poolConfig struct {
	Name          string   `toml:"name"`
	Hosts         []string `toml:"hosts"`
	Weights       []int    `toml:"weights"`
	Strategy      string   `toml:"strategy"`
	Transport     string   `toml:"transport"`
	TLS           string   `toml:"tls"`
	Username      string   `toml:"username"`
	PasswordFile  string   `toml:"password_file"`
	SourceIP      string   `toml:"source_ip"`
	Helo          string   `toml:"helo"`
	ProbeInterval string   `toml:"probe_interval"`
}

// routeConfig is one [[delivery.route]].
type routeConfig struct {
	Domain   string `toml:"domain"`
	Sender   string `toml:"sender"`
	Pool     string `toml:"pool"`
	TLS      string `toml:"tls"`
	SourceIP string `toml:"source_ip"`
	Helo     string `toml:"helo"`
	Fallback string `toml:"fallback"`
}

func (v *validator) nonNegative(key string, n *int) *int {
	if n != nil && *n < 0 {
		v.fail(key, "%d must not be negative", *n)
		return nil
	}
	return n
}

func (v *validator) shapeBy(key, s string) delivery.ShapeKey {
	switch s {
	case "", "domain":
		return delivery.ShapeByDomain
	case "site":
		return delivery.ShapeBySite
	}
	v.fail(key, "bad value %q (want domain or site)", s)
	return delivery.ShapeByDomain
}

func (v *validator) rate(key string, r *float64) float64 {
	if r == nil {
		return 0
	}
	if *r <= 0 {
		v.fail(key, "%v must be positive (leave it out for no limit)", *r)
		return 0
	}
	return *r
}

func (v *validator) shaping(key string, c *shapingConfig) delivery.Shaping {
	p := key + "."
	s := delivery.Shaping{
		Concurrency:        v.positive(p+"concurrency", c.Concurrency),
		InitialConcurrency: v.positive(p+"initial_concurrency", c.InitialConcurrency),
		MessageRate:        v.rate(p+"message_rate", c.MessageRate),
		ConnectionRate:     v.rate(p+"connection_rate", c.ConnectionRate),
		MaxPerConnection:   v.positive(p+"max_per_connection", c.MaxPerConnection),
		IdleTimeout:        v.duration(p+"idle_timeout", c.IdleTimeout),
		ParkAfter:          v.positive(p+"park_after", c.ParkAfter),
		ParkFor:            v.duration(p+"park_for", c.ParkFor),
		ParkMax:            v.duration(p+"park_max", c.ParkMax),
	}
	return s
}

// parkBounds checks park_max against park_for wherever they meet: the
// global limits over delivery's defaults, and each limit's and reply
// rule's over those, as delivery.New will; a bound set alone can clash
// with the default of the other (park_for = "1h" with the default
// park_max of 30m), which New would refuse without a file or line.
func (v *validator) parkBounds(global delivery.Shaping, limits []delivery.ShapingRule, replies []delivery.ReplyRule) {
	over := func(base, s delivery.Shaping) delivery.Shaping {
		if s.ParkFor != 0 {
			base.ParkFor = s.ParkFor
		}
		if s.ParkMax != 0 {
			base.ParkMax = s.ParkMax
		}
		return base
	}
	check := func(key string, base, own delivery.Shaping) {
		eff := over(base, own)
		if eff.ParkMax >= eff.ParkFor {
			return
		}
		k := key + ".park_max"
		if own.ParkMax == 0 {
			k = key + ".park_for"
		}
		v.fail(k, "park_max %v is less than park_for %v (a bound not set here is the one it inherits)", eff.ParkMax, eff.ParkFor)
	}
	check("delivery.shaping", delivery.DefaultShaping(), global)
	g := over(delivery.DefaultShaping(), global)
	for i, r := range limits {
		check(fmt.Sprintf("delivery.limits[%d]", i), g, r.Shaping)
	}
	for i, r := range replies {
		check(fmt.Sprintf("delivery.reply_rule[%d]", i), g, r.Shaping)
	}
}

func (v *validator) limits(cs []limitConfig) []delivery.ShapingRule {
	var rules []delivery.ShapingRule
	for i := range cs {
		key := fmt.Sprintf("delivery.limits[%d]", i)
		c := &cs[i]
		if name, ok := strings.CutPrefix(c.Match, "pool:"); ok {
			if name == "" {
				v.fail(key+".match", "empty pool name")
			}
		} else {
			v.pattern(key+".match", c.Match, true)
		}
		rules = append(rules, delivery.ShapingRule{Match: c.Match, Shaping: v.shaping(key, &c.shapingConfig)})
	}
	return rules
}

func (v *validator) replyRules(cs []replyConfig) []delivery.ReplyRule {
	var rules []delivery.ReplyRule
	names := make(map[string]bool)
	for i := range cs {
		key := fmt.Sprintf("delivery.reply_rule[%d]", i)
		c := &cs[i]
		r := delivery.ReplyRule{Name: c.Name, For: v.duration(key+".for", c.For), Shaping: v.shaping(key, &c.shapingConfig)}
		switch {
		case c.Name == "":
			v.fail(key+".name", "missing")
		case names[c.Name]:
			v.fail(key+".name", "duplicate reply rule name %q", c.Name)
		}
		names[c.Name] = true
		re, err := regexp.Compile(c.Match)
		switch {
		case c.Match == "":
			v.fail(key+".match", "missing (want a regular expression on replies such as \"421 4.7.0 text\")")
		case err != nil:
			v.fail(key+".match", "%v", err)
		}
		r.Match = re
		switch c.Action {
		case "backoff":
			r.Action = delivery.ReplyBackoff
		case "suspend":
			r.Action = delivery.ReplySuspend
		case "bounce":
			r.Action = delivery.ReplyBounce
		default:
			v.fail(key+".action", "bad action %q (want backoff, suspend or bounce)", c.Action)
		}
		if r.Action != delivery.ReplyBounce && r.For <= 0 {
			v.fail(key+".for", "missing: %s needs a duration", c.Action)
		}
		if r.Action != delivery.ReplyBackoff && r.Shaping != (delivery.Shaping{}) {
			v.fail(key, "limits are set but only a backoff applies them")
		}
		rules = append(rules, r)
	}
	return rules
}

// routes checks the pools and routes and builds the table; nil when the
// file has neither.
func (v *validator) routes(d *deliveryConfig) *delivery.Routes {
	if len(d.Pools) == 0 && len(d.Routes) == 0 {
		return nil
	}
	before := len(v.errs)
	names := make(map[string]bool)
	pools := make([]delivery.Pool, 0, len(d.Pools))
	for i := range d.Pools {
		key := fmt.Sprintf("delivery.pool[%d]", i)
		p := v.pool(key, &d.Pools[i])
		if p.Name != "" && names[p.Name] {
			v.fail(key+".name", "duplicate pool name %q", p.Name)
		}
		names[p.Name] = true
		pools = append(pools, p)
	}
	routes := make([]delivery.Route, 0, len(d.Routes))
	for i := range d.Routes {
		routes = append(routes, v.route(fmt.Sprintf("delivery.route[%d]", i), &d.Routes[i], names))
	}
	if len(v.errs) > before {
		return nil
	}
	rt, err := delivery.NewRoutes(pools, routes)
	if err != nil { // not reached: every check of NewRoutes was made above
		v.fail("delivery.route", "%v", err)
	}
	return rt
}

func (v *validator) pool(key string, c *poolConfig) delivery.Pool {
	p := delivery.Pool{Name: c.Name, Username: c.Username}
	if c.Name == "" {
		v.fail(key, "pool without a name")
	}
	if len(c.Hosts) == 0 {
		v.fail(key+".hosts", "pool %q has no hosts", c.Name)
	}
	if c.Weights != nil && len(c.Weights) != len(c.Hosts) {
		v.fail(key+".weights", "%d weights for %d hosts", len(c.Weights), len(c.Hosts))
	}
	for i, h := range c.Hosts {
		ph := delivery.PoolHost{Addr: v.hostPort(key+".hosts", h, false)}
		if i < len(c.Weights) {
			if c.Weights[i] < 1 {
				v.fail(key+".weights", "weight %d must be at least 1", c.Weights[i])
			}
			ph.Weight = c.Weights[i]
		}
		p.Hosts = append(p.Hosts, ph)
	}
	switch c.Strategy {
	case "", "failover":
	case "spread":
		p.Strategy = delivery.Spread
	default:
		v.fail(key+".strategy", "bad strategy %q (want failover or spread)", c.Strategy)
	}
	switch c.Transport {
	case "", "smtp":
	case "lmtp":
		p.Transport = delivery.LMTP
	default:
		v.fail(key+".transport", "bad transport %q (want smtp or lmtp)", c.Transport)
	}
	p.TLS = v.tlsPolicy(key+".tls", c.TLS)
	p.Egress = v.egress(key, c.SourceIP, c.Helo)
	p.ProbeInterval = v.duration(key+".probe_interval", c.ProbeInterval)
	if c.Username != "" {
		if p.TLS == delivery.TLSNone {
			v.fail(key+".tls", "username set: AUTH is only sent over TLS")
		}
		p.Password = v.secret(key+".password_file", c.PasswordFile)
	} else if c.PasswordFile != "" {
		v.fail(key+".password_file", "password_file without username")
	}
	return p
}

func (v *validator) route(key string, c *routeConfig, pools map[string]bool) delivery.Route {
	r := delivery.Route{Domain: c.Domain, Sender: c.Sender, Pool: c.Pool, Fallback: c.Fallback}
	v.pattern(key+".domain", c.Domain, true)
	v.pattern(key+".sender", c.Sender, false)
	for _, f := range []struct{ key, name string }{{".pool", c.Pool}, {".fallback", c.Fallback}} {
		if f.name != "" && !pools[f.name] {
			v.fail(key+f.key, "no pool named %q", f.name)
		}
	}
	r.TLS = v.tlsPolicy(key+".tls", c.TLS)
	r.Egress = v.egress(key, c.SourceIP, c.Helo)
	return r
}

// pattern checks a domain pattern: "example.com", ".example.com" or "*".
func (v *validator) pattern(key, s string, required bool) {
	switch {
	case s == "" && required:
		v.fail(key, `missing (want a domain, ".domain" for its subdomains, or "*")`)
	case s == "" || s == "*":
	default:
		if err := sluice.CheckDomain(strings.TrimPrefix(s, "."), false); err != nil {
			v.fail(key, "bad pattern %q: %v", s, err)
		}
	}
}

func (v *validator) tlsPolicy(key, s string) delivery.TLSPolicy {
	switch s {
	case "", "opportunistic":
		return delivery.TLSOpportunistic
	case "required":
		return delivery.TLSRequired
	case "none":
		return delivery.TLSNone
	}
	v.fail(key, "bad TLS policy %q (want opportunistic, required or none)", s)
	return delivery.TLSOpportunistic
}

func (v *validator) egress(key, sourceIP, helo string) delivery.Egress {
	var e delivery.Egress
	if sourceIP != "" {
		ip, err := netip.ParseAddr(sourceIP)
		if err != nil {
			v.fail(key+".source_ip", "bad IP address %q", sourceIP)
		}
		e.SourceIP = ip
	}
	e.Helo = v.domain(key+".helo", helo)
	return e
}

// secret reads a password from a file (its first line), so that the
// configuration file itself holds no secret.
func (v *validator) secret(key, path string) string {
	if path == "" {
		v.fail(key, "missing: a username needs a password file")
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		v.fail(key, "%v", err)
		return ""
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSuffix(line, "\r")
}
