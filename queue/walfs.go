package queue

import (
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The write-ahead log's fsync is the one every acknowledgement waits for,
// and on ext4 (and most file systems) its cost depends on where the log is
// written. Appending past the end of the file changes the file's size and
// allocates blocks, so every fdatasync must also commit the file system's
// journal; overwriting blocks that are already written does not. On this
// project's benchmark machine a 9 KB write and fdatasync took about 260 µs
// and 160 µs of CPU appended, against about 120 µs and 90 µs overwritten
// (docs/BENCHMARKS.md, fix 20).
//
// Pebble overwrites only when it reuses a recycled log file, and only up
// to that file's old size. A spool just opened has no logs to recycle and
// its first memtables are small, so after every start sluice paid the
// dearer fsync for about its first 100 MiB of mail (the memtables double
// from 256 KiB to their full size): for a quiet relay, days. walFS closes
// the gap. Every log file, new or recycled (from its old size on), is
// written full of zeros a few MiB ahead of the log writer, in the
// background, so that the log's own writes overwrite and its fsyncs commit
// only data.
//
// Zeros past the end of the log are what pebble already expects from a
// preallocated file: its log reader takes a zeroed chunk with no valid
// chunk after it as the end of the log (record.ErrZeroedChunk), as it
// takes a recycled file's older contents.
//
// Zeroing writes everything twice, which pays only while the log is synced
// often and little at a time. With 512 KiB per fdatasync an overwrite was
// no cheaper than an append here (about 1 ms either way), and with 100 KiB
// messages from 8 writers (about 400 KiB per sync) zeroing cost
// BenchmarkEnqueue a seventh of its rate; with 128 KiB per sync the
// overwrite took half as long. So the zeroer is started only while the
// log's last MiB averaged under walZeroMaxPerSync per sync.
const (
	walZeroChunk      = 1 << 20   // zeros written at a time, each followed by fdatasync
	walZeroMin        = 2 << 20   // zeros kept ahead of a log just begun ...
	walZeroMax        = 8 << 20   // ... and of one with at least this much written
	walZeroMaxPerSync = 256 << 10 // zero only while the log syncs less than this on average
)

// walZeroTarget is how many zeros to keep ahead of a log writer at off:
// as many as it has written, within [walZeroMin, walZeroMax], so that a
// busy log is zeroed well ahead and an idle spool's is not zeroed for
// nothing. The zeroer starts again when fewer than half are left.
func walZeroTarget(off int64) int64 { return min(walZeroMax, max(walZeroMin, off)) }

// walZeros is the source of every zero write; it is never written.
var walZeros [walZeroChunk]byte

// walFS is the file system the spool's pebble runs on: vfs.Default, with
// write-ahead log files zeroed ahead of their writer, both those it
// creates and those it recycles (which are zeroed from their old size on).
type walFS struct{ vfs.FS }

// walCategory is the category pebble creates its write-ahead log files
// with.
const walCategory vfs.DiskWriteCategory = "pebble-wal"

func (fs walFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil || category != walCategory {
		return f, err
	}
	return fs.zeroAhead(f, name, 0), nil
}

func (fs walFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, category)
	if err != nil || category != walCategory {
		return f, err
	}
	fi, err := f.Stat()
	if err != nil {
		return f, nil // the log is written as it would be without walFS
	}
	return fs.zeroAhead(f, newname, fi.Size()), nil
}

// zeroAhead wraps the log f, whose first size bytes are already written,
// in a zeroAheadFile. The zeros are written and synced through a file
// description of their own: on Linux a failed writeback is reported once
// to each open file description, so were the zeroer to fsync through the
// log's own, an error in the log's data could be reported to the zeroer
// and then never to pebble, and an acknowledgement would follow a failed
// fsync. With its own, pebble's next fsync reports the error whoever saw
// it first. If the second open fails the log is returned as it is.
func (fs walFS) zeroAhead(f vfs.File, name string, size int64) vfs.File {
	zf, err := fs.FS.OpenReadWrite(name, walCategory)
	if err != nil {
		return f
	}
	return newZeroAheadFile(f, zf, size)
}

// zeroAheadFile is a file written sequentially from offset 0 by one
// writer (pebble's log writer) that a background goroutine fills with
// zeros ahead of that writer. The two never write the same bytes: the
// zeroer writes only at and after zeroed, one chunk at a time, and a write
// that would reach into the chunk being zeroed waits for that chunk (one
// 1 MiB write to the page cache) before it goes ahead.
type zeroAheadFile struct {
	vfs.File
	zf vfs.File // the zeroer's own handle (see walFS.zeroAhead)

	mu      sync.Mutex
	idle    *sync.Cond // signalled when a chunk's zeroing ends
	off     int64      // where the writer's next Write goes
	zeroed  int64      // [0, zeroed) holds the writer's bytes, zeros or a recycled log's old records
	zeroing bool       // a chunk at zeroed is being written
	running bool       // the zeroer goroutine is running
	stopped bool       // Close was called, or zeroing failed: no more zeroing

	syncs     int64 // the log's own syncs
	winOff    int64 // off and syncs when the current window of at least
	winSyncs  int64 // walZeroChunk bytes began
	appending bool  // the last window synced walZeroMaxPerSync or more per sync
}

// newZeroAheadFile starts zeroing f through zf, another handle on the same
// file, past its first size bytes (a recycled log's old contents).
func newZeroAheadFile(f, zf vfs.File, size int64) *zeroAheadFile {
	z := &zeroAheadFile{File: f, zf: zf, zeroed: size}
	z.idle = sync.NewCond(&z.mu)
	z.mu.Lock()
	z.kickLocked()
	z.mu.Unlock()
	return z
}

// claimLocked waits until [off, end) can be written without meeting the
// zeroer, and makes sure the zeroer never writes there afterwards.
func (z *zeroAheadFile) claimLocked(end int64) {
	for z.zeroing && end > z.zeroed {
		z.idle.Wait()
	}
	if end > z.zeroed {
		z.zeroed = end // the writer went past the zeros: they resume after it
	}
}

// kickLocked closes the window of the log's writes once it holds a chunk,
// and starts the zeroer when the zeros ahead of the writer run low, unless
// the last window was synced in large amounts.
func (z *zeroAheadFile) kickLocked() {
	if bytes := z.off - z.winOff; bytes >= walZeroChunk {
		z.appending = bytes >= walZeroMaxPerSync*max(1, z.syncs-z.winSyncs)
		z.winOff, z.winSyncs = z.off, z.syncs
	}
	if z.running || z.stopped || z.appending || z.zeroed-z.off >= walZeroTarget(z.off)/2 {
		return
	}
	z.running = true
	go z.zeroAhead()
}

// SyncData counts the log's syncs (see kickLocked) and syncs it.
func (z *zeroAheadFile) SyncData() error {
	z.countSync()
	return z.File.SyncData()
}

// Sync is SyncData's twin, for a caller that syncs metadata too.
func (z *zeroAheadFile) Sync() error {
	z.countSync()
	return z.File.Sync()
}

func (z *zeroAheadFile) countSync() {
	z.mu.Lock()
	z.syncs++
	z.mu.Unlock()
}

func (z *zeroAheadFile) Write(p []byte) (int, error) {
	z.mu.Lock()
	z.claimLocked(z.off + int64(len(p)))
	z.mu.Unlock()
	n, err := z.File.Write(p)
	z.mu.Lock()
	z.off += int64(n)
	z.kickLocked()
	z.mu.Unlock()
	return n, err
}

// WriteAt is not how pebble writes a log; should it be used, the range is
// claimed from the zeroer all the same.
func (z *zeroAheadFile) WriteAt(p []byte, off int64) (int, error) {
	z.mu.Lock()
	z.claimLocked(off + int64(len(p)))
	z.mu.Unlock()
	return z.File.WriteAt(p, off)
}

// zeroAhead writes zeros, a chunk at a time, until there are walZeroTarget
// of them ahead of the writer or the log is synced in large amounts, and
// syncs each chunk so that its new size and blocks are committed here, in
// the background, rather than in the log writer's next fsync. It stops for
// good at the first error (the log then grows by appending, as it would
// without walFS) and when the file is closed.
func (z *zeroAheadFile) zeroAhead() {
	z.mu.Lock()
	defer z.mu.Unlock()
	for !z.stopped && !z.appending && z.zeroed-z.off < walZeroTarget(z.off) {
		at := z.zeroed
		z.zeroing = true
		z.mu.Unlock()
		_, err := z.zf.WriteAt(walZeros[:], at)
		z.mu.Lock()
		z.zeroing = false
		z.idle.Broadcast()
		if err == nil {
			// While zeroing is set the writer cannot claim past at, so
			// the chunk is all zeros.
			z.zeroed = at + walZeroChunk
			z.mu.Unlock()
			err = z.zf.SyncData()
			z.mu.Lock()
		}
		if err != nil {
			z.stopped = true
		}
	}
	z.running = false
	z.idle.Broadcast()
}

// Close waits for a chunk being zeroed, so that no write outlives the file
// descriptors, and closes both. Only the log's own close can fail in a way
// that matters: the zeroer's handle wrote nothing but zeros.
func (z *zeroAheadFile) Close() error {
	z.mu.Lock()
	z.stopped = true
	for z.running {
		z.idle.Wait()
	}
	z.mu.Unlock()
	z.zf.Close()
	return z.File.Close()
}
