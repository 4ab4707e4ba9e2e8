package queue

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// waitIdle returns once the zeroer has stopped. Unless zeroing failed,
// there are then at least half of walZeroTarget zeros ahead of the writer:
// the zeroer stops at walZeroTarget, and each write starts it again when
// fewer than half are left.
func (z *zeroAheadFile) waitIdle() {
	z.mu.Lock()
	defer z.mu.Unlock()
	for z.running {
		z.idle.Wait()
	}
}

// TestZeroAheadFileKeepsWritesAndZeros writes 24 MiB in writes of random
// sizes while the zeroer runs ahead, then checks that the file holds
// exactly what was written followed by zeros, and that the zeros reach at
// least half of walZeroMax past the end.
func TestZeroAheadFileKeepsWritesAndZeros(t *testing.T) {
	name := filepath.Join(t.TempDir(), "000001.log")
	f, err := walFS{vfs.Default}.Create(name, walCategory)
	if err != nil {
		t.Fatal(err)
	}
	z, ok := f.(*zeroAheadFile)
	if !ok {
		t.Fatalf("walFS.Create made a %T for a WAL file, want *zeroAheadFile", f)
	}
	// The data is made first, so that the writes outrun the zeroer (each
	// of its chunks waits for an fdatasync) and overtake it.
	pattern := make([]byte, 251) // prime, so it never lines up with a chunk
	for i := range pattern {
		pattern[i] = byte(1 + i) // never zero, so a zeroed byte shows
	}
	data := bytes.Repeat(pattern, 24<<20/len(pattern))
	rng := rand.New(rand.NewPCG(1, 2))
	var written bytes.Buffer
	for rest := data; len(rest) > 0; {
		p := rest[:min(len(rest), 1+rng.IntN(200<<10))] // under walZeroMaxPerSync per sync
		rest = rest[len(p):]
		written.Write(p)
		if n, err := z.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write: %d, %v", n, err)
		}
		if err := z.SyncData(); err != nil {
			t.Fatal(err)
		}
	}
	got := closeAndRead(t, z, name)
	if len(got) < written.Len() || !bytes.Equal(got[:written.Len()], written.Bytes()) {
		for i := range min(len(got), written.Len()) {
			if got[i] != written.Bytes()[i] {
				t.Fatalf("the file differs from what was written at byte %d of %d: %#x, want %#x", i, written.Len(), got[i], written.Bytes()[i])
			}
		}
		t.Fatalf("the file has %d bytes, want the %d written and zeros", len(got), written.Len())
	}
	tail := got[written.Len():]
	if i := bytes.IndexFunc(tail, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("byte %d past the end of the writes is not zero", i)
	}
	if len(tail) < walZeroMax/2 {
		t.Errorf("%d bytes of zeros past the end of the writes, want at least %d", len(tail), walZeroMax/2)
	}
}

// TestZeroAheadFileZeroesOnlyWhileSyncsAreSmall writes a log in 512 KiB
// syncs, for which zeroing does not pay, and then in 16 KiB syncs, for
// which it does: the zeros must stop for the first and resume for the
// second.
func TestZeroAheadFileZeroesOnlyWhileSyncsAreSmall(t *testing.T) {
	name := filepath.Join(t.TempDir(), "000001.log")
	f, err := walFS{vfs.Default}.Create(name, walCategory)
	if err != nil {
		t.Fatal(err)
	}
	z := f.(*zeroAheadFile)
	defer z.Close()
	write := func(total, each int) {
		t.Helper()
		p := bytes.Repeat([]byte{0x33}, each)
		for range total / each {
			if _, err := z.Write(p); err != nil {
				t.Fatal(err)
			}
			if err := z.SyncData(); err != nil {
				t.Fatal(err)
			}
		}
	}
	ahead := func() int64 {
		z.waitIdle()
		z.mu.Lock()
		defer z.mu.Unlock()
		return z.zeroed - z.off
	}
	write(8<<20, 512<<10)
	if n := ahead(); n != 0 {
		t.Errorf("%d bytes zeroed ahead of a log synced 512 KiB at a time, want none", n)
	}
	write(2<<20, 16<<10)
	if n, want := ahead(), walZeroTarget(10<<20)/2; n < want {
		t.Errorf("%d bytes zeroed ahead once the log is synced 16 KiB at a time, want at least %d", n, want)
	}
}

// TestZeroAheadFileRecycledStartsPastTheOldContents reuses a log of 300 KB
// of old records and writes 100 KB: the zeros must start past the old
// contents, which pebble's reader tells from its own by their log number,
// and never touch the part the writer has yet to overwrite.
func TestZeroAheadFileRecycledStartsPastTheOldContents(t *testing.T) {
	dir := t.TempDir()
	old, reused := filepath.Join(dir, "000001.log"), filepath.Join(dir, "000009.log")
	oldData := bytes.Repeat([]byte{0x11}, 300<<10)
	if err := os.WriteFile(old, oldData, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := walFS{vfs.Default}.ReuseForWrite(old, reused, walCategory)
	if err != nil {
		t.Fatal(err)
	}
	z, ok := f.(*zeroAheadFile)
	if !ok {
		t.Fatalf("walFS.ReuseForWrite made a %T for a WAL file, want *zeroAheadFile", f)
	}
	newData := bytes.Repeat([]byte{0x22}, 100<<10)
	if _, err := z.Write(newData); err != nil {
		t.Fatal(err)
	}
	got := closeAndRead(t, z, reused)
	want := append(append([]byte(nil), newData...), oldData[len(newData):]...)
	if len(got) < len(want) || !bytes.Equal(got[:len(want)], want) {
		t.Fatal("the new records and the rest of the old ones are not what the file starts with")
	}
	tail := got[len(want):]
	// Half of walZeroTarget ahead of the writer at the least, who has the
	// rest of the old contents still ahead.
	want0 := walZeroTarget(int64(len(newData)))/2 - int64(len(oldData)-len(newData))
	if int64(len(tail)) < want0 || bytes.IndexFunc(tail, func(r rune) bool { return r != 0 }) >= 0 {
		t.Errorf("%d bytes after the old contents, want at least %d, all zero", len(tail), want0)
	}
}

// TestWALFSCreatesOtherFilesAsIs checks that only write-ahead logs are
// zeroed ahead: an sstable or a manifest is created as vfs.Default would.
func TestWALFSCreatesOtherFilesAsIs(t *testing.T) {
	f, err := walFS{vfs.Default}.Create(filepath.Join(t.TempDir(), "000002.sst"), "pebble-sstable")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.(*zeroAheadFile); ok {
		t.Fatal("an sstable was created zeroed ahead")
	}
}

// capturingFS records the logs walFS creates and recycles, so that a test
// can wait for their zeroing.
type capturingFS struct {
	walFS
	created chan vfs.File
}

func (fs capturingFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.walFS.Create(name, category)
	if err == nil && category == walCategory {
		fs.created <- f
	}
	return f, err
}

func (fs capturingFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.walFS.ReuseForWrite(oldname, newname, category)
	if err == nil && category == walCategory {
		fs.created <- f
	}
	return f, err
}

// TestPebbleReplaysAZeroedTail is the crash that walFS must survive: pebble
// is stopped without closing, its log ending in zeros rather than in the
// trailer a close writes, and a copy of its directory is opened, as after a
// power cut with every acknowledged batch synced. Every synced key must be
// there, and pebble must take the zeros for the end of the log, not for
// corruption. The first crash comes while there is one log, created and
// zeroed ahead by walFS; the second after enough writes for pebble to have
// rotated its log several times and recycled some of them.
func TestPebbleReplaysAZeroedTail(t *testing.T) {
	dir := t.TempDir()
	fs := capturingFS{walFS{vfs.Default}, make(chan vfs.File, 64)}
	db, err := pebble.Open(dir, &pebble.Options{FS: fs, MemTableSize: 64 << 20, Logger: quietPebble})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	val := bytes.Repeat([]byte("v"), 4<<10)
	written := 0
	write := func(n int) {
		for range n {
			if err := db.Set(fmt.Appendf(nil, "k%05d", written), val, pebble.Sync); err != nil {
				t.Fatal(err)
			}
			written++
		}
	}
	var logs []*zeroAheadFile
	settle := func() {
		for len(fs.created) > 0 {
			f := <-fs.created
			z, ok := f.(*zeroAheadFile)
			if !ok {
				t.Fatalf("pebble's WAL is a %T, want *zeroAheadFile", f)
			}
			logs = append(logs, z)
		}
		for _, z := range logs {
			z.waitIdle()
		}
	}

	// 40 × 4 KiB fits pebble's first memtable (256 KiB): one log.
	write(40)
	settle()
	if len(logs) != 1 {
		t.Fatalf("%d logs created after 40 writes, want 1", len(logs))
	}
	z := logs[0]
	z.mu.Lock()
	end, zeroed := z.off, z.zeroed
	z.mu.Unlock()
	if zeroed-end < walZeroTarget(end)/2 {
		t.Fatalf("the log has %d bytes of zeros past its end, want at least %d", zeroed-end, walZeroTarget(end)/2)
	}
	reopenCopy(t, dir, written, val)

	// 2,000 × 4 KiB: the memtable grows from 256 KiB, rotating the log at
	// each step, and flushed memtables free logs for recycling.
	write(2000)
	settle()
	if len(logs) < 2 {
		t.Fatalf("%d logs created after %d writes, want several", len(logs), written)
	}
	reopenCopy(t, dir, written, val)
}

// reopenCopy copies pebble's files in dir, pebble still running, to a new
// directory, opens the copy and checks that it holds the n keys written.
func reopenCopy(t *testing.T, dir string, n int, val []byte) {
	t.Helper()
	crashed := filepath.Join(t.TempDir(), "db")
	if err := os.CopyFS(crashed, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open(crashed, &pebble.Options{Logger: quietPebble})
	if err != nil {
		t.Fatalf("open after the crash: %v", err)
	}
	defer db.Close()
	for i := range n {
		v, closer, err := db.Get(fmt.Appendf(nil, "k%05d", i))
		if err != nil {
			t.Fatalf("key %d of %d, synced before the crash: %v", i, n, err)
		}
		if !bytes.Equal(v, val) {
			t.Fatalf("key %d: value differs after the crash", i)
		}
		closer.Close()
	}
}

// closeAndRead waits for z's zeroer, closes z and returns the contents of
// its file, name.
func closeAndRead(t *testing.T, z *zeroAheadFile, name string) []byte {
	t.Helper()
	z.waitIdle()
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// quietPebble keeps pebble's account of its WAL replay out of test output.
var quietPebble = pebbleLogger{slog.New(slog.DiscardHandler)}

// memFile is a vfs.File in memory whose zero writes (WriteAt) can be held
// until released, so that a test can write while a chunk is being zeroed.
// zeroAheadFile uses no methods but Write, WriteAt, SyncData (memHandle)
// and Close.
type memFile struct {
	vfs.File
	hold    chan struct{} // WriteAt waits until it is closed
	mu      sync.Mutex
	buf     []byte
	off     int
	zeroing int // WriteAt calls begun
}

func (f *memFile) writeAt(p []byte, off int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := off + len(p); n > len(f.buf) {
		f.buf = append(f.buf, make([]byte, n-len(f.buf))...)
	}
	copy(f.buf[off:], p)
}

func (f *memFile) Write(p []byte) (int, error) {
	f.writeAt(p, f.off)
	f.off += len(p)
	return len(p), nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	f.zeroing++
	f.mu.Unlock()
	<-f.hold
	f.writeAt(p, int(off))
	return len(p), nil
}

func (f *memFile) Close() error { return nil }

// memHandle is one handle on a memFile, counting the syncs made through it.
type memHandle struct {
	*memFile
	syncs int
}

func (h *memHandle) SyncData() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.syncs++
	return nil
}

// TestZeroAheadFileWriteWaitsForTheChunkBeingZeroed holds the zeroer in the
// middle of its first chunk and writes into that chunk: the write must wait
// for the zeros, or they would land on top of it.
func TestZeroAheadFileWriteWaitsForTheChunkBeingZeroed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := &memFile{hold: make(chan struct{})}
		writer, zeroer := &memHandle{memFile: mem}, &memHandle{memFile: mem}
		z := newZeroAheadFile(writer, zeroer, 0)
		synctest.Wait() // the zeroer is held in its first WriteAt, at offset 0
		if mem.zeroing != 1 {
			t.Fatalf("%d zero writes begun, want the first chunk's", mem.zeroing)
		}
		data := bytes.Repeat([]byte{0xa5}, 100)
		done := make(chan struct{})
		go func() {
			z.Write(data)
			close(done)
		}()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("a write into the chunk being zeroed went ahead of the zeros")
		default:
		}
		close(mem.hold)
		<-done
		z.waitIdle()
		z.Close()
		if !bytes.Equal(mem.buf[:len(data)], data) {
			t.Fatal("the write was zeroed over")
		}
		if len(mem.buf) < walZeroMin {
			t.Errorf("%d bytes of file, want at least the %d zeroed ahead", len(mem.buf), walZeroMin)
		}
		// A writeback error is reported once per file description: the
		// zeroer must never sync through the log's own (walFS.zeroAhead).
		if writer.syncs != 0 || zeroer.syncs == 0 {
			t.Errorf("the zeroer synced %d times through the log's handle and %d through its own, want 0 and some",
				writer.syncs, zeroer.syncs)
		}
	})
}
