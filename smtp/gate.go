package smtp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/sluicemta/sluice/internal/fdcount"
)

// A Gauge measures one resource the acceptor protects: the queue's depth
// or its oldest message's age, the spool disk, the process's open files.
// The health gate ([WithGate]) compares the value with a high and a low
// watermark. Measure must be quick (it runs when a connection or a
// transaction starts, at most once per [WithGateInterval]) and honour ctx.
type Gauge interface {
	Measure(ctx context.Context) (float64, error)
}

// GaugeFunc adapts a function to [Gauge], for example a queue's depth:
//
//	smtp.GaugeFunc(func(context.Context) (float64, error) { return float64(q.Depth()), nil })
type GaugeFunc func(ctx context.Context) (float64, error)

// Measure calls f.
func (f GaugeFunc) Measure(ctx context.Context) (float64, error) { return f(ctx) }

var _ Gauge = GaugeFunc(nil)

// DiskUsage returns a gauge of the fraction (0 to 1) of the file system
// holding dir that is in use, as seen by an unprivileged user: watch the
// spool with it, for example with high 0.95 and low 0.90.
func DiskUsage(dir string) Gauge {
	return GaugeFunc(func(context.Context) (float64, error) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			return 0, fmt.Errorf("smtp: disk usage of %s: %w", dir, err)
		}
		total := uint64(st.Blocks)
		if total == 0 {
			return 0, nil
		}
		return 1 - float64(uint64(st.Bavail))/float64(total), nil
	})
}

// OpenFiles returns a gauge of the fraction (0 to 1) of the process's
// file descriptor limit (RLIMIT_NOFILE) in use, counted in /proc/self/fd
// (or /dev/fd where there is no /proc).
func OpenFiles() Gauge {
	return GaugeFunc(func(context.Context) (float64, error) {
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("smtp: open files: %w", err)
		}
		n, err := fdcount.Open()
		if err != nil {
			return 0, fmt.Errorf("smtp: open files: %w", err)
		}
		if lim.Cur == 0 {
			return 1, nil
		}
		return float64(n) / float64(lim.Cur), nil
	})
}

// gaugeSpec is a gauge of the gate with its watermarks.
type gaugeSpec struct {
	name      string
	g         Gauge
	high, low float64
}

func (s gaugeSpec) check() error {
	switch {
	case s.name == "":
		return errors.New("smtp: gate gauge without a name")
	case s.g == nil:
		return fmt.Errorf("smtp: gate gauge %s is nil", s.name)
	case s.low > s.high:
		return fmt.Errorf("smtp: gate gauge %s: low watermark %v above high watermark %v", s.name, s.low, s.high)
	}
	return nil
}

// gate is the health gate: closed while any gauge is over its high
// watermark and not yet back to its low one.
type gate struct {
	specs    []gaugeSpec
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex // guards sampled, closed, values and sampling
	sampled time.Time
	closed  []bool    // per gauge: over high, not yet back to low
	values  []float64 // last value per gauge
}

func newGate(specs []gaugeSpec, interval time.Duration, log *slog.Logger) *gate {
	return &gate{specs: specs, interval: interval, log: log,
		closed: make([]bool, len(specs)), values: make([]float64, len(specs))}
}

// open reports whether the gate lets new work in; if not, it names the
// gauge that keeps it closed. Gauges are sampled under the lock, so one
// caller samples while the others wait for its result.
func (g *gate) open(ctx context.Context) (ok bool, why string) {
	if len(g.specs) == 0 {
		return true, ""
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if now := time.Now(); now.Sub(g.sampled) >= g.interval {
		g.sampled = now
		g.sampleLocked(ctx)
	}
	for i, c := range g.closed {
		if c {
			return false, fmt.Sprintf("%s %g (high %g, low %g)", g.specs[i].name, g.values[i], g.specs[i].high, g.specs[i].low)
		}
	}
	return true, ""
}

func (g *gate) sampleLocked(ctx context.Context) {
	for i, s := range g.specs {
		v, err := s.g.Measure(ctx)
		if err != nil {
			// Keep the last state: a gauge that cannot be read neither
			// opens nor closes the gate.
			g.log.Warn("health gate: gauge failed", slog.String("gauge", s.name), slog.Any("error", err))
			continue
		}
		g.values[i] = v
		switch {
		case !g.closed[i] && v >= s.high:
			g.closed[i] = true
			g.log.Warn("health gate closed: refusing new sessions and transactions",
				slog.String("gauge", s.name), slog.Float64("value", v), slog.Float64("high", s.high))
		case g.closed[i] && v <= s.low:
			g.closed[i] = false
			g.log.Info("health gate reopened", slog.String("gauge", s.name), slog.Float64("value", v), slog.Float64("low", s.low))
		}
	}
}

// Check reports whether the server admits new work: it fails, naming the
// gauge, while the health gate ([WithGate]) is closed. It is meant for a
// readiness check, so that load balancers stop sending sessions that the
// server would refuse with 421 anyway.
func (s *Server) Check(ctx context.Context) error {
	if ok, why := s.gate.open(ctx); !ok {
		return errors.New("health gate closed: " + why)
	}
	return nil
}
