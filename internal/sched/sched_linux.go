package sched

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

const (
	schedNormal      = 0
	schedBatch       = 3
	schedResetOnFork = 0x40000000 // or'ed into sched_getscheduler's result
)

// maxPasses bounds the rereads of the thread list: a thread created from
// one not yet moved, while the list was being walked, is found by the next
// pass; one created from a moved thread inherits the policy.
const maxPasses = 8

// SetBatch moves every thread of the process that runs under the default
// policy to SCHED_BATCH, and returns how many it moved. Threads created
// later inherit the policy from the thread that creates them, so the Go
// runtime's future threads run under it too. Threads under any other
// policy (set with chrt or systemd's CPUSchedulingPolicy=) keep it, and
// nice values are left alone. No privilege is needed.
func SetBatch() (int, error) {
	moved := 0
	seen := make(map[int]bool)
	for range maxPasses {
		tids, err := threads("self")
		if err != nil {
			return moved, err
		}
		found := false
		for _, tid := range tids {
			if seen[tid] {
				continue
			}
			seen[tid], found = true, true
			ok, err := batch(tid)
			if errors.Is(err, syscall.ESRCH) {
				continue // it exited
			}
			if err != nil {
				return moved, err
			}
			if ok {
				moved++
			}
		}
		if !found {
			return moved, nil
		}
	}
	return moved, nil
}

// batch moves thread tid to SCHED_BATCH if it runs under SCHED_OTHER.
func batch(tid int) (bool, error) {
	p, err := policyOf(tid)
	if err != nil || p != schedNormal {
		return false, err
	}
	var param struct{ priority int32 } // struct sched_param; 0 for SCHED_BATCH
	if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, uintptr(tid), schedBatch, uintptr(unsafe.Pointer(&param))); e != 0 {
		return false, fmt.Errorf("sched_setscheduler(%d, SCHED_BATCH): %w", tid, e)
	}
	return true, nil
}

func policyOf(tid int) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETSCHEDULER, uintptr(tid), 0, 0)
	if e != 0 {
		return 0, fmt.Errorf("sched_getscheduler(%d): %w", tid, e)
	}
	return int(r) &^ schedResetOnFork, nil
}

// Threads reports the policy of every thread of process pid, by thread
// id; threads that exit meanwhile are left out.
func Threads(pid int) (map[int]Policy, error) {
	tids, err := threads(strconv.Itoa(pid))
	if err != nil {
		return nil, err
	}
	out := make(map[int]Policy, len(tids))
	for _, tid := range tids {
		p, err := policyOf(tid)
		if errors.Is(err, syscall.ESRCH) {
			continue
		}
		if err != nil {
			return nil, err
		}
		switch p {
		case schedNormal:
			out[tid] = Normal
		case schedBatch:
			out[tid] = Batch
		default:
			out[tid] = Other
		}
	}
	return out, nil
}

// threads lists the thread ids of process pid ("self" for this one).
func threads(pid string) ([]int, error) {
	dir := "/proc/" + pid + "/task"
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	tids := make([]int, 0, len(names))
	for _, n := range names {
		if tid, err := strconv.Atoi(n); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
