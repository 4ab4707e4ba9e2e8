// Command storebench measures candidate spool stores for sluice (issue 3):
// how many messages per second each can make durable, with how much
// acknowledgement latency, for W concurrent writers and S-byte messages.
//
// Every candidate returns from a write only after the message is on stable
// storage (fsync or fdatasync completed). Candidates:
//
//	file-group    a file per message: write tmp/<id>, fsync, rename into msg/,
//	              fsync msg/ with the directory fsync shared between writers
//	file-nogroup  as file-group, but one directory fsync per message
//	log-group     one append-only log, length+CRC32C framed records appended
//	              under a mutex, then a shared fsync that started after the append
//	pebble-sync   pebble v2, one Batch per message committed with pebble.Sync
//	              (pebble's commit pipeline shares WAL syncs)
//	pebble-nosync pebble v2, Batch committed with pebble.NoSync, then a shared
//	              db.LogData(nil, pebble.Sync) that started after the commit
//	pebble-del    pebble-sync in a steady state: after its synced commit each
//	              call also deletes message id-1000 in a NoSync batch, so the
//	              spool holds about 1000 messages instead of growing
//
// "Shared" syncs use one pattern throughout: at most one sync runs at a time,
// and a caller returns once a sync that STARTED after its write has completed.
//
// Each cell (candidate, W, S) runs R times in a fresh directory, with a
// warm-up followed by a fixed measured duration; the directory is removed
// afterwards. The median of each figure over the R runs is printed as a
// markdown table.
//
//	go run ./bench/storebench -dur 3s -r 3
//
// Run it on the disk the spool will live on: not tmpfs.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// store is one candidate under test.
type store interface {
	// Put makes message id, with body, durable before it returns.
	Put(id uint64, body []byte) error
	// Syncs reports how many durability syncs (fsync/fdatasync) of the
	// commit path have completed so far; 0 if not counted.
	Syncs() uint64
	Close() error
}

type candidate struct {
	name string
	open func(dir string) (store, error)
}

var candidates = []candidate{
	{"file-group", func(d string) (store, error) { return openFileStore(d, true) }},
	{"file-nogroup", func(d string) (store, error) { return openFileStore(d, false) }},
	{"log-group", openLogStore},
	{"pebble-sync", func(d string) (store, error) { return openPebble(d, false, 0) }},
	{"pebble-nosync", func(d string) (store, error) { return openPebble(d, true, 0) }},
	{"pebble-del", func(d string) (store, error) { return openPebble(d, false, 1000) }},
}

// groupSync runs fn with at most one call in flight; Sync returns once a
// call of fn that started after Sync was called has completed.
type groupSync struct {
	fn      func() error
	mu      sync.Mutex
	cond    sync.Cond
	started uint64 // number of fn calls started
	done    uint64 // number of fn calls completed
	running bool
	err     error
	count   atomic.Uint64
}

func newGroupSync(fn func() error) *groupSync {
	g := &groupSync{fn: fn}
	g.cond.L = &g.mu
	return g
}

func (g *groupSync) Sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	// The next call to start is number started+1; it starts after now.
	target := g.started + 1
	for g.done < target {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		n := g.started
		g.mu.Unlock()
		err := g.fn()
		g.count.Add(1)
		g.mu.Lock()
		g.running = false
		g.done = n
		if err != nil && g.err == nil {
			g.err = err
		}
		g.cond.Broadcast()
	}
	return g.err
}

// ---- a. file per message ----

type fileStore struct {
	tmp, msg string
	dir      *os.File // msg/, opened for fsync
	group    *groupSync
	syncs    atomic.Uint64
}

func openFileStore(dir string, grouped bool) (store, error) {
	s := &fileStore{tmp: filepath.Join(dir, "tmp"), msg: filepath.Join(dir, "msg")}
	for _, d := range []string{s.tmp, s.msg} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	d, err := os.Open(s.msg)
	if err != nil {
		return nil, err
	}
	s.dir = d
	if grouped {
		s.group = newGroupSync(d.Sync)
	}
	return s, nil
}

func (s *fileStore) Put(id uint64, body []byte) error {
	name := strconv.FormatUint(id, 16)
	tp := filepath.Join(s.tmp, name)
	f, err := os.OpenFile(tp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(body); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	s.syncs.Add(1)
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tp, filepath.Join(s.msg, name)); err != nil {
		return err
	}
	if s.group != nil {
		return s.group.Sync()
	}
	s.syncs.Add(1)
	return s.dir.Sync()
}

// Syncs counts file fsyncs plus directory fsyncs.
func (s *fileStore) Syncs() uint64 {
	n := s.syncs.Load()
	if s.group != nil {
		n += s.group.count.Load()
	}
	return n
}

func (s *fileStore) Close() error { return s.dir.Close() }

// ---- b. append log with group commit ----

type logStore struct {
	mu    sync.Mutex
	f     *os.File
	buf   []byte
	group *groupSync
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func openLogStore(dir string) (store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "spool.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// Make the new file's directory entry durable once, up front.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return &logStore{f: f, group: newGroupSync(f.Sync)}, nil
}

// Put appends a record: u32 length, u32 CRC32C(id||body), u64 id, body.
func (s *logStore) Put(id uint64, body []byte) error {
	s.mu.Lock()
	n := 16 + len(body)
	if cap(s.buf) < n {
		s.buf = make([]byte, n)
	}
	b := s.buf[:n]
	binary.LittleEndian.PutUint32(b[0:], uint32(8+len(body)))
	binary.LittleEndian.PutUint64(b[8:], id)
	copy(b[16:], body)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
	_, err := s.f.Write(b)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.group.Sync()
}

func (s *logStore) Syncs() uint64 { return s.group.count.Load() }
func (s *logStore) Close() error  { return s.f.Close() }

// ---- c, d. pebble v2 ----

const (
	envelopeSize = 300
	chunkSize    = 64 << 10
)

type pebbleStore struct {
	db       *pebble.DB
	fs       *countingFS
	explicit *groupSync // non-nil for pebble-nosync
	envelope []byte
	lag      uint64 // if > 0, Put also deletes message id-lag
}

func pebbleOptions(fs vfs.FS) *pebble.Options {
	return &pebble.Options{
		FS:                    fs,
		MemTableSize:          64 << 20,
		L0CompactionThreshold: 8,
		Logger:                quietLogger{},
	}
}

func openPebble(dir string, explicit bool, lag uint64) (store, error) {
	fs := &countingFS{FS: vfs.Default}
	db, err := pebble.Open(dir, pebbleOptions(fs))
	if err != nil {
		return nil, err
	}
	s := &pebbleStore{db: db, fs: fs, envelope: make([]byte, envelopeSize), lag: lag}
	for i := range s.envelope {
		s.envelope[i] = byte('a' + i%26)
	}
	if explicit {
		s.explicit = newGroupSync(func() error { return db.LogData(nil, pebble.Sync) })
	}
	return s, nil
}

// Put writes m/<id>/e (envelope) and m/<id>/b/<n> (64 KiB body chunks) in one batch.
func (s *pebbleStore) Put(id uint64, body []byte) error {
	b := s.db.NewBatch()
	defer b.Close()
	key := make([]byte, 0, 32)
	key = append(key, "m/"...)
	key = binary.BigEndian.AppendUint64(key, id)
	pfx := len(key)
	if err := b.Set(append(key, "/e"...), s.envelope, nil); err != nil {
		return err
	}
	for n, off := 0, 0; off < len(body); n, off = n+1, off+chunkSize {
		end := min(off+chunkSize, len(body))
		k := binary.BigEndian.AppendUint32(append(key[:pfx], "/b/"...), uint32(n))
		if err := b.Set(k, body[off:end], nil); err != nil {
			return err
		}
	}
	if s.explicit != nil {
		if err := b.Commit(pebble.NoSync); err != nil {
			return err
		}
		return s.explicit.Sync()
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	if s.lag == 0 || id <= s.lag {
		return nil
	}
	// Steady state: delete an older message (envelope and all body chunks).
	d := s.db.NewBatch()
	defer d.Close()
	key = binary.BigEndian.AppendUint64(key[:2], id-s.lag)
	if err := d.Delete(append(key, "/e"...), nil); err != nil {
		return err
	}
	for n, off := 0, 0; off < len(body); n, off = n+1, off+chunkSize {
		if err := d.Delete(binary.BigEndian.AppendUint32(append(key[:pfx], "/b/"...), uint32(n)), nil); err != nil {
			return err
		}
	}
	return d.Commit(pebble.NoSync)
}

// Syncs counts syncs of WAL files (what a synced commit waits for).
func (s *pebbleStore) Syncs() uint64 { return s.fs.walSyncs.Load() }
func (s *pebbleStore) Close() error  { return s.db.Close() }

type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", args...)
	os.Exit(2)
}

// countingFS wraps a vfs.FS and counts Sync/SyncData calls on WAL files.
type countingFS struct {
	vfs.FS
	walSyncs atomic.Uint64
}

func (fs *countingFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return &countingFile{File: f, n: &fs.walSyncs}, nil
}

func (fs *countingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs *countingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, o ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, o...)
	return fs.wrap(name, f, err)
}

func (fs *countingFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

func (fs *countingFS) Unwrap() vfs.FS { return fs.FS }

type countingFile struct {
	vfs.File
	n *atomic.Uint64
}

func (f *countingFile) Sync() error {
	err := f.File.Sync()
	f.n.Add(1)
	return err
}

func (f *countingFile) SyncData() error {
	err := f.File.SyncData()
	f.n.Add(1)
	return err
}

func (f *countingFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	if full {
		f.n.Add(1)
	}
	return full, err
}

// ---- harness ----

type result struct {
	msgs     float64 // messages/s
	mibs     float64 // MiB/s of message bodies
	p50, p99 time.Duration
	perSync  float64 // messages per sync; 0 if not counted
	n        int     // messages acknowledged in the measured window
}

func runOnce(c candidate, dir string, writers, size int, warmup, dur time.Duration, maxMsgs int64) (result, error) {
	if err := os.RemoveAll(dir); err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	s, err := c.open(dir)
	if err != nil {
		return result{}, err
	}

	var (
		nextID   atomic.Uint64
		acked    atomic.Int64
		stop     atomic.Bool
		firstErr atomic.Value
		wg       sync.WaitGroup
		lat      = make([][]time.Duration, writers)
	)
	start := time.Now()
	t0 := start.Add(warmup)
	t1 := t0.Add(dur)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := make([]byte, size)
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range body {
				body[i] = byte(r.Uint32())
			}
			var mine []time.Duration
			for !stop.Load() {
				id := nextID.Add(1)
				binary.LittleEndian.PutUint64(body, id)
				a := time.Now()
				if err := s.Put(id, body); err != nil {
					firstErr.CompareAndSwap(nil, err)
					stop.Store(true)
					break
				}
				b := time.Now()
				if b.After(t0) && !b.After(t1) {
					mine = append(mine, b.Sub(a))
					if acked.Add(1) >= maxMsgs {
						stop.Store(true)
					}
				}
			}
			lat[w] = mine
		}()
	}
	// Sample the sync counter at the window edges.
	time.Sleep(time.Until(t0))
	syncs0 := s.Syncs()
	for !stop.Load() && time.Now().Before(t1) {
		time.Sleep(min(10*time.Millisecond, time.Until(t1)))
	}
	end := time.Now()
	if end.After(t1) {
		end = t1
	}
	syncs1 := s.Syncs()
	stop.Store(true)
	wg.Wait()
	if err := s.Close(); err != nil {
		return result{}, err
	}
	if e := firstErr.Load(); e != nil {
		return result{}, e.(error)
	}

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	secs := end.Sub(t0).Seconds()
	res := result{n: len(all)}
	if len(all) > 0 && secs > 0 {
		res.msgs = float64(len(all)) / secs
		res.mibs = res.msgs * float64(size) / (1 << 20)
		res.p50 = all[len(all)*50/100]
		res.p99 = all[min(len(all)-1, len(all)*99/100)]
	}
	if d := syncs1 - syncs0; d > 0 {
		res.perSync = float64(len(all)) / float64(d)
	}
	return res, nil
}

func median[T int | float64 | time.Duration](xs []T) T {
	ys := slices.Clone(xs)
	slices.Sort(ys)
	return ys[len(ys)/2]
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		mult := 1
		switch {
		case strings.HasSuffix(f, "KiB"), strings.HasSuffix(f, "k"):
			mult = 1 << 10
			f = strings.TrimSuffix(strings.TrimSuffix(f, "KiB"), "k")
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

func fmtDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms >= 100:
		return fmt.Sprintf("%.0f", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1f", ms)
	default:
		return fmt.Sprintf("%.2f", ms)
	}
}

func main() {
	var (
		dir     = flag.String("dir", ".benchdata", "scratch directory on the disk under test (removed after each run)")
		dur     = flag.Duration("dur", 3*time.Second, "measured duration of each run")
		warmup  = flag.Duration("warmup", 500*time.Millisecond, "warm-up before each measured run")
		reps    = flag.Int("r", 3, "runs per cell; the median is reported")
		wFlag   = flag.String("w", "1,8,32,128", "concurrent writers, comma separated")
		sFlag   = flag.String("s", "4KiB,100KiB", "message sizes, comma separated (suffix KiB or k)")
		cFlag   = flag.String("c", "", "candidates, comma separated (default all)")
		maxMsgs = flag.Int64("max", 2_000_000, "stop a run after this many acknowledged messages")
		verbose = flag.Bool("v", false, "print every run to stderr")
	)
	flag.Parse()
	if *dur <= 0 || *dur > 10*time.Minute || *warmup < 0 || *warmup > time.Minute || *reps < 1 || *reps > 50 {
		fmt.Fprintln(os.Stderr, "storebench: -dur must be in (0,10m], -warmup in [0,1m], -r in [1,50]")
		os.Exit(2)
	}
	ws, err := parseInts(*wFlag)
	if err == nil && slices.Max(ws) > 4096 {
		err = fmt.Errorf("at most 4096 writers")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "storebench: -w:", err)
		os.Exit(2)
	}
	ss, err := parseInts(*sFlag)
	if err == nil && slices.Max(ss) > 64<<20 {
		err = fmt.Errorf("at most 64 MiB")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "storebench: -s:", err)
		os.Exit(2)
	}
	cs := candidates
	if *cFlag != "" {
		cs = nil
		for name := range strings.SplitSeq(*cFlag, ",") {
			i := slices.IndexFunc(candidates, func(c candidate) bool { return c.name == name })
			if i < 0 {
				fmt.Fprintf(os.Stderr, "storebench: unknown candidate %q\n", name)
				os.Exit(2)
			}
			cs = append(cs, candidates[i])
		}
	}
	root, err := filepath.Abs(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "storebench:", err)
		os.Exit(1)
	}
	scratch := filepath.Join(root, fmt.Sprintf("run-%d", os.Getpid()))
	defer os.RemoveAll(scratch)

	fmt.Printf("storebench: GOMAXPROCS=%d, dir=%s, dur=%s, warmup=%s, r=%d (median of r runs per cell)\n\n",
		runtime.GOMAXPROCS(0), root, *dur, *warmup, *reps)

	// Candidates are interleaved (size, writers, run, candidate) so that a
	// burst of noise from other tenants of the machine lands on all of them
	// rather than on one candidate's cells.
	type cell struct {
		c    string
		w, s int
	}
	runs := make(map[cell][]result)
	for _, size := range ss {
		for _, w := range ws {
			for r := range *reps {
				for _, c := range cs {
					res, err := runOnce(c, scratch, w, size, *warmup, *dur, *maxMsgs)
					if err != nil {
						fmt.Fprintf(os.Stderr, "storebench: %s W=%d S=%d: %v\n", c.name, w, size, err)
						os.Exit(1)
					}
					if *verbose {
						fmt.Fprintf(os.Stderr, "%s S=%d W=%d run %d: %d msgs, %.0f msg/s, p50 %s p99 %s, %.2f msg/sync\n",
							c.name, size, w, r+1, res.n, res.msgs, res.p50, res.p99, res.perSync)
					}
					k := cell{c.name, w, size}
					runs[k] = append(runs[k], res)
				}
			}
		}
	}

	fmt.Println("| candidate | size | writers | msg/s | MiB/s | p50 ms | p99 ms | msg/sync |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, c := range cs {
		for _, size := range ss {
			for _, w := range ws {
				var msgs, mibs, per []float64
				var p50, p99 []time.Duration
				for _, res := range runs[cell{c.name, w, size}] {
					msgs = append(msgs, res.msgs)
					mibs = append(mibs, res.mibs)
					p50 = append(p50, res.p50)
					p99 = append(p99, res.p99)
					per = append(per, res.perSync)
				}
				fmt.Printf("| %s | %d KiB | %d | %.0f | %.1f | %s | %s | %.1f |\n",
					c.name, size>>10, w, median(msgs), median(mibs), fmtDur(median(p50)), fmtDur(median(p99)), median(per))
			}
		}
	}
}
