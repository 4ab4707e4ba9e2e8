// Package fdcount counts the open file descriptors of the process, for the
// acceptor's health gate (smtp.OpenFiles) and the health watcher
// (health.OpenFiles).
package fdcount

import (
	"errors"
	"os"
)

// Open returns how many file descriptors the process has open, read from
// /proc/self/fd (Linux) or /dev/fd (the BSDs and macOS), not counting the
// one used to read the directory.
func Open() (int, error) {
	var errs []error
	for _, dir := range []string{"/proc/self/fd", "/dev/fd"} {
		f, err := os.Open(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return len(names) - 1, nil
	}
	return 0, errors.Join(errs...)
}
