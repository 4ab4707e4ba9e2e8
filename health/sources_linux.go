package health

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/sluicemta/sluice/internal/fdcount"
)

// OpenFiles returns a Sample of the number of open file descriptors of
// the process, counted in /proc/self/fd.
func OpenFiles() Sample {
	return func(context.Context) (float64, error) {
		n, err := fdcount.Open()
		if err != nil {
			return 0, fmt.Errorf("health: open files: %w", err)
		}
		return float64(n), nil
	}
}

// FileLimit returns a Sample of the soft limit on open file descriptors
// (RLIMIT_NOFILE); [Ratio] of [OpenFiles] and FileLimit is the share in
// use.
func FileLimit() Sample {
	return func(context.Context) (float64, error) {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, fmt.Errorf("health: getrlimit: %w", err)
		}
		return float64(rl.Cur), nil
	}
}

// RSSBytes returns a Sample of the resident set size of the process, from
// /proc/self/statm.
func RSSBytes() Sample {
	return func(context.Context) (float64, error) {
		b, err := os.ReadFile("/proc/self/statm")
		if err != nil {
			return 0, fmt.Errorf("health: rss: %w", err)
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			return 0, fmt.Errorf("health: rss: /proc/self/statm %q", b)
		}
		pages, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("health: rss: %w", err)
		}
		return float64(pages) * float64(os.Getpagesize()), nil
	}
}

// DiskFreeBytes returns a Sample of the bytes available to the process on
// the file system holding path (statfs(2) f_bavail), such as the spool
// directory. Watch it with a Below rule.
func DiskFreeBytes(path string) Sample {
	return func(context.Context) (float64, error) {
		st, err := statfs(path)
		if err != nil {
			return 0, err
		}
		return float64(st.Bavail) * float64(st.Bsize), nil
	}
}

// DiskFreeRatio returns a Sample of the share (0 to 1) of the file system
// holding path that is available to the process.
func DiskFreeRatio(path string) Sample {
	return func(context.Context) (float64, error) {
		st, err := statfs(path)
		if err != nil {
			return 0, err
		}
		if st.Blocks == 0 {
			return 0, fmt.Errorf("health: disk free %s: file system has no blocks", path)
		}
		return float64(st.Bavail) / float64(st.Blocks), nil
	}
}

func statfs(path string) (*syscall.Statfs_t, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return nil, fmt.Errorf("health: statfs %s: %w", path, err)
	}
	return &st, nil
}
