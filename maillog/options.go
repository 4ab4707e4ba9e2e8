package maillog

import (
	"errors"
	"fmt"
	"log/slog"
)

// Option configures a [Log].
type Option func(*config)

type config struct {
	maxSize int64
	keep    int
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

// WithLogger sets the logger for write and rotation errors.
// Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }
