// Package logbuf batches log lines into fewer writes. A busy relay logs a
// line or two per message; written one by one, each line is a system call
// (and, to a pipe read by journald, a wake-up of the reader). A Writer
// collects lines and writes them together once the oldest is delay old or
// the buffer is full, so at a few thousand messages a second a write
// carries hundreds of lines, and a quiet server still shows each line
// within delay. The Handler it wraps writes at once every record at or
// above a level, with everything buffered before it, so warnings and
// errors are never held back.
//
// What a Writer holds when the process dies is lost: at most delay's
// worth of lines below the flush level. The Go runtime writes a panic's
// message to the file descriptor itself, after whatever was last flushed.
package logbuf

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Writer is an io.Writer that batches writes to another. It is safe for
// concurrent use; each Write is kept whole and in order.
type Writer struct {
	out     io.Writer
	delay   time.Duration
	limit   int
	onError func(error) // told of a failed write that no caller saw

	mu     sync.Mutex // guards the fields below; held during writes to out
	buf    []byte
	timer  *time.Timer // flushes buf delay after it became non-empty
	closed bool
}

// New returns a Writer that writes to out what it was given once the
// oldest unwritten byte is delay old or limit bytes are waiting. A write
// that fails when the delay ends is reported to onError, if it is not
// nil, since no caller is there to see it (for a process's own log there
// is nowhere else to tell).
func New(out io.Writer, delay time.Duration, limit int, onError func(error)) *Writer {
	return &Writer{out: out, delay: delay, limit: limit, onError: onError}
}

// Write buffers p, or writes it at once after everything buffered before
// it if the Writer is closed or p alone is over the limit.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf)+len(p) > w.limit || w.closed {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > w.limit || w.closed {
			return w.out.Write(p)
		}
	}
	if len(w.buf) == 0 {
		if w.timer == nil {
			w.timer = time.AfterFunc(w.delay, w.timedFlush)
		} else {
			w.timer.Reset(w.delay)
		}
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// Flush writes what is buffered.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

// Close flushes and stops the timer; later writes go straight through.
// It does not close the underlying writer.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.timer != nil {
		w.timer.Stop()
	}
	return w.flushLocked()
}

// timedFlush runs delay after the buffer became non-empty.
func (w *Writer) timedFlush() {
	if err := w.Flush(); err != nil && w.onError != nil {
		w.onError(err)
	}
}

func (w *Writer) flushLocked() error {
	if len(w.buf) == 0 {
		return nil
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	_, err := w.out.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}

// Handler wraps a slog.Handler that writes to w so that a record at or
// above level is written at once, with everything buffered before it.
func (w *Writer) Handler(h slog.Handler, level slog.Leveler) slog.Handler {
	return &handler{Handler: h, w: w, level: level}
}

type handler struct {
	slog.Handler
	w     *Writer
	level slog.Leveler
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= h.level.Level() {
		if ferr := h.w.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &handler{Handler: h.Handler.WithAttrs(attrs), w: h.w, level: h.level}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{Handler: h.Handler.WithGroup(name), w: h.w, level: h.level}
}
