package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/dkim"
	"github.com/sluicemta/sluice/filter/dnsbl"
	"github.com/sluicemta/sluice/filter/limit"
	"github.com/sluicemta/sluice/filter/parse"
	"github.com/sluicemta/sluice/filter/rspamd"
	"github.com/sluicemta/sluice/filter/spamd"
	"github.com/sluicemta/sluice/filter/suppress"
	"github.com/sluicemta/sluice/health"
)

// filterConfig is one [[filter]]: a built-in filter, where it runs and
// what its failures mean. Keys after the common ones belong to one type.
type filterConfig struct {
	Type            string `toml:"type"`
	Name            string `toml:"name"`
	Stage           string `toml:"stage"`
	Group           string `toml:"group"`
	Timeout         string `toml:"timeout"`
	OnError         string `toml:"on_error"`
	OnTimeout       string `toml:"on_timeout"`
	Concurrency     *int   `toml:"concurrency"`
	BreakerFailures *int   `toml:"breaker_failures"`
	BreakerWindow   string `toml:"breaker_window"`
	BreakerCooldown string `toml:"breaker_cooldown"`

	// parse
	MaxHeaderFields *int   `toml:"max_header_fields"`
	MaxHeaderBytes  *int64 `toml:"max_header_bytes"`
	MaxDepth        *int   `toml:"max_depth"`
	MaxParts        *int   `toml:"max_parts"`
	// suppress
	File          string `toml:"file"`
	CheckInterval string `toml:"check_interval"`
	// limit
	Rate        *float64 `toml:"rate"`
	Burst       *int     `toml:"burst"`
	Daily       *int     `toml:"daily"`
	MaxAccounts *int     `toml:"max_accounts"`
	// dkim
	Keys         []string `toml:"keys"`
	Sign         string   `toml:"sign"`
	SignNetworks []string `toml:"sign_networks"`
	// dnsbl
	Resolver      string   `toml:"resolver"`
	Zones         []string `toml:"zones"`
	RejectScore   *int     `toml:"reject_score"`
	TempfailScore *int     `toml:"tempfail_score"`
	// spamd and rspamd: the replicas and their health-aware pool
	Replicas      []string `toml:"replicas"`
	Strategy      string   `toml:"strategy"`
	ProbeInterval string   `toml:"probe_interval"`
	Rise          *int     `toml:"rise"`
	Fall          *int     `toml:"fall"`
	EjectAfter    *int     `toml:"eject_after"`
	MaxSize       *int64   `toml:"max_size"`
	// spamd
	SpamScore *float64 `toml:"spam_score"`
	SpamdUser string   `toml:"spamd_user"`
	// rspamd
	PasswordFile string `toml:"password_file"`
}

// filterKeys are the type-specific keys of each filter type, as set in
// the file; a key of another type is an error.
var filterKeys = map[string][]string{
	"parse":    {"max_header_fields", "max_header_bytes", "max_depth", "max_parts"},
	"suppress": {"file", "check_interval"},
	"limit":    {"rate", "burst", "daily", "max_accounts"},
	"dkim":     {"keys", "sign", "sign_networks"},
	"dnsbl":    {"resolver", "zones", "reject_score", "tempfail_score"},
	"spamd":    {"replicas", "strategy", "probe_interval", "rise", "fall", "eject_after", "max_size", "spam_score", "spamd_user"},
	"rspamd":   {"replicas", "strategy", "probe_interval", "rise", "fall", "eject_after", "max_size", "password_file"},
}

// setKeys returns the type-specific keys fc sets.
func (fc *filterConfig) setKeys() []string {
	var keys []string
	add := func(set bool, k string) {
		if set {
			keys = append(keys, k)
		}
	}
	add(fc.MaxHeaderFields != nil, "max_header_fields")
	add(fc.MaxHeaderBytes != nil, "max_header_bytes")
	add(fc.MaxDepth != nil, "max_depth")
	add(fc.MaxParts != nil, "max_parts")
	add(fc.File != "", "file")
	add(fc.CheckInterval != "", "check_interval")
	add(fc.Rate != nil, "rate")
	add(fc.Burst != nil, "burst")
	add(fc.Daily != nil, "daily")
	add(fc.MaxAccounts != nil, "max_accounts")
	add(fc.Keys != nil, "keys")
	add(fc.Sign != "", "sign")
	add(fc.SignNetworks != nil, "sign_networks")
	add(fc.Resolver != "", "resolver")
	add(fc.Zones != nil, "zones")
	add(fc.RejectScore != nil, "reject_score")
	add(fc.TempfailScore != nil, "tempfail_score")
	add(fc.Replicas != nil, "replicas")
	add(fc.Strategy != "", "strategy")
	add(fc.ProbeInterval != "", "probe_interval")
	add(fc.Rise != nil, "rise")
	add(fc.Fall != nil, "fall")
	add(fc.EjectAfter != nil, "eject_after")
	add(fc.MaxSize != nil, "max_size")
	add(fc.SpamScore != nil, "spam_score")
	add(fc.SpamdUser != "", "spamd_user")
	add(fc.PasswordFile != "", "password_file")
	return keys
}

// filterSpec is one configured filter: built while the file is read (so
// that, say, a suppression file's errors name the configuration line), or,
// for a scanner whose replica pool runs probes, built by build when the
// server starts, so that reading the file starts nothing.
type filterSpec struct {
	opt   filter.Option
	build func(log *slog.Logger, reg prometheus.Registerer) (filter.Option, *health.Pool, error)
}

// buildFilters returns the chain's options, starting the replica pools of
// the scanners; the caller closes the pools.
func buildFilters(specs []filterSpec, log *slog.Logger, reg prometheus.Registerer) ([]filter.Option, []*health.Pool, error) {
	var opts []filter.Option
	var pools []*health.Pool
	for _, sp := range specs {
		if sp.build == nil {
			opts = append(opts, sp.opt)
			continue
		}
		o, p, err := sp.build(log, reg)
		if err != nil {
			for _, p := range pools {
				p.Close()
			}
			return nil, nil, err
		}
		opts, pools = append(opts, o), append(pools, p)
	}
	return opts, pools, nil
}

// filters checks the [[filter]] tables and builds the filters.
func (v *validator) filters(fcs []filterConfig) []filterSpec {
	var opts []filterSpec
	names := make(map[string]bool)
	for i := range fcs {
		fc := &fcs[i]
		key := fmt.Sprintf("filter[%d]", i)
		kinds, ok := filterKeys[fc.Type]
		if !ok {
			v.fail(key+".type", "unknown filter type %q (want parse, suppress, limit, dkim, dnsbl, spamd or rspamd)", fc.Type)
			continue
		}
		for _, k := range fc.setKeys() {
			if !contains(kinds, k) {
				v.fail(key+"."+k, "does not apply to a filter of type %q", fc.Type)
			}
		}
		name := fc.Name
		if name == "" {
			name = fc.Type
		}
		if names[name] {
			v.fail(key+".name", "duplicate filter name %q (set name to tell filters of one type apart)", name)
			continue
		}
		names[name] = true
		if fc.Type == "spamd" || fc.Type == "rspamd" {
			build := v.scanner(key, name, fc)
			fopts, ok := v.filterOptions(key, fc)
			if build != nil && ok {
				opts = append(opts, filterSpec{build: func(log *slog.Logger, reg prometheus.Registerer) (filter.Option, *health.Pool, error) {
					f, pool, err := build(log, reg)
					if err != nil {
						return nil, nil, fmt.Errorf("filter %s: %w", name, err)
					}
					return filter.WithFilter(name, f, fopts...), pool, nil
				}})
			}
			continue
		}
		f := v.builtinFilter(key, fc)
		fopts, ok := v.filterOptions(key, fc)
		if f != nil && ok {
			opts = append(opts, filterSpec{opt: filter.WithFilter(name, f, fopts...)})
		}
	}
	return opts
}

// scanner checks the keys of a spamd or rspamd filter and returns the
// function that starts its replica pool and builds it.
func (v *validator) scanner(key, name string, fc *filterConfig) func(*slog.Logger, prometheus.Registerer) (filter.Filter, *health.Pool, error) {
	n := len(v.errs)
	if len(fc.Replicas) == 0 {
		v.fail(key+".replicas", `missing: replicas = ["127.0.0.1:783", "unix:/run/spamd.sock", ...]`)
	}
	for _, r := range fc.Replicas {
		if !strings.HasPrefix(r, "unix:/") {
			v.hostPort(key+".replicas", r, false)
		}
	}
	popts := []health.PoolOption{}
	switch fc.Strategy {
	case "", "least-outstanding":
	case "failover":
		popts = append(popts, health.WithStrategy(health.OrderedFailover))
	case "random":
		popts = append(popts, health.WithStrategy(health.Random))
	default:
		v.fail(key+".strategy", "bad strategy %q (want least-outstanding, failover or random)", fc.Strategy)
	}
	var probe []health.ProbeOption
	if d := v.duration(key+".probe_interval", fc.ProbeInterval); d > 0 {
		probe = append(probe, health.WithProbeInterval(d))
	}
	if r := v.positive(key+".rise", fc.Rise); r > 0 {
		probe = append(probe, health.WithRise(r))
	}
	if f := v.positive(key+".fall", fc.Fall); f > 0 {
		probe = append(probe, health.WithFall(f))
	}
	if e := v.positive(key+".eject_after", fc.EjectAfter); e > 0 {
		popts = append(popts, health.WithEjectAfter(e))
	}
	maxSize := v.positive64(key+".max_size", fc.MaxSize)
	replicas := append([]string(nil), fc.Replicas...)
	if fc.Type == "spamd" {
		var sopts []spamd.Option
		if fc.SpamScore != nil {
			sopts = append(sopts, spamd.WithRejectScore(*fc.SpamScore))
		}
		if fc.SpamdUser != "" {
			sopts = append(sopts, spamd.WithUser(fc.SpamdUser))
		}
		if maxSize > 0 {
			sopts = append(sopts, spamd.WithMaxSize(maxSize))
		}
		if len(v.errs) > n {
			return nil
		}
		return func(log *slog.Logger, reg prometheus.Registerer) (filter.Filter, *health.Pool, error) {
			pool, err := health.NewPool(name, replicas, health.SpamdPing(), append(popts, health.WithProbeOptions(probe...),
				health.WithPoolLogger(log), health.WithPoolRegisterer(reg))...)
			if err != nil {
				return nil, nil, err
			}
			f, err := spamd.New(pool, sopts...)
			if err != nil {
				pool.Close()
			}
			return f, pool, err
		}
	}
	var ropts []rspamd.Option
	if fc.PasswordFile != "" {
		ropts = append(ropts, rspamd.WithPassword(v.secret(key+".password_file", fc.PasswordFile)))
	}
	if maxSize > 0 {
		ropts = append(ropts, rspamd.WithMaxSize(maxSize))
	}
	if len(v.errs) > n {
		return nil
	}
	return func(log *slog.Logger, reg prometheus.Registerer) (filter.Filter, *health.Pool, error) {
		pool, err := health.NewPool(name, replicas, health.RspamdPing(), append(popts, health.WithProbeOptions(probe...),
			health.WithPoolLogger(log), health.WithPoolRegisterer(reg))...)
		if err != nil {
			return nil, nil, err
		}
		f, err := rspamd.New(pool, ropts...)
		if err != nil {
			pool.Close()
		}
		return f, pool, err
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// filterOptions checks the common keys; ok is false if one is bad.
func (v *validator) filterOptions(key string, fc *filterConfig) (opts []filter.FilterOption, ok bool) {
	n := len(v.errs)
	if fc.Stage != "" {
		st, err := filter.ParseStage(fc.Stage)
		if err != nil {
			v.fail(key+".stage", "bad stage %q (want connect, mail, rcpt, data or postqueue)", fc.Stage)
		}
		opts = append(opts, filter.AtStage(st))
	}
	if fc.Group != "" {
		opts = append(opts, filter.Group(fc.Group))
	}
	if d := v.duration(key+".timeout", fc.Timeout); d > 0 {
		opts = append(opts, filter.Timeout(d))
	}
	for _, p := range []struct {
		key, value string
		opt        func(filter.Policy) filter.FilterOption
	}{{"on_error", fc.OnError, filter.OnError}, {"on_timeout", fc.OnTimeout, filter.OnTimeout}} {
		if p.value == "" {
			continue
		}
		pol, err := filter.ParsePolicy(p.value)
		if err != nil {
			v.fail(key+"."+p.key, "bad policy %q (want tempfail, accept, reject or quarantine)", p.value)
		}
		opts = append(opts, p.opt(pol))
	}
	if c := v.positive(key+".concurrency", fc.Concurrency); c > 0 {
		opts = append(opts, filter.Concurrency(c))
	}
	if b, ok := v.breaker(key, fc); ok {
		opts = append(opts, filter.WithBreaker(b))
	}
	return opts, len(v.errs) == n
}

// breaker checks the breaker keys: breaker_failures = 0 turns the breaker
// off; any key set replaces the library's whole default, with the
// library's values for the keys left out.
func (v *validator) breaker(key string, fc *filterConfig) (filter.Breaker, bool) {
	if fc.BreakerFailures == nil && fc.BreakerWindow == "" && fc.BreakerCooldown == "" {
		return filter.Breaker{}, false
	}
	var b filter.Breaker // zero times are the library's defaults
	if fc.BreakerFailures == nil && (fc.BreakerWindow != "" || fc.BreakerCooldown != "") {
		v.fail(key+".breaker_failures", "missing: set breaker_failures with breaker_window and breaker_cooldown")
	}
	if n := v.nonNegative(key+".breaker_failures", fc.BreakerFailures); n != nil {
		b.Failures = *n
	}
	if d := v.duration(key+".breaker_window", fc.BreakerWindow); d > 0 {
		b.Window = d
	}
	if d := v.duration(key+".breaker_cooldown", fc.BreakerCooldown); d > 0 {
		b.Cooldown = d
	}
	return b, true
}

// builtinFilter builds the filter of fc's type from its own keys.
func (v *validator) builtinFilter(key string, fc *filterConfig) filter.Filter {
	switch fc.Type {
	case "parse":
		var opts []parse.Option
		if n := v.positive(key+".max_header_fields", fc.MaxHeaderFields); n > 0 {
			opts = append(opts, parse.WithMaxHeaderFields(n))
		}
		if n := v.positive64(key+".max_header_bytes", fc.MaxHeaderBytes); n > 0 {
			opts = append(opts, parse.WithMaxHeaderBytes(n))
		}
		if n := v.positive(key+".max_depth", fc.MaxDepth); n > 0 {
			opts = append(opts, parse.WithMaxDepth(n))
		}
		if n := v.positive(key+".max_parts", fc.MaxParts); n > 0 {
			opts = append(opts, parse.WithMaxParts(n))
		}
		return v.built(key+".type", func() (filter.Filter, error) { return parse.New(opts...) })
	case "suppress":
		if fc.File == "" {
			v.fail(key+".file", "missing: a suppress filter needs its list file")
			return nil
		}
		var opts []suppress.FileOption
		if d := v.duration(key+".check_interval", fc.CheckInterval); d > 0 {
			opts = append(opts, suppress.WithCheckInterval(d))
		}
		return v.built(key+".file", func() (filter.Filter, error) {
			store, err := suppress.OpenFile(fc.File, opts...)
			if err != nil {
				return nil, err
			}
			return suppress.New(store)
		})
	case "limit":
		var opts []limit.Option
		if (fc.Rate == nil) != (fc.Burst == nil) {
			v.fail(key+".rate", "set rate and burst together")
		} else if fc.Rate != nil {
			opts = append(opts, limit.WithRate(v.rate(key+".rate", fc.Rate), v.positive(key+".burst", fc.Burst)))
		}
		if n := v.positive(key+".daily", fc.Daily); n > 0 {
			opts = append(opts, limit.WithDaily(n))
		}
		if n := v.positive(key+".max_accounts", fc.MaxAccounts); n > 0 {
			opts = append(opts, limit.WithMaxAccounts(n))
		}
		return v.built(key+".type", func() (filter.Filter, error) { return limit.New(opts...) })
	case "dkim":
		return v.dkimFilter(key, fc)
	case "dnsbl":
		return v.dnsblFilter(key, fc)
	}
	return nil
}

// dkimFilter builds a DKIM signer from keys given as
// "domain:selector:/path/to/key.pem" (RSA or Ed25519, PEM).
func (v *validator) dkimFilter(key string, fc *filterConfig) filter.Filter {
	if len(fc.Keys) == 0 {
		v.fail(key+".keys", `missing: a dkim filter needs keys = ["domain:selector:/path/key.pem", ...]`)
		return nil
	}
	var keys []dkim.Key
	for _, k := range fc.Keys {
		parts := strings.SplitN(k, ":", 3)
		if len(parts) != 3 {
			v.fail(key+".keys", "bad key %q (want domain:selector:/path/key.pem)", k)
			continue
		}
		dk, err := dkim.LoadKey(parts[0], parts[1], parts[2])
		if err != nil {
			v.fail(key+".keys", "%s", strings.TrimPrefix(err.Error(), "dkim: "))
			continue
		}
		keys = append(keys, dk)
	}
	var opts []dkim.Option
	switch fc.Sign {
	case "", "authenticated":
		if fc.SignNetworks != nil {
			nets := v.prefixes(key+".sign_networks", fc.SignNetworks)
			from := dkim.FromNetworks(nets...)
			opts = append(opts, dkim.WithSignIf(func(env *sluice.Envelope) bool { return dkim.Authenticated(env) || from(env) }))
		}
	case "always":
		if fc.SignNetworks != nil {
			v.fail(key+".sign_networks", `does not apply with sign = "always"`)
		}
		opts = append(opts, dkim.WithSignIf(dkim.Always))
	default:
		v.fail(key+".sign", `bad value %q (want "authenticated", the default, or "always")`, fc.Sign)
	}
	if len(keys) != len(fc.Keys) {
		return nil
	}
	return v.built(key+".keys", func() (filter.Filter, error) { return dkim.New(keys, opts...) })
}

// dnsblFilter builds a DNSBL/DNSWL checker from zones given as "zone",
// "zone=weight" or "zone=weight=codes" (codes as "127.0.0.2",
// "127.0.0.2-127.0.0.11" or "127.0.10.0/24"; a negative weight for an
// allowlist).
func (v *validator) dnsblFilter(key string, fc *filterConfig) filter.Filter {
	resolver := v.hostPort(key+".resolver", fc.Resolver, false)
	if fc.Resolver == "" {
		v.fail(key+".resolver", "missing: host:port of a resolver that may query the lists")
	}
	if len(fc.Zones) == 0 {
		v.fail(key+".zones", `missing: zones = ["zen.spamhaus.org=5", "list.dnswl.org=-3", ...]`)
	}
	var zones []dnsbl.Zone
	for _, z := range fc.Zones {
		parts := strings.SplitN(z, "=", 3)
		zone := dnsbl.Zone{Name: parts[0], Weight: 1}
		if len(parts) > 1 {
			n, err := strconv.Atoi(parts[1])
			if err != nil || n == 0 {
				v.fail(key+".zones", "bad weight in %q (want zone=N, N not 0)", z)
				continue
			}
			zone.Weight = n
		}
		if len(parts) > 2 {
			r, err := dnsbl.ParseRange(parts[2])
			if err != nil {
				v.fail(key+".zones", "bad codes in %q: %v", z, err)
				continue
			}
			zone.Codes = []dnsbl.Range{r}
		}
		zones = append(zones, zone)
	}
	var opts []dnsbl.Option
	if n := v.positive(key+".reject_score", fc.RejectScore); n > 0 {
		opts = append(opts, dnsbl.WithRejectScore(n))
	}
	if n := v.positive(key+".tempfail_score", fc.TempfailScore); n > 0 {
		opts = append(opts, dnsbl.WithTempfailScore(n))
	}
	if len(zones) != len(fc.Zones) || resolver == "" {
		return nil
	}
	return v.built(key+".zones", func() (filter.Filter, error) { return dnsbl.New(resolver, zones, opts...) })
}

// prefixes parses CIDR prefixes.
func (v *validator) prefixes(key string, ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			v.fail(key, "bad network %q (want CIDR, e.g. 192.0.2.0/24)", s)
			continue
		}
		out = append(out, p.Masked())
	}
	return out
}

// built calls build and records its error at key.
func (v *validator) built(key string, build func() (filter.Filter, error)) filter.Filter {
	f, err := build()
	if err != nil {
		msg := err.Error()
		for _, p := range []string{"parse: ", "limit: ", "suppress: ", "dkim: ", "dnsbl: "} {
			msg = strings.TrimPrefix(msg, p)
		}
		v.fail(key, "%s", msg)
		return nil
	}
	return f
}
