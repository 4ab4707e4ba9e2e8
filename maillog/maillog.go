package maillog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/internal/jsonenc"
	"github.com/sluicemta/sluice/internal/logbuf"
)

// Log is a delivery log kept in a file, one JSON object per line, rotated
// by size: path, then path.1 (the previous file) up to path.N. It
// implements [delivery.Recorder]. A Log is safe for concurrent use.
type Log struct {
	path    string
	maxSize int64
	keep    int
	delay   time.Duration
	logger  *slog.Logger

	mu     sync.Mutex // guards f, w, line, size and closed
	line   []byte     // the record being written, reused
	f      *os.File
	w      io.Writer // f, or a logbuf.Writer in front of it (WithWriteDelay)
	size   int64
	closed bool
}

var _ delivery.Recorder = (*Log)(nil)

// Open opens (creating it if needed) the delivery log at path.
func Open(path string, opts ...Option) (*Log, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	l := &Log{path: path, maxSize: cfg.maxSize, keep: cfg.keep, delay: cfg.delay, logger: cfg.logger.With("component", "maillog")}
	if err := l.openLocked(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) openLocked() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("maillog: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("maillog: %w", err)
	}
	l.f, l.w, l.size = f, f, fi.Size()
	if l.delay > 0 {
		l.w = logbuf.New(f, l.delay, 64<<10, func(err error) {
			l.logger.Error("write delivery log", "path", l.path, "err", err)
		})
	}
	return nil
}

// flushLocked writes the records waiting for the write delay; closing,
// when the file is about to be closed, also stops the delay's timer.
func (l *Log) flushLocked(closing bool) error {
	b, ok := l.w.(*logbuf.Writer)
	switch {
	case !ok:
		return nil
	case closing:
		return b.Close()
	}
	return b.Flush()
}

// Record appends r as one line. A write error is logged, not returned:
// the delivery it records has happened either way.
func (l *Log) Record(_ context.Context, r *delivery.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	line := appendRecord(l.line[:0], r)
	l.line = line
	if l.size > 0 && l.size+int64(len(line)) > l.maxSize {
		if err := l.rotateLocked(); err != nil {
			l.logger.Error("rotate delivery log", "path", l.path, "err", err)
		}
	}
	n, err := l.w.Write(line)
	l.size += int64(n)
	if err != nil {
		l.logger.Error("write delivery log", "path", l.path, "err", err)
	}
}

// rotateLocked shifts path.N-1 to path.N, ..., path to path.1 and opens
// a new path. Whatever step fails, a file is open at path afterwards (the
// old one, or a new one if the old was moved away), so records go on being
// written; a rotation that failed is tried again after another maxSize
// bytes, not at every record.
func (l *Log) rotateLocked() (err error) {
	defer func() {
		if err != nil {
			l.size = 0
		}
	}()
	if err := l.flushLocked(true); err != nil {
		return err // the file stays open
	}
	err = l.f.Close()
	for i := l.keep - 1; i >= 1 && err == nil; i-- {
		if rerr := os.Rename(l.file(i), l.file(i+1)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = rerr
		}
	}
	if err == nil {
		err = os.Rename(l.path, l.file(1))
	}
	if oerr := l.openLocked(); oerr != nil {
		return errors.Join(err, oerr)
	}
	return err
}

// file returns the name of the i-th file: path itself for 0.
func (l *Log) file(i int) string {
	if i == 0 {
		return l.path
	}
	return fmt.Sprintf("%s.%d", l.path, i)
}

// Close closes the file; later records are dropped.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return errors.Join(l.flushLocked(true), l.f.Close())
}

// Query selects delivery records. Empty fields select everything.
type Query struct {
	// Recipient is an address (case-insensitive), or "@domain" for every
	// recipient at a domain.
	Recipient string
	// Sender is an address or "@domain" likewise; "<>" selects
	// notifications (the null sender).
	Sender string
	// QueueID selects the attempts of one message.
	QueueID string
	// Result is "delivered", "deferred" or "bounced".
	Result string
	// Since and Until bound the record's time: Since <= Time < Until.
	Since, Until time.Time
	// Limit is the most records returned, the newest. Default: 100; at
	// most MaxLimit.
	Limit int
}

// MaxLimit bounds Query.Limit: the records a search holds in memory.
const MaxLimit = 10000

// Search returns the records that match q, newest first. It reads the
// files from the oldest, so its cost grows with the log's size (at most
// the rotation size times the files kept).
func (l *Log) Search(ctx context.Context, q Query) ([]delivery.Record, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, MaxLimit)
	switch q.Result {
	case "", "delivered", "deferred", "bounced":
	default:
		return nil, fmt.Errorf("maillog: unknown result %q (want delivered, deferred or bounced)", q.Result)
	}
	l.mu.Lock()
	if !l.closed {
		if err := l.flushLocked(false); err != nil {
			l.logger.Error("write delivery log", "path", l.path, "err", err)
		}
	}
	l.mu.Unlock()
	m := newMatcher(q)
	ring := make([]delivery.Record, 0, q.Limit)
	next := 0 // where the next match goes once ring is full
	for i := l.keep; i >= 0; i-- {
		err := l.scan(ctx, l.file(i), m, func(r delivery.Record) {
			if len(ring) < q.Limit {
				ring = append(ring, r)
				return
			}
			ring[next] = r
			next = (next + 1) % q.Limit
		})
		if err != nil {
			return nil, err
		}
	}
	// Oldest first in ring from next on; reverse to newest first.
	out := make([]delivery.Record, 0, len(ring))
	for i := range ring {
		out = append(out, ring[(next+len(ring)-1-i)%len(ring)])
	}
	return out, nil
}

// scan calls fn with each record of the file name that m accepts. A
// missing file has no records; a line that does not decode is skipped
// (a torn last line after a crash).
func (l *Log) scan(ctx context.Context, name string, m *matcher, fn func(delivery.Record)) error {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("maillog: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	for n := 0; ; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: not one of ours. Skip it.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			continue
		}
		if len(line) > 0 && m.maybe(line) {
			var r delivery.Record
			if json.Unmarshal(line, &r) == nil && m.match(&r) {
				fn(r)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("maillog: read %s: %w", name, err)
		}
	}
}

// matcher applies a Query, with a cheap test on the raw line first.
type matcher struct {
	q      Query
	needle []byte // a string every matching line contains, lower-cased; nil for none
}

func newMatcher(q Query) *matcher {
	m := &matcher{q: q}
	switch {
	case q.QueueID != "":
		m.needle = jsonNeedle(q.QueueID)
	case q.Recipient != "":
		m.needle = jsonNeedle(q.Recipient)
	case q.Sender != "" && q.Sender != "<>":
		m.needle = jsonNeedle(q.Sender)
	}
	return m
}

// jsonNeedle is s lower-cased as it appears inside a JSON string of a
// record line: "&" is \u0026 there, a quote \", and so on.
func jsonNeedle(s string) []byte {
	q := jsonenc.AppendString(nil, strings.ToLower(s))
	return q[1 : len(q)-1]
}

// maybe reports whether line may match: it contains the needle, ignoring
// ASCII case.
func (m *matcher) maybe(line []byte) bool {
	if m.needle == nil {
		return true
	}
	return bytes.Contains(bytes.ToLower(line), m.needle)
}

func (m *matcher) match(r *delivery.Record) bool {
	q := m.q
	switch {
	case q.QueueID != "" && r.QueueID != q.QueueID,
		q.Result != "" && r.Result != q.Result,
		!q.Since.IsZero() && r.Time.Before(q.Since),
		!q.Until.IsZero() && !r.Time.Before(q.Until),
		!addressMatch(q.Recipient, r.To),
		q.Sender == "<>" && r.From != "",
		q.Sender != "<>" && !addressMatch(q.Sender, r.From):
		return false
	}
	return true
}

// addressMatch reports whether addr is pattern (case-insensitive) or, for
// a pattern "@domain", at that domain. An empty pattern matches all.
func addressMatch(pattern, addr string) bool {
	if pattern == "" {
		return true
	}
	if strings.HasPrefix(pattern, "@") {
		return len(addr) >= len(pattern) && strings.EqualFold(addr[len(addr)-len(pattern):], pattern)
	}
	return strings.EqualFold(pattern, addr)
}
