package delivery

import (
	"sync"
	"time"

	"github.com/sluicemta/sluice/health"
)

// poolProbes keeps a health.Probe per host of the pools that ask for
// probes ([Pool].ProbeInterval), in step with the routes table.
type poolProbes struct {
	mu     sync.Mutex // guards m and closed
	m      map[probeKey]*health.Probe
	closed bool
}

// probeKey identifies what a probe checks: a host, how and how often.
type probeKey struct {
	addr      string
	transport Transport
	helo      string
	interval  int64 // nanoseconds
}

// sync starts the probes the pools of rt need and closes the others.
func (pp *poolProbes) sync(rt *Routes, helo string, a *Agent) {
	want := make(map[probeKey]bool)
	for _, p := range rt.pools {
		if p.ProbeInterval <= 0 {
			continue
		}
		h := helo
		if p.Egress.Helo != "" {
			h = p.Egress.Helo
		}
		for _, host := range p.Hosts {
			want[probeKey{host.Addr, p.Transport, h, int64(p.ProbeInterval)}] = true
		}
	}
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.closed {
		return
	}
	if pp.m == nil {
		pp.m = make(map[probeKey]*health.Probe)
	}
	for k, pr := range pp.m {
		if !want[k] {
			pr.Close()
			delete(pp.m, k)
		}
	}
	for k := range want {
		if pp.m[k] != nil {
			continue
		}
		check := health.SMTPSession(k.helo)
		if k.transport == LMTP {
			check = health.LMTPSession(k.helo)
		}
		pr, err := health.NewProbe(k.addr, check, health.WithProbeInterval(timeDuration(k.interval)),
			health.WithProbeLogger(a.log.With("probe", "pool host")))
		if err != nil { // not reached: the address and options were checked
			a.log.Error("pool host probe", "host", k.addr, "err", err)
			continue
		}
		pr.Start()
		pp.m[k] = pr
	}
}

// down reports whether a probe of the pool host addr says it is down.
func (pp *poolProbes) down(p *Pool, addr string) bool {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	for k, pr := range pp.m {
		if k.addr == addr && k.transport == p.Transport && k.interval == int64(p.ProbeInterval) {
			return !pr.Healthy()
		}
	}
	return false
}

// close stops every probe; later syncs start none.
func (pp *poolProbes) close() {
	pp.mu.Lock()
	probes := pp.m
	pp.m, pp.closed = nil, true
	pp.mu.Unlock()
	for _, pr := range probes {
		pr.Close()
	}
}

func timeDuration(ns int64) time.Duration { return time.Duration(ns) }
