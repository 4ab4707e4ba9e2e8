//go:build interop

package interop

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// policies returns the scheduling policy of each thread of process pid,
// by thread id, as sched_getscheduler reports it (0 SCHED_OTHER, 3
// SCHED_BATCH).
func policies(t *testing.T, pid int) map[int]int {
	t.Helper()
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int]int)
	for _, n := range names {
		tid, err := strconv.Atoi(n.Name())
		if err != nil {
			continue
		}
		r, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETSCHEDULER, uintptr(tid), 0, 0)
		if e == syscall.ESRCH {
			continue // the thread exited
		}
		if e != 0 {
			t.Fatalf("sched_getscheduler(%d): %v", tid, e)
		}
		out[tid] = int(r) &^ 0x40000000 // SCHED_RESET_ON_FORK
	}
	return out
}

// TestServeSchedulingPolicy: sluice serve runs every thread under
// SCHED_BATCH by default, and leaves them under the policy it was started
// with when process.cpu_scheduling is "inherit".
func TestServeSchedulingPolicy(t *testing.T) {
	if p := policies(t, os.Getpid()); p[os.Getpid()] != 0 {
		t.Skipf("the test runs under policy %d; it needs the default", p[os.Getpid()])
	}
	for _, tc := range []struct {
		conf string
		want int
	}{
		{"", 3},
		{"\n[process]\ncpu_scheduling = \"inherit\"\n", 0},
	} {
		p := startSluiceWith(t, t.TempDir(), tc.conf)
		for _, l := range p.log.snapshot() {
			if strings.Contains(l, "cannot run under SCHED_BATCH") {
				t.Skipf("this machine refuses the policy change (a seccomp filter?), which sluice logs and survives: %s", l)
			}
		}
		got := policies(t, p.cmd.Process.Pid)
		if len(got) < 2 {
			t.Fatalf("%q: %d threads, want the Go runtime's several", tc.conf, len(got))
		}
		for tid, policy := range got {
			if policy != tc.want {
				t.Errorf("%q: thread %d of sluice serve runs under policy %d, want %d", tc.conf, tid, policy, tc.want)
			}
		}
		p.stop(t)
	}
}
