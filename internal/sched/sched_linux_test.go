package sched

import (
	"errors"
	"os"
	"runtime"
	"syscall"
	"testing"
	"unsafe"
)

const schedIdle = 5

// lockedThread runs a goroutine locked to a thread until the test ends
// (the thread then exits with it), and returns the thread's id after
// applying set to it. The thread is the one the goroutine started on,
// which may have existed before; no other goroutine runs on it while it
// is locked, and threads the runtime starts from a locked thread come
// from its template thread, so they do not inherit set's policy.
func lockedThread(t *testing.T, set func(tid int) error) int {
	t.Helper()
	tid := make(chan int)
	errs := make(chan error, 1)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		id := syscall.Gettid()
		if set != nil {
			if err := set(id); err != nil {
				errs <- err
				return
			}
		}
		tid <- id
		<-done
	}()
	select {
	case id := <-tid:
		return id
	case err := <-errs:
		t.Fatal(err)
		return 0
	}
}

func TestSetBatch(t *testing.T) {
	before, err := Threads(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for tid, p := range before {
		if p != Normal {
			t.Skipf("thread %d already runs under policy %v: the test needs a process started under the default policy", tid, p)
		}
	}
	// A thread under another policy, as an operator's chrt would leave
	// it, keeps that policy.
	idle := lockedThread(t, func(tid int) error {
		var param struct{ priority int32 }
		if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, uintptr(tid), schedIdle, uintptr(unsafe.Pointer(&param))); e != 0 {
			return e
		}
		return nil
	})

	moved, err := SetBatch()
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("this machine refuses the policy change (a seccomp filter?): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	after, err := Threads(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The idle goroutine may have been locked to one of the threads that
	// ran before; that one is not moved.
	want := len(before)
	if _, ok := before[idle]; ok {
		want--
	}
	if moved < want {
		t.Errorf("SetBatch moved %d threads, want at least the %d under the default policy before it", moved, want)
	}
	for tid, p := range after {
		want := Batch
		if tid == idle {
			want = Other
		}
		if p != want {
			t.Errorf("thread %d: policy %v after SetBatch, want %v", tid, p, want)
		}
	}

	// Threads the runtime creates later inherit the policy: more locked
	// goroutines than the process has threads force new ones.
	newThreads := 0
	for range len(after) + 2 {
		tid := lockedThread(t, nil)
		if _, old := after[tid]; !old {
			newThreads++
		}
		if p, err := policyOf(tid); err != nil || p != schedBatch {
			t.Errorf("thread %d, started after SetBatch: policy %d (%v), want SCHED_BATCH", tid, p, err)
		}
	}
	if newThreads == 0 {
		t.Fatal("no new thread was started; the inheritance was not tested")
	}
}
