// Command queuescale measures the queue at scale: it fills a spool with
// many small messages while delivery is paused, then restarts on it and
// reports memory, spool size, the time until the first delivery attempt,
// and the latency of the operations API on the deep queue.
//
// Each phase runs in a child process (this binary, re-executed with the
// hidden -phase flag), so that peak RSS is measured per phase and the
// restart is a real cold start of a process:
//
//	fill     queue.New, enqueue -n messages with -writers goroutines, no
//	         Serve; peak RSS (VmHWM), then Close
//	restart  queue.New on the filled spool (open and census), Serve with a
//	         deliverer that records its first call and defers every
//	         message; then Depth, Stats and List latency; peak RSS; Shutdown
//
// After each phase the spool directory is walked and its size summed
// (apparent and allocated: pebble preallocates its write-ahead log).
// -serve D keeps the restarted queue serving for D and reports the attempt
// rate every 5 s, which shows how the scheduler drains a deep queue.
// Bodies are random base64 (incompressible, like attachments) unless
// -text, which pebble compresses several times over.
//
// The targets (issue 3): the 1M-message run stays under 512 MiB RSS
// and the first delivery comes <= 3 s after restart. Reproduce with:
//
//	go build -o /tmp/queuescale ./bench/queuescale
//	nice /tmp/queuescale -n 1000000 -serve 30s
//
// -memprofile PREFIX writes PREFIX.<phase>.pprof, a heap profile taken at
// the end of each phase (before Close), for go tool pprof.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// procStart is taken during package initialisation, before main runs: the
// restart phase measures from here.
var procStart = time.Now()

var (
	dirFlag     = flag.String("dir", "", "spool directory (default: a fresh temporary directory, removed at the end unless -keep)")
	nFlag       = flag.Int("n", 1_000_000, "messages to enqueue")
	sizeFlag    = flag.Int("size", 1024, "body size in bytes")
	writersFlag = flag.Int("writers", 64, "concurrent enqueue goroutines")
	keepFlag    = flag.Bool("keep", false, "keep the spool directory")
	memprofile  = flag.String("memprofile", "", "write a heap profile of each phase to `PREFIX`.<phase>.pprof")
	cpuprofile  = flag.String("cpuprofile", "", "write a CPU profile of each phase to `PREFIX`.<phase>.cpu.pprof")
	serveFlag   = flag.Duration("serve", 0, "after the measurements, keep the restarted queue serving (deferring every message) this long and report attempts per second every 5 s: the scheduler's drain rate on a deep queue")
	textFlag    = flag.Bool("text", false, "use a repetitive text body, which the store compresses well, instead of random base64 (as an attachment), which it does not")
	skipFill    = flag.Bool("skip-fill", false, "reuse the spool in -dir as it is (implies -keep)")
	phaseFlag   = flag.String("phase", "", "internal: run one phase in this process (fill or restart)")
)

// result is what a phase child reports to the parent, as one JSON line on
// stdout.
type result struct {
	Phase string `json:"phase"`

	// fill
	Enqueued    int     `json:"enqueued,omitempty"`
	FillSeconds float64 `json:"fill_seconds,omitempty"`
	MsgPerSec   float64 `json:"msg_per_sec,omitempty"`
	P50ms       float64 `json:"p50_ms,omitempty"`
	P99ms       float64 `json:"p99_ms,omitempty"`
	MaxMs       float64 `json:"max_ms,omitempty"`
	PerFsync    float64 `json:"msgs_per_fsync,omitempty"`

	// restart
	NewMs          float64      `json:"new_ms,omitempty"`           // queue.New call alone
	OpenMs         float64      `json:"open_ms,omitempty"`          // process start to New returned
	FirstDeliverMs float64      `json:"first_deliver_ms,omitempty"` // process start to first Deliver call
	FirstDeliverAt int64        `json:"first_deliver_at,omitempty"` // unix ns, for the parent's own measurement
	DepthUs        float64      `json:"depth_us,omitempty"`
	Depth          int          `json:"depth,omitempty"`
	StatsMs        float64      `json:"stats_ms,omitempty"`
	StatsDomains   int          `json:"stats_domains,omitempty"`
	Lists          []listResult `json:"lists,omitempty"`
	Deliveries     int64        `json:"deliveries,omitempty"`
	Rates          []float64    `json:"rates,omitempty"` // attempts/s per 5 s interval of -serve

	CloseMs   float64 `json:"close_ms"`
	VmHWM     int64   `json:"vmhwm_kib"`
	VmRSS     int64   `json:"vmrss_kib"`
	HeapInuse uint64  `json:"heap_inuse"`
	GoSys     uint64  `json:"go_sys"`
}

type listResult struct {
	Name    string  `json:"name"`
	Ms      float64 `json:"ms"`
	N       int     `json:"n"`
	Damaged int     `json:"damaged"`
	Next    bool    `json:"next"`
	Err     string  `json:"err,omitempty"`
}

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: queuescale [flags]\n")
		flag.VisitAll(func(f *flag.Flag) {
			if f.Name == "phase" {
				return // internal
			}
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(flag.CommandLine.Output(), "  -%s %s\n    \t%s", f.Name, name, usage)
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0s" {
				fmt.Fprintf(flag.CommandLine.Output(), " (default %s)", f.DefValue)
			}
			fmt.Fprintln(flag.CommandLine.Output())
		})
	}
	flag.Parse()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	if *phaseFlag != "" {
		log.SetPrefix(*phaseFlag + ": ")
		if *cpuprofile != "" {
			f, err := os.Create(*cpuprofile + "." + *phaseFlag + ".cpu.pprof")
			if err != nil {
				log.Fatal(err)
			}
			pprof.StartCPUProfile(f)
		}
		var r *result
		var err error
		switch *phaseFlag {
		case "fill":
			r, err = fill()
		case "restart":
			r, err = restart()
		default:
			err = fmt.Errorf("unknown phase %q", *phaseFlag)
		}
		pprof.StopCPUProfile()
		if err != nil {
			log.Fatal(err)
		}
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	if err := parent(); err != nil {
		log.Fatal(err)
	}
}

// parent runs the phases as children and prints the summary.
func parent() error {
	dir := *dirFlag
	if *skipFill {
		if dir == "" {
			return errors.New("-skip-fill needs -dir")
		}
		*keepFlag = true
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "queuescale-")
		if err != nil {
			return err
		}
		dir = d
	}
	if !*keepFlag {
		defer os.RemoveAll(dir)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log.Printf("spool %s: n=%d size=%d writers=%d GOMAXPROCS=%d", dir, *nFlag, *sizeFlag, *writersFlag, runtime.GOMAXPROCS(0))

	var fillRes, restartRes *result
	var fillSize, restartSize spoolSize
	var fillRusage, restartRusage int64
	if !*skipFill {
		fillRes, fillRusage, _, err = runPhase(self, dir, "fill")
		if err != nil {
			return err
		}
		fillSize = du(dir)
		log.Printf("fill: %d messages in %.1fs (%.0f msg/s), peak RSS %s, spool %s",
			fillRes.Enqueued, fillRes.FillSeconds, fillRes.MsgPerSec, kib(fillRes.VmHWM), fillSize)
	}
	var execAt time.Time
	restartRes, restartRusage, execAt, err = runPhase(self, dir, "restart")
	if err != nil {
		return err
	}
	restartSize = du(dir)
	outside := float64(restartRes.FirstDeliverAt-execAt.UnixNano()) / 1e6
	log.Printf("restart: open %.0f ms, first delivery %.0f ms after main (%.0f ms after exec), peak RSS %s",
		restartRes.OpenMs, restartRes.FirstDeliverMs, outside, kib(restartRes.VmHWM))

	// The summary.
	kind := "random base64"
	if *textFlag {
		kind = "repetitive text"
	}
	fmt.Printf("\n## queuescale: n=%d, body %d B (%s), %d writers, GOMAXPROCS=%d\n\n", *nFlag, *sizeFlag, kind, *writersFlag, runtime.GOMAXPROCS(0))
	fmt.Println("| measure | value | target |")
	fmt.Println("|---|---|---|")
	row := func(m, v, t string) { fmt.Printf("| %s | %s | %s |\n", m, v, t) }
	if fillRes != nil {
		row("fill: messages enqueued", strconv.Itoa(fillRes.Enqueued), "")
		row("fill: elapsed", fmt.Sprintf("%.1f s", fillRes.FillSeconds), "")
		row("fill: throughput", fmt.Sprintf("%.0f msg/s", fillRes.MsgPerSec), "")
		row("fill: ack latency p50 / p99 / max", fmt.Sprintf("%.2f / %.2f / %.0f ms", fillRes.P50ms, fillRes.P99ms, fillRes.MaxMs), "")
		row("fill: msgs per fsync (mean)", fmt.Sprintf("%.1f", fillRes.PerFsync), "")
		row("fill: peak RSS (VmHWM; rusage maxrss)", fmt.Sprintf("%s; %s", kib(fillRes.VmHWM), kib(fillRusage)), "< 512 MiB "+verdict(fillRes.VmHWM < 512<<10))
		row("fill: Go heap in use / Go sys at end", fmt.Sprintf("%s / %s", mib(fillRes.HeapInuse), mib(fillRes.GoSys)), "")
		row("fill: Close", fmt.Sprintf("%.0f ms", fillRes.CloseMs), "")
		row("spool size after fill (apparent; allocated)", fillSize.String(), "")
	}
	row("restart: queue.New (open + census)", fmt.Sprintf("%.0f ms", restartRes.NewMs), "")
	row("restart: process start to New returned", fmt.Sprintf("%.0f ms", restartRes.OpenMs), "")
	row("restart: process start to first Deliver", fmt.Sprintf("%.0f ms (%.0f ms from exec)", restartRes.FirstDeliverMs, outside),
		"<= 3000 ms "+verdict(outside <= 3000))
	row("restart: Depth()", fmt.Sprintf("%.1f µs (%d messages)", restartRes.DepthUs, restartRes.Depth), "")
	row("restart: Stats()", fmt.Sprintf("%.1f ms (%d domains)", restartRes.StatsMs, restartRes.StatsDomains), "")
	for _, l := range restartRes.Lists {
		v := fmt.Sprintf("%.1f ms (%d messages, more=%v)", l.Ms, l.N, l.Next)
		if l.Damaged > 0 {
			v += fmt.Sprintf(", %d damaged", l.Damaged)
		}
		if l.Err != "" {
			v += ", error: " + l.Err
		}
		row("restart: "+l.Name, v, "")
	}
	row("restart: deferred attempts while measuring", strconv.FormatInt(restartRes.Deliveries, 10), "")
	if len(restartRes.Rates) > 0 {
		var rs []string
		for _, v := range restartRes.Rates {
			rs = append(rs, fmt.Sprintf("%.0f", v))
		}
		row(fmt.Sprintf("restart: attempts/s, every 5 s of -serve %v", *serveFlag), strings.Join(rs, ", "), "")
	}
	row("restart: peak RSS (VmHWM; rusage maxrss)", fmt.Sprintf("%s; %s", kib(restartRes.VmHWM), kib(restartRusage)), "< 512 MiB "+verdict(restartRes.VmHWM < 512<<10))
	row("restart: Go heap in use / Go sys at end", fmt.Sprintf("%s / %s", mib(restartRes.HeapInuse), mib(restartRes.GoSys)), "")
	row("restart: Shutdown", fmt.Sprintf("%.0f ms", restartRes.CloseMs), "")
	row("spool size after restart (apparent; allocated)", restartSize.String(), "")
	if *keepFlag {
		fmt.Printf("\nspool kept in %s\n", dir)
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "(met)"
	}
	return "(MISSED)"
}

// runPhase runs one phase in a child process and returns its result, its
// peak RSS as the kernel accounts it (rusage, KiB) and when it was started.
func runPhase(self, dir, phase string) (*result, int64, time.Time, error) {
	args := []string{"-phase", phase, "-dir", dir, "-n", strconv.Itoa(*nFlag),
		"-size", strconv.Itoa(*sizeFlag), "-writers", strconv.Itoa(*writersFlag)}
	if *memprofile != "" {
		args = append(args, "-memprofile", *memprofile)
	}
	if *cpuprofile != "" {
		args = append(args, "-cpuprofile", *cpuprofile)
	}
	if *textFlag {
		args = append(args, "-text")
	}
	if *serveFlag > 0 {
		args = append(args, "-serve", serveFlag.String())
	}
	cmd := exec.Command(self, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return nil, 0, start, fmt.Errorf("phase %s: %w", phase, err)
	}
	var r result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return nil, 0, start, fmt.Errorf("phase %s: %w: %q", phase, err, out.String())
	}
	var maxrss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		maxrss = ru.Maxrss // KiB on Linux
	}
	return &r, maxrss, start, nil
}

// fill enqueues -n messages with -writers goroutines, no Serve.
func fill() (*result, error) {
	reg := prometheus.NewRegistry()
	q, err := queue.New(*dirFlag, queue.WithRegisterer(reg))
	if err != nil {
		return nil, err
	}
	n, writers := *nFlag, *writersFlag
	body := newBodies(*sizeFlag, *textFlag)
	lat := make([]float32, n) // ms; 4 MB for a million
	var next, done atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	ctx := context.Background()
	stopProgress := progress(func() string {
		return fmt.Sprintf("%d/%d enqueued, RSS %s", done.Load(), n, kib(procStatus("VmRSS")))
	})
	start := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() != nil {
					return
				}
				t0 := time.Now()
				_, err := q.Enqueue(ctx, envelope(i), bytes.NewReader(body.get(i)))
				lat[i] = float32(time.Since(t0).Seconds() * 1000)
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	if errp := failed.Load(); errp != nil {
		q.Close()
		return nil, fmt.Errorf("enqueue: %w", *errp)
	}
	r := &result{Phase: "fill", Enqueued: int(done.Load()), FillSeconds: elapsed.Seconds(),
		MsgPerSec: float64(done.Load()) / elapsed.Seconds()}
	r.P50ms, r.P99ms, r.MaxMs = quantiles(lat)
	lat = nil
	if sum, count := histogram(reg, "sluice_queue_fsync_batch_size"); count > 0 {
		r.PerFsync = sum / count
	}
	endPhase(r)
	t := time.Now()
	if err := q.Close(); err != nil {
		return nil, err
	}
	r.CloseMs = msSince(t)
	return r, nil
}

// restart opens the filled spool, serves it with a deliverer that defers
// everything, and measures the operations API.
func restart() (*result, error) {
	r := &result{Phase: "restart"}
	t := time.Now()
	q, err := queue.New(*dirFlag)
	if err != nil {
		return nil, err
	}
	r.NewMs = msSince(t)
	r.OpenMs = msSince(procStart)
	d := &deferrer{first: make(chan struct{})}
	served := make(chan error, 1)
	go func() { served <- q.Serve(d) }()
	select {
	case <-d.first:
	case err := <-served:
		return nil, fmt.Errorf("serve: %w", err)
	case <-time.After(5 * time.Minute):
		return nil, errors.New("no delivery within 5 minutes of restart")
	}
	r.FirstDeliverAt = d.firstAt.UnixNano()
	r.FirstDeliverMs = float64(d.firstAt.Sub(procStart)) / 1e6
	log.Printf("open %.0f ms (New %.0f ms), first delivery %.0f ms after start", r.OpenMs, r.NewMs, r.FirstDeliverMs)

	// The operations API, on the deep queue, while it is serving (as an
	// operator would use it on a running daemon).
	t = time.Now()
	r.Depth = q.Depth()
	r.DepthUs = float64(time.Since(t)) / 1e3
	t = time.Now()
	st := q.Stats()
	r.StatsMs = msSince(t)
	r.StatsDomains = len(st.Domains)
	ctx := context.Background()
	list := func(name string, o queue.ListOptions) {
		t := time.Now()
		p, err := q.List(ctx, o)
		lr := listResult{Name: name, Ms: msSince(t)}
		if err != nil {
			lr.Err = err.Error()
		} else {
			lr.N, lr.Damaged, lr.Next = len(p.Messages), p.Damaged, p.Next != ""
		}
		r.Lists = append(r.Lists, lr)
	}
	list("List first page (limit 100)", queue.ListOptions{Limit: 100})
	list("List first page again (warm)", queue.ListOptions{Limit: 100})
	list("List domain=d7.example.com (limit 100)", queue.ListOptions{Domain: "d7.example.com", Limit: 100})
	list("List limit 10000", queue.ListOptions{Limit: 10_000})
	list("List state=held, none held (scan budget)", queue.ListOptions{State: queue.StateHeld, Limit: 100})
	r.Deliveries = d.calls.Load()
	if *serveFlag > 0 {
		const interval = 5 * time.Second
		last, lastAt := d.calls.Load(), time.Now()
		for end := time.Now().Add(*serveFlag); time.Now().Before(end); {
			time.Sleep(interval)
			n, now := d.calls.Load(), time.Now()
			rate := float64(n-last) / now.Sub(lastAt).Seconds()
			r.Rates = append(r.Rates, rate)
			log.Printf("serving: %.0f attempts/s, %d attempted, depth %d, RSS %s", rate, n, q.Depth(), kib(procStatus("VmRSS")))
			last, lastAt = n, now
		}
	}
	endPhase(r)

	t = time.Now()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := q.Shutdown(sctx); err != nil {
		return nil, err
	}
	r.CloseMs = msSince(t)
	<-served
	return r, nil
}

// deferrer is a Deliverer that records its first call and defers every
// recipient.
type deferrer struct {
	once    sync.Once
	first   chan struct{}
	firstAt time.Time
	calls   atomic.Int64
}

func (d *deferrer) Deliver(ctx context.Context, msg *queue.Message) []queue.Result {
	now := time.Now()
	d.once.Do(func() { d.firstAt = now; close(d.first) })
	d.calls.Add(1)
	res := make([]queue.Result, len(msg.Envelope.Recipients))
	for i := range res {
		res[i] = queue.Result{Outcome: sluice.OutcomeDeferred,
			Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 4, 1}, "queuescale: delivery paused")}
	}
	return res
}

// endPhase fills in the memory figures and writes the heap profile.
func endPhase(r *result) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.HeapInuse, r.GoSys = ms.HeapInuse, ms.Sys
	r.VmHWM, r.VmRSS = procStatus("VmHWM"), procStatus("VmRSS")
	if *memprofile != "" {
		f, err := os.Create(*memprofile + "." + r.Phase + ".pprof")
		if err != nil {
			log.Print(err)
			return
		}
		runtime.GC()
		if err := pprof.WriteHeapProfile(f); err != nil {
			log.Print(err)
		}
		f.Close()
	}
}

func envelope(i int) *sluice.Envelope {
	return &sluice.Envelope{
		From:       "sender@example.org",
		Recipients: []sluice.Recipient{{Address: fmt.Sprintf("rcpt-%d@d%d.example.com", i%1000, i%50)}},
		Received:   time.Now(),
	}
}

// bodies hands out message bodies of one size. Random bodies are windows
// at pseudo-random offsets of a pool of random base64 lines, so that no
// two messages share content the store could compress away (as with real
// attachments); text bodies are one repetitive text, which compresses
// several times over and so understates the spool size.
type bodies struct {
	size int
	pool []byte
}

const bodyPool = 16 << 20

func newBodies(size int, text bool) *bodies {
	var buf bytes.Buffer
	if text {
		buf.WriteString("From: sender@example.org\r\nTo: rcpt@example.com\r\nSubject: queuescale\r\n\r\n")
		for buf.Len() < size {
			buf.WriteString("The quick brown fox jumps over the lazy dog. 0123456789\r\n")
		}
		return &bodies{size: size, pool: buf.Bytes()[:size]}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	raw := make([]byte, 57)
	for buf.Len() < bodyPool+size {
		for i := range raw {
			raw[i] = byte(rng.Uint32())
		}
		buf.WriteString(base64.StdEncoding.EncodeToString(raw))
		buf.WriteString("\r\n")
	}
	return &bodies{size: size, pool: buf.Bytes()}
}

// get returns message i's body.
func (b *bodies) get(i int) []byte {
	if len(b.pool) == b.size {
		return b.pool
	}
	off := int(uint64(i) * 0x9E3779B97F4A7C15 % uint64(len(b.pool)-b.size))
	return b.pool[off : off+b.size]
}

// progress logs status every 10 seconds until the returned func is called.
func progress(status func() string) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				log.Print(status())
			}
		}
	}()
	return func() { close(stop); <-done }
}

// quantiles returns p50, p99 and max of lat, sorting it.
func quantiles(lat []float32) (p50, p99, maxv float64) {
	if len(lat) == 0 {
		return 0, 0, 0
	}
	slices.Sort(lat)
	at := func(p float64) float64 {
		i := int(p*float64(len(lat))+0.5) - 1
		return float64(lat[min(max(i, 0), len(lat)-1)])
	}
	return at(0.50), at(0.99), float64(lat[len(lat)-1])
}

// histogram returns the sample sum and count of histogram name in reg.
func histogram(reg *prometheus.Registry, name string) (sum, count float64) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				sum += h.GetSampleSum()
				count += float64(h.GetSampleCount())
			}
		}
	}
	return sum, count
}

// procStatus returns a field of /proc/self/status in KiB (VmHWM, VmRSS).
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return 0
}

type spoolSize struct {
	files          int
	apparent, disk int64
}

func (s spoolSize) String() string {
	return fmt.Sprintf("%s; %s (%d files)", mib(uint64(s.apparent)), mib(uint64(s.disk)), s.files)
}

// du walks dir and sums its files' sizes: apparent (st_size) and allocated
// (st_blocks).
func du(dir string) spoolSize {
	var s spoolSize
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		s.files++
		s.apparent += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			s.disk += st.Blocks * 512
		}
		return nil
	})
	return s
}

func msSince(t time.Time) float64 { return float64(time.Since(t)) / 1e6 }

func kib(v int64) string { return fmt.Sprintf("%.1f MiB", float64(v)/1024) }

func mib(v uint64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }
