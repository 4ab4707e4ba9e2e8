package queue

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// ErrNotFound is returned by [Store.Get] for a key that is not stored, and
// by the operations API for an id that is not queued.
var ErrNotFound = errors.New("queue: not found")

// Store is the ordered key-value store a spool keeps its records in. The
// queue owns the keyspace and checksums every value itself; a Store only
// has to keep what it is given, in key order, and make it durable on Sync.
// The default is a pebble database in the spool directory; [WithStore]
// plugs in another. Methods are called concurrently.
type Store interface {
	// Get returns a copy of the value stored under key, or an error
	// wrapping ErrNotFound.
	Get(key []byte) ([]byte, error)
	// Scan calls fn with each key in [lower, upper), in byte order, until
	// fn returns false or an error. key and value are valid only during
	// the call. A nil upper means no upper bound.
	Scan(lower, upper []byte, fn func(key, value []byte) (bool, error)) error
	// NewBatch returns an empty batch of writes.
	NewBatch() Batch
	// Sync returns once every batch committed before the call is on
	// stable storage.
	Sync() error
	// Close releases the store. Batches committed but not synced may be
	// lost.
	Close() error
}

// Batch is a set of writes to a [Store] applied atomically: after a crash
// either all of them are there or none.
type Batch interface {
	// Set and Delete copy their arguments: the caller may reuse them.
	Set(key, value []byte)
	Delete(key []byte)
	// DeleteRange deletes every key in [lower, upper).
	DeleteRange(lower, upper []byte)
	// Size returns the bytes of the writes so far.
	Size() int
	// Commit applies the batch, not necessarily durably (see Store.Sync),
	// and releases it. A batch is committed or discarded exactly once.
	Commit() error
	// Discard releases a batch that will not be committed.
	Discard()
}

// pebbleStore is the default [Store].
type pebbleStore struct {
	db *pebble.DB
}

// openPebble opens (or creates) the pebble database in dir. Pebble is an
// LSM with a write-ahead log; every batch is one WAL record, so batches are
// atomic across crashes, and Sync is one WAL fsync shared by every batch
// committed before it (docs/BENCHMARKS.md has the measurements that chose
// it).
func openPebble(dir string, log *slog.Logger) (*pebbleStore, error) {
	opts := &pebble.Options{
		// A spool is written once and deleted soon: a large memtable lets
		// most messages die before they are ever flushed to an sstable.
		// While one is flushed the next fills, so two are resident at
		// the peak: 48 MiB keeps a relay's RSS near 130 MiB however long
		// it runs (64 MiB: near 170), and costs no throughput measured
		// (docs/BENCHMARKS.md, fix 23); 32 MiB made flushes dearer.
		MemTableSize:                48 << 20,
		MemTableStopWritesThreshold: 4,
		FormatMajorVersion:          pebble.FormatNewest,
		Logger:                      pebbleLogger{log.With("component", "pebble")},
		// Write-ahead logs zeroed ahead of their writer (walfs.go).
		FS: walFS{vfs.Default},
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("queue: open store %s: %w", dir, err)
	}
	return &pebbleStore{db: db}, nil
}

func (s *pebbleStore) Get(key []byte) ([]byte, error) { return s.getAppend(nil, key) }

// getAppend appends the value stored under key to dst, so that a reader
// of many values (a body, chunk by chunk) reuses one buffer.
func (s *pebbleStore) getAppend(dst, key []byte) ([]byte, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	if err != nil {
		return nil, storeErr(err)
	}
	out := append(dst, v...)
	closer.Close()
	return out, nil
}

// appendGetter is implemented by stores that can read a value into a
// caller's buffer ([Store.Get] returns a new copy each time).
type appendGetter interface {
	getAppend(dst, key []byte) ([]byte, error)
}

// has reports whether key is stored, as Get's error would, without copying
// the value out.
func (s *pebbleStore) has(key []byte) error {
	_, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	if err != nil {
		return storeErr(err)
	}
	return closer.Close()
}

// storeHas reports whether key is in s: nil, an error wrapping ErrNotFound,
// or the store's error. It copies nothing where the store can tell without.
func storeHas(s Store, key []byte) error {
	if h, ok := s.(interface{ has([]byte) error }); ok {
		return h.has(key)
	}
	_, err := s.Get(key)
	return err
}

func (s *pebbleStore) Scan(lower, upper []byte, fn func(key, value []byte) (bool, error)) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return storeErr(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return storeErr(err)
		}
		more, err := fn(it.Key(), v)
		if err != nil || !more {
			it.Close()
			return err
		}
	}
	return storeErr(it.Close())
}

func (s *pebbleStore) NewBatch() Batch { return &pebbleBatch{b: s.db.NewBatch()} }

func (s *pebbleStore) Sync() error { return storeErr(s.db.LogData(nil, pebble.Sync)) }

func (s *pebbleStore) Close() error { return storeErr(s.db.Close()) }

// storeErr marks pebble's corruption errors as ErrCorrupt, so the queue
// treats a damaged sstable block like a damaged record.
func storeErr(err error) error {
	if err == nil {
		return nil
	}
	if pebble.IsCorruptionError(err) {
		return fmt.Errorf("%w: store: %v", ErrCorrupt, err)
	}
	return fmt.Errorf("queue: store: %w", err)
}

type pebbleBatch struct{ b *pebble.Batch }

func (b *pebbleBatch) Set(key, value []byte)           { b.b.Set(key, value, nil) }
func (b *pebbleBatch) Delete(key []byte)               { b.b.Delete(key, nil) }
func (b *pebbleBatch) DeleteRange(lower, upper []byte) { b.b.DeleteRange(lower, upper, nil) }
func (b *pebbleBatch) Size() int                       { return b.b.Len() }
func (b *pebbleBatch) Discard()                        { b.b.Close() }

func (b *pebbleBatch) Commit() error {
	err := b.b.Commit(pebble.NoSync)
	b.b.Close()
	return storeErr(err)
}

// pebbleLogger sends pebble's log lines to slog. Pebble calls Fatalf when
// its write-ahead log can no longer be written; the default would exit the
// process, and a library never owns the process, so it panics instead
// (the embedding program decides what a panic means).
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg)
	panic("queue: store failed: " + msg)
}

// groupSync lets concurrent writers share one Store.Sync: a caller returns
// once a sync that started after its call has finished, and at most one
// sync runs at a time, so N concurrent enqueues cost about two syncs, not
// N (group commit). observe, if set, is told how many callers each sync
// released and how long it took.
type groupSync struct {
	syncFn  func() error
	observe func(n int, took time.Duration)

	mu        sync.Mutex // guards the fields below
	cond      *sync.Cond
	started   uint64 // syncs begun
	completed uint64 // the number of the last sync finished
	err       error  // its result
	running   bool
	waiting   int // callers waiting for the next sync to start
}

func newGroupSync(syncFn func() error, observe func(int, time.Duration)) *groupSync {
	g := &groupSync{syncFn: syncFn, observe: observe}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *groupSync) wait() error {
	g.mu.Lock()
	ticket := g.started // a sync numbered above this began after our call
	g.waiting++
	for g.running {
		g.cond.Wait()
		if g.completed > ticket {
			err := g.err
			g.mu.Unlock()
			return err
		}
	}
	g.started++
	n := g.started
	released := g.waiting
	g.waiting = 0
	g.running = true
	g.mu.Unlock()
	return g.run(n, released)
}

// errSyncPanicked is what the callers waiting for a sync get when the
// sync panicked instead of returning.
var errSyncPanicked = errors.New("queue: store sync failed (panic)")

// run is sync number n, for released callers, outside the lock. If syncFn
// panics (pebble's fatal errors do: see pebbleLogger), the sync still
// ends, failed, before the panic goes on: the callers waiting for it get
// errSyncPanicked, and the next caller starts a sync of its own, rather
// than all of them waiting for ever on a sync that never ends.
func (g *groupSync) run(n uint64, released int) (err error) {
	err = errSyncPanicked // unless syncFn returns
	defer func() {
		g.mu.Lock()
		g.running = false
		g.completed, g.err = n, err
		g.cond.Broadcast()
		g.mu.Unlock()
	}()
	began := time.Now()
	err = g.syncFn()
	if g.observe != nil {
		g.observe(released, time.Since(began))
	}
	return err
}

var (
	_ Store = (*pebbleStore)(nil)
	_ Batch = (*pebbleBatch)(nil)
)
