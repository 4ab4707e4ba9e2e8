package parse

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/emersion/go-message"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

// Filter is the parsing filter. Create one with [New].
type Filter struct {
	cfg config
}

var _ filter.Filter = (*Filter)(nil)

// Option configures a [Filter].
type Option func(*config)

type config struct {
	maxHeaderFields int
	maxHeaderBytes  int64
	maxDepth        int
	maxParts        int
}

func defaultConfig() config {
	return config{maxHeaderFields: 1000, maxHeaderBytes: 256 << 10, maxDepth: 20, maxParts: 1000}
}

// WithMaxHeaderFields limits the header fields of the message and of each
// part. Default: 1000.
func WithMaxHeaderFields(n int) Option { return func(c *config) { c.maxHeaderFields = n } }

// WithMaxHeaderBytes limits the size of the message's header section.
// Default: 256 KiB.
func WithMaxHeaderBytes(n int64) Option { return func(c *config) { c.maxHeaderBytes = n } }

// WithMaxDepth limits how deep multiparts nest. Default: 20.
func WithMaxDepth(n int) Option { return func(c *config) { c.maxDepth = n } }

// WithMaxParts limits the MIME parts of the message, the message itself
// included. Default: 1000.
func WithMaxParts(n int) Option { return func(c *config) { c.maxParts = n } }

// New returns a parsing filter. It fails on a limit below 1.
func New(opts ...Option) (*Filter, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxHeaderFields < 1 || cfg.maxHeaderBytes < 1 || cfg.maxDepth < 1 || cfg.maxParts < 1 {
		return nil, errors.New("parse: every limit must be at least 1")
	}
	return &Filter{cfg: cfg}, nil
}

// Check parses m and refuses it with 550 5.6.0 and the reason if it is
// malformed. A message is read once, streaming; a part's body is decoded
// and discarded.
func (f *Filter) Check(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	if m.Body == nil {
		return filter.Verdict{}, nil
	}
	err := f.validate(ctx, &ctxReader{ctx: ctx, r: m.Reader()})
	var pe *parseError
	switch {
	case err == nil:
		return filter.Verdict{}, nil
	case errors.As(err, &pe):
		return filter.Verdict{Action: filter.Reject,
			Reply: sluice.NewReply(550, sluice.EnhancedCode{5, 6, 0}, "message could not be parsed: %s", pe.reason)}, nil
	default:
		return filter.Verdict{}, err // could not read the message: not its fault
	}
}

// parseError is a defect of the message, as opposed to a failure to read
// it.
type parseError struct{ reason string }

func (e *parseError) Error() string { return "parse: " + e.reason }

func malformed(format string, args ...any) error {
	return &parseError{reason: fmt.Sprintf(format, args...)}
}

// validate walks the MIME tree of the message read from r.
func (f *Filter) validate(ctx context.Context, r *ctxReader) error {
	ent, err := message.ReadWithOptions(r, &message.ReadOptions{MaxHeaderBytes: f.cfg.maxHeaderBytes})
	if err := f.classify(r, err, "header"); err != nil {
		return err
	}
	parts := 0
	err = ent.Walk(func(path []int, part *message.Entity, err error) error {
		if err := f.classify(r, err, "part"); err != nil {
			return err
		}
		parts++
		switch {
		case parts > f.cfg.maxParts:
			return malformed("more than %d MIME parts", f.cfg.maxParts)
		case len(path) > f.cfg.maxDepth:
			return malformed("multiparts nested deeper than %d", f.cfg.maxDepth)
		}
		if n := part.Header.Len(); n > f.cfg.maxHeaderFields {
			return malformed("%d header fields, more than %d", n, f.cfg.maxHeaderFields)
		}
		if part.MultipartReader() != nil {
			return nil // Walk reads its parts next
		}
		if _, err := io.Copy(io.Discard, part.Body); err != nil {
			return f.classify(r, err, "body")
		}
		return nil
	})
	return f.classify(r, err, "structure")
}

// classify turns an error of go-message into a parse error, or passes on
// an error of the reader itself (the context ended, a read failed).
func (f *Filter) classify(r *ctxReader, err error, where string) error {
	switch {
	case err == nil || message.IsUnknownCharset(err) || message.IsUnknownEncoding(err):
		return nil
	case r.err != nil:
		return r.err
	}
	var pe *parseError
	if errors.As(err, &pe) {
		return err
	}
	return malformed("%s: %v", where, err)
}

// ctxReader stops reading when ctx ends and keeps its own errors apart
// from the parser's.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	err error // an error of the underlying reader or the context
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		c.err = err
		return 0, err
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}
