//go:build !linux

package sched

// SetBatch returns ErrUnsupported: SCHED_BATCH is Linux's.
func SetBatch() (int, error) { return 0, ErrUnsupported }

// Threads returns ErrUnsupported: SCHED_BATCH is Linux's.
func Threads(pid int) (map[int]Policy, error) { return nil, ErrUnsupported }
