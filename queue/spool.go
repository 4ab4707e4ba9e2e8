package queue

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluicemta/sluice"
)

// spool is a queue's records in a Store, plus the directory around it: the
// lock that keeps a second process out, and quarantine/ where damaged
// records are copied for the operator.
type spool struct {
	dir   string
	lock  *os.File
	store Store
	gsync *groupSync
	onDue func(l lane, t int64) // told of every due key written but a new message's, after it commits
}

// batchFlush is how many bytes of body chunks a write batch collects
// before it is committed and a new one started, so a large message is
// never held whole in memory.
const batchFlush = 1 << 20

func openSpool(dir string, store Store, log *slog.Logger, observeSync func(int, time.Duration), onDue func(lane, int64)) (*spool, error) {
	for _, sub := range []string{"", "quarantine"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "msg")); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("queue: %s holds %d messages in the version 0 file layout (msg/, state/); deliver them with the release that wrote them first", dir, len(ents))
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("queue: spool %s is in use by another process: %w", dir, err)
	}
	s := &spool{dir: dir, lock: lock, store: store, onDue: onDue}
	if s.store == nil {
		if s.store, err = openPebble(filepath.Join(dir, "db"), log); err != nil {
			lock.Close()
			return nil, err
		}
	}
	s.gsync = newGroupSync(s.store.Sync, observeSync)
	if err := s.dropPartials(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *spool) close() error {
	return errors.Join(s.store.Close(), s.lock.Close()) // closing releases the flock
}

func (s *spool) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

// dropPartials deletes the body chunks of messages whose writer died before
// the batch that makes them exist: they were never acknowledged.
func (s *spool) dropPartials() error {
	b := s.store.NewBatch()
	n := 0
	err := s.store.Scan([]byte{pfxPartial}, []byte{pfxPartial + 1}, func(k, _ []byte) (bool, error) {
		id := string(k[1:])
		lo, hi := bodyRange(id)
		b.DeleteRange(lo, hi)
		b.Delete(k)
		n++
		return true, nil
	})
	if err != nil || n == 0 {
		b.Discard()
		return err
	}
	return b.Commit()
}

// handOffMax is the largest body Enqueue hands to the scheduler with the
// message, so that the first attempt, which usually starts at once, sends
// it without reading it back from the store (where reading it back, a
// memtable search and a copy, was about 2.8% of sluice's CPU end to end at
// 4 KiB; docs/BENCHMARKS.md, fix 26). The record is still verified as it
// is read. The bodies are held only as long as their hints (at most
// hintCap, twice the workers) and attempts (at most the workers), so with
// the default 32 workers they hold at most 1.5 MiB.
const handOffMax = 16 << 10

// chunkBufs hold a chunk's record: one being read from the body and
// sealed (writeMessage), or one read back (bodyReader).
var chunkBufs = sync.Pool{New: func() any { b := make([]byte, recordHeaderLen+chunkSize); return &b }}

// writeMessage stores a new message: its body in chunks read from body,
// then, in one last batch, its envelope, state and index entries. It
// returns once the batches are committed; the caller makes them durable
// with sync and tells the scheduler of the due key. A body too large for
// one batch is written in several, the first of which marks the message
// partial so that a crash before the last batch leaves nothing behind but
// chunks that the next start deletes.
//
// A body of one chunk of at most handOffMax bytes is also returned as its
// sealed record, first, for the scheduler to hand to the first attempt
// (see handOffMax); otherwise first is nil.
func (s *spool) writeMessage(id string, env *sluice.Envelope, st *msgState, domains []string, body io.Reader) (se *storedEnvelope, first []byte, err error) {
	buf := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(buf)
	b := s.store.NewBatch()
	se = &storedEnvelope{Env: env}
	// Each chunk is read into its record, after the header, and sealed
	// where it is.
	rec := (*buf)[:recordHeaderLen+chunkSize]
	partial := false
	fail := func(err error) (*storedEnvelope, []byte, error) {
		b.Discard()
		if partial {
			s.dropMessage(id)
		}
		return nil, nil, fmt.Errorf("queue: write %s: %w", id, err)
	}
	for {
		n, err := io.ReadFull(body, rec[recordHeaderLen:])
		if n > 0 {
			chunk := rec[recordHeaderLen : recordHeaderLen+n]
			k := chunkKey(id, se.Chunks)
			v := sealInPlace(rec[:recordHeaderLen+n], k, kindChunk)
			b.Set(k, v) // Set copies: rec is reused for the next chunk
			if se.Chunks == 0 && n <= handOffMax && err != nil {
				first = bytes.Clone(v) // the last chunk is the first: the body is small
			}
			se.BodyCRC = crc32.Update(se.BodyCRC, castagnoli, chunk)
			se.Size += int64(n)
			se.Chunks++
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("read body: %w", err))
		}
		if b.Size() >= batchFlush {
			if !partial {
				b.Set(partialKey(id), nil)
				partial = true
			}
			if err := b.Commit(); err != nil {
				b = s.store.NewBatch() // fail discards it
				return fail(err)
			}
			b = s.store.NewBatch()
		}
	}
	ek := envKey(id)
	ev, err := encodeEnvelope(ek, se)
	if err != nil {
		return fail(err)
	}
	b.Set(ek, ev)
	s.setState(b, id, st, domains)
	for _, d := range domains {
		b.Set(domainKey(d, id), nil)
	}
	if partial {
		b.Delete(partialKey(id))
	}
	if err := b.Commit(); err != nil {
		if partial {
			s.dropMessage(id)
		}
		return nil, nil, fmt.Errorf("queue: write %s: %w", id, err)
	}
	return se, first, nil // the caller tells the scheduler (Queue.noteEnqueued)
}

// setState adds to b the state record of id and its due index entry. The
// index value carries the message's recipient domains, so a scan of the
// index alone can count the queue by domain.
func (s *spool) setState(b Batch, id string, st *msgState, domains []string) {
	sk := stateKey(id)
	b.Set(sk, encodeState(sk, st))
	dk := stateDueKey(id, st)
	v := make([]byte, recordHeaderLen, 64)
	for i, d := range domains {
		if i > 0 {
			v = append(v, 0)
		}
		v = append(v, d...)
	}
	b.Set(dk, sealInPlace(v, dk, kindIndex))
}

// decodeIndex verifies a due index record and returns the domains it holds.
func decodeIndex(key, v []byte) ([]string, error) {
	p, err := openRecord(key, kindIndex, v)
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, nil
	}
	return strings.Split(string(p), "\x00"), nil
}

// putState replaces the state of id and moves its due index entry from
// oldDue, in one batch.
func (s *spool) putState(id string, oldDue []byte, st *msgState, domains []string) error {
	b := s.store.NewBatch()
	if oldDue != nil {
		b.Delete(oldDue)
	}
	s.setState(b, id, st, domains)
	if err := b.Commit(); err != nil {
		return err
	}
	s.onDue(st.lane(), st.Next)
	return nil
}

// remove deletes every record of a message. chunks is the number of body
// chunks from its envelope, or -1 when the envelope could not be read.
//
// Known chunks are deleted one by one: a range deletion per message would
// leave a range tombstone in pebble's memtable for every delivered message,
// and every new iterator and Get re-fragments all of a memtable's range
// tombstones whenever one was added, so a busy relay spent most of its CPU
// there (docs/BENCHMARKS.md, relay benchmark profile).
func (s *spool) remove(id string, chunks int, due []byte, domains []string) error {
	b := s.store.NewBatch()
	b.Delete(envKey(id))
	b.Delete(stateKey(id))
	if chunks >= 0 {
		for n := range chunks {
			b.Delete(chunkKey(id, n))
		}
	} else {
		lo, hi := bodyRange(id)
		b.DeleteRange(lo, hi)
	}
	if due != nil {
		b.Delete(due)
	}
	for _, d := range domains {
		b.Delete(domainKey(d, id))
	}
	return b.Commit()
}

// dropMessage deletes what a failed writeMessage left behind.
func (s *spool) dropMessage(id string) {
	b := s.store.NewBatch()
	lo, hi := bodyRange(id)
	b.DeleteRange(lo, hi)
	b.Delete(partialKey(id))
	b.Commit()
}

func (s *spool) readEnvelope(id string) (*storedEnvelope, error) {
	k := envKey(id)
	v, err := s.store.Get(k)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: no message %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	return decodeEnvelope(k, v)
}

func (s *spool) readState(id string, nrcpt int) (*msgState, error) {
	k := stateKey(id)
	v, err := s.store.Get(k)
	if err != nil {
		return nil, err
	}
	return decodeState(k, v, nrcpt)
}

// quarantine copies what is left of message id's records to files under
// quarantine/ for the operator, best effort, and returns the path prefix
// they were written under. The caller removes the records.
func (s *spool) quarantine(id string) string {
	base := s.path("quarantine", id)
	for _, rec := range []struct {
		suffix string
		key    []byte
	}{{".envelope", envKey(id)}, {".state", stateKey(id)}} {
		if v, err := s.store.Get(rec.key); err == nil {
			os.WriteFile(base+rec.suffix, v, 0o640)
		}
	}
	if f, err := os.OpenFile(base+".body", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640); err == nil {
		lo, hi := bodyRange(id)
		s.store.Scan(lo, hi, func(_, v []byte) (bool, error) {
			if len(v) > recordHeaderLen {
				f.Write(v[recordHeaderLen:])
			}
			return true, nil
		})
		f.Close()
	}
	return base
}

// probe checks that the spool can take a write.
func (s *spool) probe() error {
	f, err := os.CreateTemp(s.dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("queue: spool not writable: %w", err)
	}
	_, err = f.Write([]byte("ok"))
	f.Close()
	os.Remove(f.Name())
	if err != nil {
		return fmt.Errorf("queue: spool not writable: %w", err)
	}
	return nil
}

// bodyReader streams a stored body chunk by chunk, verifying each chunk's
// record checksum, the chunk count and sizes, and at the end the checksum
// of the whole body: a damaged body reads as an error wrapping ErrCorrupt,
// never as a complete message.
type bodyReader struct {
	store     Store
	id        string
	se        *storedEnvelope
	next      int     // next chunk to read
	cur       []byte  // unread part of the current chunk
	buf       *[]byte // the record cur is in, from chunkBufs, if the store can read into it
	first     []byte  // the first chunk's record, handed off by Enqueue, or nil
	sum       uint32
	err       error
	onCorrupt func(error)
}

// newBodyReader returns a reader of id's body. first, if not nil, is the
// sealed record of its first chunk as writeMessage stored it, which is
// read (and verified) instead of the store's copy.
func newBodyReader(store Store, id string, se *storedEnvelope, first []byte, onCorrupt func(error)) *bodyReader {
	return &bodyReader{store: store, id: id, se: se, first: first, onCorrupt: onCorrupt}
}

func (r *bodyReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.load()
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// load reads the next chunk into cur, or returns io.EOF at a verified end
// of body, or the error that ends the read.
func (r *bodyReader) load() error {
	if r.next == r.se.Chunks {
		if r.sum != r.se.BodyCRC {
			return r.corrupt(fmt.Errorf("%w: body of %s: checksum %08x, want %08x", ErrCorrupt, r.id, r.sum, r.se.BodyCRC))
		}
		return io.EOF
	}
	k := chunkKey(r.id, r.next)
	var v []byte
	var err error
	if r.next == 0 && r.first != nil {
		v = r.first
	} else if ag, ok := r.store.(appendGetter); ok {
		if r.buf == nil {
			r.buf = chunkBufs.Get().(*[]byte)
		}
		v, err = ag.getAppend((*r.buf)[:0], k)
	} else {
		v, err = r.store.Get(k)
	}
	if errors.Is(err, ErrNotFound) {
		return r.corrupt(fmt.Errorf("%w: body of %s: chunk %d of %d is missing", ErrCorrupt, r.id, r.next, r.se.Chunks))
	}
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return r.corrupt(err)
		}
		return err
	}
	chunk, err := openRecord(k, kindChunk, v)
	if err != nil {
		return r.corrupt(err)
	}
	want := chunkSize
	if r.next == r.se.Chunks-1 {
		want = int(r.se.Size - int64(r.se.Chunks-1)*chunkSize)
	}
	if len(chunk) != want {
		return r.corrupt(fmt.Errorf("%w: body of %s: chunk %d has %d bytes, want %d", ErrCorrupt, r.id, r.next, len(chunk), want))
	}
	r.sum = crc32.Update(r.sum, castagnoli, chunk)
	r.cur = chunk
	r.next++
	return nil
}

func (r *bodyReader) corrupt(err error) error {
	if r.onCorrupt != nil {
		r.onCorrupt(err)
	}
	return err
}

// Close returns the reader's buffer; a Read after Close fails.
func (r *bodyReader) Close() error {
	r.cur, r.err = nil, errBodyClosed
	if r.buf != nil {
		chunkBufs.Put(r.buf)
		r.buf = nil
	}
	return nil
}

var errBodyClosed = errors.New("queue: read of a closed body")
