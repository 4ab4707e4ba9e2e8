//go:build interop

package interop

import (
	"os"
	"strings"
	"testing"

	"github.com/sluicemta/sluice/internal/sched"
)

// TestServeSchedulingPolicy: sluice serve runs every thread under
// SCHED_BATCH by default, and leaves them under the policy it was started
// with when process.cpu_scheduling is "inherit".
func TestServeSchedulingPolicy(t *testing.T) {
	self, err := sched.Threads(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p := self[os.Getpid()]; p != sched.Normal {
		t.Skipf("the test runs under policy %v; it needs the default", p)
	}
	for _, tc := range []struct {
		conf string
		want sched.Policy
	}{
		{"", sched.Batch},
		{"\n[process]\ncpu_scheduling = \"inherit\"\n", sched.Normal},
	} {
		p := startSluiceWith(t, t.TempDir(), tc.conf)
		for _, l := range p.log.snapshot() {
			if strings.Contains(l, "cannot run under SCHED_BATCH") {
				t.Skipf("this machine refuses the policy change (a seccomp filter?), which sluice logs and survives: %s", l)
			}
		}
		got, err := sched.Threads(p.cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) < 2 {
			t.Fatalf("%q: %d threads, want the Go runtime's several", tc.conf, len(got))
		}
		for tid, policy := range got {
			if policy != tc.want {
				t.Errorf("%q: thread %d of sluice serve runs under policy %v, want %v", tc.conf, tid, policy, tc.want)
			}
		}
		p.stop(t)
	}
}
