package queue

import (
	"bufio"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sluicemta/sluice"
)

// spool is the on-disk layout described in the package doc.
type spool struct {
	dir     string
	lock    *os.File
	msgSync *groupSync // makes renames into msg/ durable
}

func openSpool(dir string) (*spool, error) {
	for _, sub := range []string{"", "msg", "state", "tmp", "quarantine"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("queue: spool %s is in use by another process: %w", dir, err)
	}
	s := &spool{dir: dir, lock: lock}
	if s.msgSync, err = newGroupSync(s.path("msg")); err != nil {
		s.close()
		return nil, err
	}
	// Files in tmp/ were never acknowledged: their writer died before the
	// rename that makes a message exist.
	if ents, err := os.ReadDir(s.path("tmp")); err == nil {
		for _, e := range ents {
			os.Remove(s.path("tmp", e.Name()))
		}
	}
	return s, nil
}

func (s *spool) close() error {
	var err error
	if s.msgSync != nil {
		err = s.msgSync.close()
	}
	return errors.Join(err, s.lock.Close()) // closing releases the flock
}

func (s *spool) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

// newID returns a queue id: 20 characters of base32hex, sortable by
// creation time (48 bits of milliseconds) and unique by 48 random bits.
func newID(now time.Time) string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:])
	return idEncoding.EncodeToString(b[:])
}

func validID(id string) bool {
	if len(id) != 20 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'V') {
			return false
		}
	}
	return true
}

// writeMsg writes a message file and makes it durable: body file fsynced,
// renamed into msg/, msg/ fsynced (shared with concurrent writers). It
// returns the layout of the file written.
func (s *spool) writeMsg(id string, env *sluice.Envelope, body io.Reader) (*msgLayout, error) {
	head, err := encodeMsgHeader(env)
	if err != nil {
		return nil, err
	}
	tmp := s.path("tmp", id)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	n, sum, err := writeMsgFile(f, head, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path("msg", id))
	}
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("queue: write %s: %w", id, err)
	}
	if err := s.msgSync.sync(); err != nil {
		// The rename may not be durable; the message must not be acked.
		os.Remove(s.path("msg", id))
		return nil, fmt.Errorf("queue: write %s: %w", id, err)
	}
	return &msgLayout{env: env, bodyOff: int64(len(head)), bodyLen: n, bodyCRC: sum}, nil
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

func writeMsgFile(f *os.File, head []byte, body io.Reader) (int64, uint32, error) {
	w := bufio.NewWriterSize(f, 64<<10)
	if _, err := w.Write(head); err != nil {
		return 0, 0, err
	}
	sum := newCRC()
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	n, err := io.CopyBuffer(io.MultiWriter(w, sum), body, *buf)
	if err != nil {
		return 0, 0, fmt.Errorf("read body: %w", err)
	}
	if _, err := w.Write(encodeMsgTrailer(n, sum.Sum32())); err != nil {
		return 0, 0, err
	}
	if err := w.Flush(); err != nil {
		return 0, 0, err
	}
	return n, sum.Sum32(), f.Sync()
}

// readMsg opens and verifies the envelope of message id.
func (s *spool) readMsg(id string) (*msgLayout, error) {
	f, err := os.Open(s.path("msg", id))
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	l, err := decodeMsg(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("queue: message %s: %w", id, err)
	}
	return l, nil
}

// openBody returns a reader over the body of message id that verifies the
// checksum as it reads.
func (s *spool) openBody(id string, l *msgLayout, onCorrupt func(error)) (io.ReadCloser, error) {
	f, err := os.Open(s.path("msg", id))
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	r := newBodyReader(bufio.NewReaderSize(io.NewSectionReader(f, l.bodyOff, l.bodyLen), 32<<10), l, onCorrupt)
	return struct {
		io.Reader
		io.Closer
	}{r, f}, nil
}

// readState returns the stored state of message id, nil if there is none.
func (s *spool) readState(id string, nrcpt int) (*msgState, error) {
	b, err := os.ReadFile(s.path("state", id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	st, err := decodeState(b, nrcpt)
	if err != nil {
		return nil, fmt.Errorf("queue: state %s: %w", id, err)
	}
	return st, nil
}

// writeState replaces the state of message id. The file is fsynced before
// the rename so a crash leaves the old state or the new one, never a torn
// one; the directory is not: losing the newest state costs a duplicate
// delivery, never a message.
func (s *spool) writeState(id string, st *msgState) error {
	b, err := encodeState(st)
	if err != nil {
		return err
	}
	tmp := s.path("tmp", id+".state")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path("state", id))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("queue: write state %s: %w", id, err)
	}
	return nil
}

// remove deletes a finished message: the message file first, so a crash in
// between leaves an orphan state file (cleaned at start-up), not a message
// that would be delivered again from scratch.
func (s *spool) remove(id string) error {
	err := os.Remove(s.path("msg", id))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("queue: remove %s: %w", id, err)
	}
	if err := os.Remove(s.path("state", id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("queue: remove state %s: %w", id, err)
	}
	return nil
}

// quarantine moves the files of message id aside, under quarantine/, for
// the operator to inspect. which is "msg" or "state".
func (s *spool) quarantine(id, which string) error {
	dst := s.path("quarantine", id+"."+which)
	if err := os.Rename(s.path(which, id), dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("queue: quarantine %s: %w", id, err)
	}
	return nil
}

// ids lists the message ids in msg/ and the orphan ids in state/.
func (s *spool) ids() (msgs []string, orphans []string, err error) {
	ents, err := os.ReadDir(s.path("msg"))
	if err != nil {
		return nil, nil, fmt.Errorf("queue: %w", err)
	}
	have := make(map[string]bool, len(ents))
	for _, e := range ents {
		if validID(e.Name()) {
			msgs = append(msgs, e.Name())
			have[e.Name()] = true
		}
	}
	sts, err := os.ReadDir(s.path("state"))
	if err != nil {
		return nil, nil, fmt.Errorf("queue: %w", err)
	}
	for _, e := range sts {
		if !have[e.Name()] {
			orphans = append(orphans, e.Name())
		}
	}
	return msgs, orphans, nil
}

// probe checks that the spool is writable.
func (s *spool) probe() error {
	f, err := os.CreateTemp(s.path("tmp"), "probe-*")
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

// groupSync lets concurrent writers share one fsync of a directory: a
// caller returns once an fsync that started after its call has finished,
// and at most one fsync runs at a time, so N concurrent renames cost about
// two fsyncs, not N.
type groupSync struct {
	dir *os.File

	mu        sync.Mutex // guards the fields below
	cond      *sync.Cond
	started   uint64 // fsyncs begun
	completed uint64 // the number of the last fsync finished
	err       error  // its result
	running   bool
}

func newGroupSync(dir string) (*groupSync, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	g := &groupSync{dir: f}
	g.cond = sync.NewCond(&g.mu)
	return g, nil
}

func (g *groupSync) sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	ticket := g.started // an fsync numbered above this began after our call
	for g.running {
		g.cond.Wait()
		if g.completed > ticket {
			return g.err
		}
	}
	g.started++
	n := g.started
	g.running = true
	g.mu.Unlock()
	err := g.dir.Sync()
	g.mu.Lock()
	g.running = false
	g.completed, g.err = n, err
	g.cond.Broadcast()
	return err
}

func (g *groupSync) close() error { return g.dir.Close() }
