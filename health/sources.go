package health

import (
	"context"
	"errors"
	"runtime/metrics"
	"sync"
	"time"
)

// ErrUnsupported is returned by samples that the platform cannot give
// (open files, RSS and disk space are read from Linux interfaces).
var ErrUnsupported = errors.New("health: sample not supported on this platform")

// QueueDepth returns a Sample of depth, the number of queued messages
// (queue.Queue's Depth method, say).
func QueueDepth(depth func() int) Sample {
	return func(context.Context) (float64, error) { return float64(depth()), nil }
}

// OldestAge returns a Sample of the age in seconds of the oldest queued
// message, given when it was received (queue.Queue's Oldest method, say;
// the zero time for an empty queue, whose age is 0).
func OldestAge(oldest func() time.Time, now func() time.Time) Sample {
	return func(context.Context) (float64, error) {
		t := oldest()
		if t.IsZero() {
			return 0, nil
		}
		return max(now().Sub(t).Seconds(), 0), nil
	}
}

// HeapBytes returns a Sample of the bytes of live and not yet swept heap
// objects of the Go runtime (runtime/metrics
// "/memory/classes/heap/objects:bytes"); reading it does not stop the
// world, unlike runtime.ReadMemStats.
func HeapBytes() Sample {
	return func(context.Context) (float64, error) {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindUint64 {
			return 0, ErrUnsupported
		}
		return float64(s[0].Value.Uint64()), nil
	}
}

// Delta returns a Sample of the increase of a counter since the previous
// sample, such as resolver failures per period (the first sample counts
// from zero; a counter that went down, reset, counts from its new value).
func Delta(counter Sample) Sample {
	var mu sync.Mutex // guards last
	var last float64
	return func(ctx context.Context) (float64, error) {
		v, err := counter(ctx)
		if err != nil {
			return 0, err
		}
		mu.Lock()
		defer mu.Unlock()
		d := v - last
		if d < 0 {
			d = v
		}
		last = v
		return d, nil
	}
}

// Ratio returns a Sample of num/den, such as heap bytes over a budget; it
// fails when den is not positive.
func Ratio(num, den Sample) Sample {
	return func(ctx context.Context) (float64, error) {
		n, err := num(ctx)
		if err != nil {
			return 0, err
		}
		d, err := den(ctx)
		if err != nil {
			return 0, err
		}
		if d <= 0 {
			return 0, errors.New("health: ratio of a non-positive denominator")
		}
		return n / d, nil
	}
}

// Const returns a Sample of v, such as a memory budget for [Ratio].
func Const(v float64) Sample {
	return func(context.Context) (float64, error) { return v, nil }
}
