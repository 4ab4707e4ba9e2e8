//go:build !linux

package health

import "context"

func unsupported(context.Context) (float64, error) { return 0, ErrUnsupported }

// OpenFiles returns a Sample that fails with ErrUnsupported: open files
// are counted in Linux's /proc.
func OpenFiles() Sample { return unsupported }

// FileLimit returns a Sample that fails with ErrUnsupported off Linux.
func FileLimit() Sample { return unsupported }

// RSSBytes returns a Sample that fails with ErrUnsupported: the RSS is
// read from Linux's /proc.
func RSSBytes() Sample { return unsupported }

// DiskFreeBytes returns a Sample that fails with ErrUnsupported off Linux.
func DiskFreeBytes(path string) Sample { return unsupported }

// DiskFreeRatio returns a Sample that fails with ErrUnsupported off Linux.
func DiskFreeRatio(path string) Sample { return unsupported }
