package maillog

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Option configures a [Log].
type Option func(*config)

type config struct {
	maxSize int64
	keep    int
	delay   time.Duration
	logger  *slog.Logger
}

func defaultConfig() config {
	return config{maxSize: 64 << 20, keep: 4, logger: slog.New(slog.DiscardHandler)}
}

func (c *config) validate() error {
	switch {
	case c.maxSize < 4096:
		return fmt.Errorf("maillog: rotation size %d is below 4096 bytes", c.maxSize)
	case c.keep < 1 || c.keep > 100:
		return fmt.Errorf("maillog: %d rotated files kept, want 1 to 100", c.keep)
	case c.delay < 0 || c.delay > time.Minute:
		return fmt.Errorf("maillog: write delay %v, want 0 to 1m", c.delay)
	case c.logger == nil:
		return errors.New("maillog: nil logger")
	}
	return nil
}

// WithRotation sets the size at which the file is rotated and how many
// rotated files are kept; the oldest is removed. Search reads them all,
// so they bound its cost too.
// Default: 64 MiB, 4 files (about 1.3 million records in all).
func WithRotation(maxBytes int64, keep int) Option {
	return func(c *config) { c.maxSize, c.keep = maxBytes, keep }
}

// WithWriteDelay lets records wait up to d to be written together, in
// one write of up to 64 KiB, instead of one write each: at thousands of
// deliveries a second that is most of the log's system calls. Search,
// rotation and Close write what waits first; a write that fails when the
// delay ends is logged, as any failed write is. Records still waiting
// when the process dies are lost.
// Default: 0 (each record is written when it is recorded).
func WithWriteDelay(d time.Duration) Option { return func(c *config) { c.delay = d } }

// WithLogger sets the logger for write and rotation errors.
// Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }
