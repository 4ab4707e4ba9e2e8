package smtp

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/sluicemta/sluice"
)

// clients keeps the per-client state of admission: open connections and
// the token buckets of connection rate, message rate and failed AUTH. A
// client is an IPv4 address or an IPv6 /64 (one host's usual allocation),
// so rotating addresses in a /64 does not escape the limits.
type clients struct {
	cfg *config

	mu        sync.Mutex // guards byKey and lastPrune
	byKey     map[netip.Prefix]*client
	lastPrune time.Time
}

type client struct {
	conns    int
	connRate *rate.Limiter
	msgRate  *rate.Limiter
	authFail *rate.Limiter
	authOpen int // AUTH exchanges begun and not ended (authBegin)
	seen     time.Time
}

// pruneAfter is how long an idle client's state is kept. It is long
// enough for every bucket to refill, so dropping it forgets nothing.
const pruneAfter = 15 * time.Minute

func newClients(cfg *config) *clients {
	return &clients{cfg: cfg, byKey: make(map[netip.Prefix]*client)}
}

func clientKey(a netip.Addr) netip.Prefix {
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// getLocked returns the state of the client at a, creating it.
func (cs *clients) getLocked(a netip.Addr, now time.Time) *client {
	cs.pruneLocked(now)
	k := clientKey(a)
	c := cs.byKey[k]
	if c == nil {
		c = &client{
			connRate: rate.NewLimiter(cs.cfg.connRate, cs.cfg.connBurst),
			msgRate:  rate.NewLimiter(cs.cfg.msgRate, cs.cfg.msgBurst),
			authFail: rate.NewLimiter(rate.Limit(float64(cs.cfg.authFailures)/cs.cfg.authWindow.Seconds()), cs.cfg.authFailures),
		}
		cs.byKey[k] = c
	}
	c.seen = now
	return c
}

// pruneLocked forgets idle clients, at most once a minute.
func (cs *clients) pruneLocked(now time.Time) {
	if now.Sub(cs.lastPrune) < time.Minute {
		return
	}
	cs.lastPrune = now
	for k, c := range cs.byKey {
		if c.conns == 0 && now.Sub(c.seen) > pruneAfter {
			delete(cs.byKey, k)
		}
	}
}

// connect admits a connection from a (limited unless trusted). It returns
// the function that releases its slot, or the reply refusing it.
func (cs *clients) connect(a netip.Addr, trusted bool) (release func(), refused *sluice.Reply) {
	if trusted {
		return func() {}, nil
	}
	now := time.Now()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.getLocked(a, now)
	if c.conns >= cs.cfg.maxConnsPerIP {
		return nil, replyTooManyFromIP
	}
	if !c.connRate.AllowN(now, 1) {
		return nil, replyConnRate
	}
	c.conns++
	var once sync.Once
	return func() {
		once.Do(func() {
			cs.mu.Lock()
			c.conns--
			c.seen = time.Now()
			cs.mu.Unlock()
		})
	}, nil
}

// message admits a transaction from a.
func (cs *clients) message(a netip.Addr, trusted bool) bool {
	if trusted {
		return true
	}
	now := time.Now()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.getLocked(a, now).msgRate.AllowN(now, 1)
}

// authBegin reserves one failure of a's AUTH budget for an exchange about
// to begin, or reports that none is left. Reserved when the exchange
// begins, not spent when it fails: otherwise a client could begin one on
// each of many connections while one failure was left, and guess on all
// of them. authEnd ends the exchange. Trusted clients are throttled too: a
// password guesser can sit anywhere.
func (cs *clients) authBegin(a netip.Addr) bool {
	now := time.Now()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.getLocked(a, now)
	if c.authFail.TokensAt(now) < float64(c.authOpen+1) {
		return false
	}
	c.authOpen++
	return true
}

// authEnd ends an exchange that authBegin let begin; failed (wrong
// credentials) spends its reserved failure.
func (cs *clients) authEnd(a netip.Addr, failed bool) {
	now := time.Now()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.getLocked(a, now)
	c.authOpen = max(0, c.authOpen-1)
	if failed {
		c.authFail.AllowN(now, 1)
	}
}
