package spamd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/spamd"
	"github.com/sluicemta/sluice/filter/spamd/spamdtest"
	"github.com/sluicemta/sluice/health"
)

// BenchmarkPoolThroughput measures spamd-filter throughput through a pool
// of two loopback spamd-protocol replicas, both healthy and with one hung
// (it accepts connections and never answers: seed 000). The pool starts
// with the hung replica in rotation, so the figure includes the time to
// eject it: the requests stuck on it until their timeout and the probes
// that find it. Compare ns/op of the two: the issue asks for the hung case
// to keep at least 90% of the healthy throughput.
//
//	go test -run '^$' -bench PoolThroughput -count 3 ./filter/spamd/
func BenchmarkPoolThroughput(b *testing.B) {
	for _, bc := range []struct {
		name string
		hung bool
	}{{"two-healthy", false}, {"one-of-two-hung", true}} {
		b.Run(bc.name, func(b *testing.B) {
			ok, other := benchServer(b), benchServer(b)
			other.SetHung(bc.hung)
			pool, err := health.NewPool("spamd", []string{other.Addr(), ok.Addr()}, health.SpamdPing(),
				health.WithProbeOptions(health.WithInterval(time.Second), health.WithDeadline(500*time.Millisecond),
					health.WithFall(2), health.WithRise(2)))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { pool.Close() })
			f, err := spamd.New(pool, spamd.WithTimeout(time.Second))
			if err != nil {
				b.Fatal(err)
			}
			body := benchMessage()
			b.SetParallelism(16) // an MTA checks many messages at once
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					m := &filter.Message{Body: strings.NewReader(body), Size: int64(len(body))}
					// Failures are counted by the pool; throughput is what is measured.
					f.Check(context.Background(), m)
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(ok.Scans()+other.Scans())/float64(b.N)*100, "%scanned")
		})
	}
}

func benchServer(b *testing.B) *spamdtest.Server {
	s, err := spamdtest.NewServer()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// benchMessage is a plain 4 KiB message.
func benchMessage() string {
	var sb strings.Builder
	sb.WriteString("From: a@example.org\r\nTo: b@example.org\r\nSubject: bench\r\n\r\n")
	for sb.Len() < 4096 {
		sb.WriteString("The quick brown fox jumps over the lazy dog, again and again.\r\n")
	}
	return sb.String()
}
