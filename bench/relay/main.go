// Command relay measures sluice as a relay against Postfix and against the
// loopback limit, in one run on one machine (issue 8). It is driven by the
// script bench/relay/run, which installs Postfix's tools and builds sluice.
//
// Contenders, all fed by Postfix's smtp-source and, end to end, all
// delivering into one fresh smtp-sink per run:
//
//	raw      smtp-source -> smtp-sink: no MTA between, the loopback limit
//	postfix  smtp-source -> a private Postfix instance (its own config,
//	         queue and log in a temporary directory, smtpd on a
//	         kernel-chosen port of 127.0.0.1, relayhost = the sink, no DNS)
//	sluice   smtp-source -> sluice serve --smarthost the sink
//
// Modes:
//
//	e2e     from smtp-source's start until the sink has counted every message
//	accept  delivery paused: from smtp-source's start until it has finished.
//	        Postfix puts every message on hold (check_client_access
//	        static:HOLD); sluice relays to a black hole that accepts
//	        connections and never answers, so only its workers' first
//	        messages leave the queue. For raw this is the same as e2e.
//
// Memory is the peak of the summed PSS (/proc/PID/smaps_rollup) of the
// contender's processes, sampled every 200 ms (Postfix: the master and
// every descendant); for sluice the kernel's peak RSS (VmHWM) is reported
// too. Every cell (mode, size, sessions) is run -runs times with the
// contenders interleaved (raw, postfix, sluice, raw, ...), and the table
// gives medians.
//
// -profile DIR makes one more sluice run of the first cell (not counted;
// e2e 4 KiB 20 sessions in the default order), three times as long, with
// [http] pprof on, and saves a CPU profile taken during it and the
// allocation profile at its end.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicemta/sluice/internal/blackhole"
	"github.com/sluicemta/sluice/internal/procnet"
)

var (
	sizesFlag      = flag.String("sizes", "4KiB,100KiB", "message payload sizes (smtp-source -l), comma separated: 4KiB, 100KiB or bytes")
	sessionsFlag   = flag.String("sessions", "20,100", "concurrent client sessions (smtp-source -s), comma separated")
	modesFlag      = flag.String("modes", "e2e,accept", "modes: e2e (until the sink has every message) and accept (delivery paused)")
	contendersFlag = flag.String("contenders", "raw,postfix,sluice", "contenders, in the order they are interleaved")
	runsFlag       = flag.Int("runs", 3, "runs of each cell; the table gives medians")
	countsFlag     = flag.String("counts", "4KiB=20000,100KiB=3000", "messages per run by size; sizes not listed send 20000")
	sluiceFlag     = flag.String("sluice", "", "the sluice binary (required when sluice is a contender)")
	workFlag       = flag.String("work", "", "directory for spools and logs (default: the system's temporary directory); must be on the disk being measured, not tmpfs")
	profileFlag    = flag.String("profile", "", "profile sluice in one extra e2e run and write cpu.pprof and allocs.pprof to `DIR`")
	concFlag       = flag.Int("concurrency", 50, "outbound connections to the sink, for Postfix (destination concurrency) and sluice (delivery.shaping.concurrency)")
	workersFlag    = flag.Int("workers", 64, "sluice queue workers (queue.workers)")
	procLimitFlag  = flag.Int("postfix-process-limit", 200, "Postfix default_process_limit")
	inFlowFlag     = flag.String("in-flow-delay", "1s", "Postfix's in_flow_delay and sluice's smtp.limits.in_flow_delay (both default to 1s); Postfix's is 0s in accept-only runs, where its queue manager never frees a token")
	timeoutFlag    = flag.Duration("timeout", 10*time.Minute, "longest run")
	keepFlag       = flag.Bool("keep", false, "keep each run's directory (spools, logs, configurations)")
	postfixSched   = flag.String("postfix-sched", "normal", "Linux scheduling policy for Postfix's processes: normal (as installed) or batch (started under chrt --batch 0, to compare with sluice, which runs its threads as SCHED_BATCH unless process.cpu_scheduling says otherwise)")
	sluiceSched    = flag.String("sluice-sched", "", "sluice's process.cpu_scheduling: batch or inherit (default: not set, so sluice's default, batch)")
	clientFlag     = flag.String("client", "smtp-source", "the load: smtp-source, go (this driver's own SMTP client, which also reports the p50 and p99 acceptance latency: MAIL to the reply to the final dot), or go-pipelining (the same client sending MAIL, RCPT and DATA in one group, as an MTA does to a server that offers PIPELINING)")
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("relay: ")
	flag.Parse()
	if *clientFlag != "smtp-source" && *clientFlag != "go" && *clientFlag != "go-pipelining" {
		log.Fatalf("-client %q: want smtp-source, go or go-pipelining", *clientFlag)
	}
	if *postfixSched != "normal" && *postfixSched != "batch" {
		log.Fatalf("-postfix-sched %q: want normal or batch", *postfixSched)
	}
	if *sluiceSched != "" && *sluiceSched != "batch" && *sluiceSched != "inherit" {
		log.Fatalf("-sluice-sched %q: want batch or inherit", *sluiceSched)
	}
	b, err := newBench()
	if err != nil {
		log.Fatal(err)
	}
	if err := b.main(); err != nil {
		log.Fatal(err)
	}
}

// cell is one configuration measured for every contender.
type cell struct {
	mode     string
	size     int
	sessions int
	count    int
}

func (c cell) String() string {
	return fmt.Sprintf("%s %s %d sessions %d msgs", c.mode, sizeName(c.size), c.sessions, c.count)
}

// result is one run of one contender in one cell.
type result struct {
	msgps    float64 // messages per second, the mode's measure
	acceptps float64 // messages per second until smtp-source finished
	dur      time.Duration
	pssMiB   float64       // peak summed PSS
	hwmMiB   float64       // peak RSS (VmHWM) for sluice, 0 otherwise
	cpu      time.Duration // CPU time (user and system) of the MTA during the run: sluice's process, Postfix's processes; for raw, smtp-source's and smtp-sink's
	procs    int           // most processes seen at once
	fsyncUS  float64       // sluice: mean duration of its WAL fsyncs, µs
	perSync  float64       // sluice: mean messages made durable by one fsync
	lat      latencies     // with -client go
	err      error
}

type bench struct {
	source, sink, postfix string
	work                  string
	cells                 []cell
	contenders            []string
	results               map[string][]result // key: cell.String() + "/" + contender

	// For the profile run: called when sluice has started, and when the
	// sink has every message.
	onSluice    func(*sluiceProc)
	afterSluice func(*sluiceProc) error
}

func newBench() (*bench, error) {
	b := &bench{results: map[string][]result{}}
	var err error
	if b.source, err = tool("smtp-source"); err != nil {
		return nil, err
	}
	if b.sink, err = tool("smtp-sink"); err != nil {
		return nil, err
	}
	b.contenders = splitList(*contendersFlag)
	for _, c := range b.contenders {
		switch c {
		case "raw":
		case "postfix":
			if b.postfix, err = tool("postfix"); err != nil {
				return nil, err
			}
			if os.Geteuid() != 0 {
				return nil, errors.New("a private Postfix instance needs root")
			}
		case "sluice":
			if *sluiceFlag == "" {
				return nil, errors.New("-sluice is required")
			}
		default:
			return nil, fmt.Errorf("unknown contender %q", c)
		}
	}
	counts := map[int]int{}
	for _, kv := range splitList(*countsFlag) {
		k, v, ok := strings.Cut(kv, "=")
		size, err1 := parseSize(k)
		n, err2 := strconv.Atoi(v)
		if !ok || err1 != nil || err2 != nil || n <= 0 {
			return nil, fmt.Errorf("bad -counts entry %q", kv)
		}
		counts[size] = n
	}
	for _, mode := range splitList(*modesFlag) {
		if mode != "e2e" && mode != "accept" {
			return nil, fmt.Errorf("unknown mode %q", mode)
		}
		for _, s := range splitList(*sizesFlag) {
			size, err := parseSize(s)
			if err != nil {
				return nil, err
			}
			for _, ss := range splitList(*sessionsFlag) {
				sessions, err := strconv.Atoi(ss)
				if err != nil || sessions <= 0 {
					return nil, fmt.Errorf("bad session count %q", ss)
				}
				n := counts[size]
				if n == 0 {
					n = 20000
				}
				b.cells = append(b.cells, cell{mode, size, sessions, n})
			}
		}
	}
	b.work = *workFlag
	if b.work == "" {
		b.work = os.TempDir()
	}
	return b, nil
}

func (b *bench) main() error {
	printMachine()
	for _, c := range b.cells {
		for r := range *runsFlag {
			for _, who := range b.contenders {
				res := b.run(who, c, false)
				key := c.String() + "/" + who
				b.results[key] = append(b.results[key], res)
				if res.err != nil {
					log.Printf("%s run %d %s: %v", c, r+1, who, res.err)
					continue
				}
				log.Printf("%s run %d %-7s %8.0f msg/s (%.2fs, accepted at %.0f msg/s) peak PSS %.1f MiB%s, %d procs%s, load %s",
					c, r+1, who, res.msgps, res.dur.Seconds(), res.acceptps, res.pssMiB, hwm(res, c.count), res.procs, fsyncs(res), loadavg())
			}
		}
	}
	b.table()
	if *profileFlag != "" {
		return b.profile()
	}
	return nil
}

// fsyncs gives sluice's mean fsync duration and group-commit size.
func fsyncs(r result) string {
	if r.perSync == 0 {
		return ""
	}
	return fmt.Sprintf(", fsync %.0f µs for %.1f msgs", r.fsyncUS, r.perSync)
}

func hwm(r result, count int) string {
	cpu := fmt.Sprintf(", CPU %.0f µs/msg", cpuPerMsg(r, count))
	if r.hwmMiB == 0 {
		return cpu
	}
	return fmt.Sprintf(" (VmHWM %.1f MiB)%s", r.hwmMiB, cpu)
}

// cpuPerMsg is the CPU time the contender used per message in a run, in
// µs (for raw: smtp-source and smtp-sink).
func cpuPerMsg(r result, count int) float64 {
	return float64(r.cpu) / float64(time.Microsecond) / float64(count)
}

// table prints the medians as a Markdown table on standard output.
func (b *bench) table() {
	fmt.Println()
	withLat := *clientFlag != "smtp-source"
	latHead, latRule := "", ""
	if withLat {
		latHead, latRule = " p50 ms | p99 ms |", "---:|---:|"
	}
	fmt.Printf("| mode | size | sessions | msgs | contender | msg/s (median) | runs | peak MiB (median) | CPU µs/msg (median) |%s sluice/postfix | sluice/raw | CPU postfix/sluice |\n", latHead)
	fmt.Printf("|---|---|---:|---:|---|---:|---|---:|---:|%s---:|---:|---:|\n", latRule)
	for _, c := range b.cells {
		med, cpu := map[string]float64{}, map[string]float64{}
		for _, who := range b.contenders {
			med[who] = median(b.results[c.String()+"/"+who], func(r result) float64 { return r.msgps })
			cpu[who] = median(b.results[c.String()+"/"+who], func(r result) float64 { return cpuPerMsg(r, c.count) })
		}
		for _, who := range b.contenders {
			rs := b.results[c.String()+"/"+who]
			var runs []string
			for _, r := range rs {
				if r.err != nil {
					runs = append(runs, "fail")
				} else {
					runs = append(runs, fmt.Sprintf("%.0f", r.msgps))
				}
			}
			mem := median(rs, func(r result) float64 { return r.pssMiB })
			memText := fmt.Sprintf("%.1f", mem)
			if who == "sluice" {
				memText += fmt.Sprintf(" (VmHWM %.1f)", median(rs, func(r result) float64 { return r.hwmMiB }))
			}
			cpuText := fmt.Sprintf("%.0f", cpu[who])
			if who == "raw" {
				memText, cpuText = "-", fmt.Sprintf("(%.0f)", cpu[who]) // the load tools' own
			}
			ratioPF, ratioRaw, ratioCPU := "", "", ""
			if who == "sluice" {
				ratioPF = ratio(med["sluice"], med["postfix"])
				ratioRaw = ratio(med["sluice"], med["raw"])
				ratioCPU = ratio(cpu["postfix"], cpu["sluice"])
			}
			latText := ""
			if withLat {
				ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
				latText = fmt.Sprintf(" %.2f | %.2f |", median(rs, func(r result) float64 { return ms(r.lat.p50) }),
					median(rs, func(r result) float64 { return ms(r.lat.p99) }))
			}
			fmt.Printf("| %s | %s | %d | %d | %s | %.0f | %s | %s | %s |%s %s | %s | %s |\n",
				c.mode, sizeName(c.size), c.sessions, c.count, who, med[who], strings.Join(runs, ", "), memText, cpuText, latText, ratioPF, ratioRaw, ratioCPU)
		}
	}
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// median of f over the successful results; NaN when there are none.
func median(rs []result, f func(result) float64) float64 {
	var v []float64
	for _, r := range rs {
		if r.err == nil {
			v = append(v, f(r))
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// run measures one contender in one cell.
func (b *bench) run(who string, c cell, withPprof bool) (res result) {
	// Write back what the previous run left dirty (Postfix writes and
	// removes a file per message) before this one starts, so that its
	// flushing does not bill this run's fsyncs.
	syscall.Sync()
	dir, err := os.MkdirTemp(b.work, "sluice-relaybench-")
	if err != nil {
		return result{err: err}
	}
	// Postfix's daemons, running as the postfix user, must reach the
	// queue under dir.
	os.Chmod(dir, 0o755)
	if !*keepFlag {
		defer os.RemoveAll(dir)
	} else {
		log.Printf("keeping %s", dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeoutFlag)
	defer cancel()

	// The next hop: a fresh sink, or a black hole when delivery is paused.
	var next string
	var snk *sink
	if c.mode == "e2e" || who == "raw" {
		snk, err = startSink(b.sink, c.count)
		if err != nil {
			return result{err: err}
		}
		defer snk.stop()
		next = snk.addr
	} else {
		// A next hop that holds every delivery attempt at its
		// greeting, for accept-only runs.
		bh, err := blackhole.Listen("127.0.0.1:0")
		if err != nil {
			return result{err: err}
		}
		defer bh.Close()
		next = bh.Addr()
	}

	var target string
	var mem *memWatch
	var check func() error // after an accept-only run: were all messages taken?
	switch who {
	case "raw":
		target = next
	case "postfix":
		pf, err := startPostfix(b.postfix, dir, next, c.mode == "accept")
		if err != nil {
			return result{err: err}
		}
		defer pf.stop()
		target = pf.addr
		mem = watch(pf.pid, true)
		check = func() error {
			n := countFiles(filepath.Join(dir, "spool", "hold"))
			if n != c.count {
				return fmt.Errorf("postfix holds %d messages, want %d", n, c.count)
			}
			return nil
		}
	case "sluice":
		sl, err := startSluice(dir, next, c.mode == "accept", withPprof)
		if err != nil {
			return result{err: err}
		}
		defer sl.stop()
		target = sl.smtpAddr
		mem = watch(sl.cmd.Process.Pid, false)
		defer func() {
			if res.err == nil {
				res.fsyncUS, res.perSync = sl.fsyncs()
			}
		}()
		check = func() error {
			n, err := sl.enqueued()
			if err != nil {
				return err
			}
			if n != c.count {
				return fmt.Errorf("sluice enqueued %d messages, want %d", n, c.count)
			}
			return nil
		}
		if withPprof && b.onSluice != nil {
			b.onSluice(sl)
			defer func() {
				if res.err == nil {
					res.err = b.afterSluice(sl)
				}
			}()
		}
	}

	start := time.Now()
	var loadCPU time.Duration // smtp-source's; with -client go, the driver's own client is not counted
	if *clientFlag != "smtp-source" {
		lat, err := sendAll(ctx, target, c.sessions, c.count, c.size, *clientFlag == "go-pipelining")
		if err != nil {
			return result{err: fmt.Errorf("go client: %w", err)}
		}
		res.lat = lat
	} else {
		src := exec.CommandContext(ctx, b.source, "-d", "-s", strconv.Itoa(c.sessions), "-m", strconv.Itoa(c.count),
			"-l", strconv.Itoa(c.size), "-f", "sender@example.org", "-t", "rcpt@example.com", "-M", "client.test", target)
		if out, err := src.CombinedOutput(); err != nil {
			return result{err: fmt.Errorf("smtp-source: %v: %s", err, strings.TrimSpace(string(out)))}
		}
		loadCPU = src.ProcessState.UserTime() + src.ProcessState.SystemTime()
	}
	accepted := time.Since(start)
	res.acceptps = float64(c.count) / accepted.Seconds()
	if c.mode == "e2e" || who == "raw" {
		at, err := snk.wait(ctx)
		if err != nil {
			return result{err: fmt.Errorf("sink: %w (%d of %d)", err, snk.count.Load(), c.count)}
		}
		res.dur = at.Sub(start)
	} else {
		res.dur = accepted
		if check != nil {
			if err := check(); err != nil {
				return result{err: err}
			}
		}
	}
	res.msgps = float64(c.count) / res.dur.Seconds()
	if mem != nil {
		res.pssMiB, res.hwmMiB, res.procs, res.cpu = mem.stop()
	}
	if who == "raw" {
		res.cpu = loadCPU + snk.cpu()
	}
	return res
}

// profile runs sluice once more in the first cell with three times the
// messages, takes a CPU profile while it runs and the allocation profile
// at its end.
func (b *bench) profile() error {
	if len(b.cells) == 0 {
		return errors.New("-profile needs a cell")
	}
	c := &b.cells[0]
	if err := os.MkdirAll(*profileFlag, 0o755); err != nil {
		return err
	}
	pc := *c
	pc.count *= 3
	seconds := 10
	if m := median(b.results[c.String()+"/sluice"], func(r result) float64 { return r.dur.Seconds() }); !math.IsNaN(m) {
		seconds = max(2, int(m*3*0.8))
	}
	done := make(chan error, 1)
	b.onSluice = func(sl *sluiceProc) {
		go func() {
			done <- fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", sl.httpAddr, seconds),
				filepath.Join(*profileFlag, "cpu.pprof"))
		}()
	}
	b.afterSluice = func(sl *sluiceProc) error {
		return fetch(fmt.Sprintf("http://%s/debug/pprof/allocs", sl.httpAddr), filepath.Join(*profileFlag, "allocs.pprof"))
	}
	log.Printf("profile run: %s, CPU profile over the first %d s", pc, seconds)
	res := b.run("sluice", pc, true)
	if res.err != nil {
		return res.err
	}
	log.Printf("profile run: %.0f msg/s (%.2fs), peak PSS %.1f MiB (VmHWM %.1f MiB)", res.msgps, res.dur.Seconds(), res.pssMiB, res.hwmMiB)
	return <-done
}

func fetch(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// sink is a running smtp-sink that counts messages (-c).
type sink struct {
	cmd   *exec.Cmd
	addr  string
	want  int64
	count atomic.Int64
	full  chan time.Time // receives the time the count reached want
	done  chan struct{}  // closed when the process has exited
}

var mesgRE = regexp.MustCompile(`mesg=(\d+)`)

func startSink(bin string, want int) (*sink, error) {
	args := []string{"-c"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "postfix")
	}
	// Port 0: the kernel chooses, and we read the port back from /proc.
	args = append(args, "127.0.0.1:0", "1024")
	s := &sink{cmd: exec.Command(bin, args...), want: int64(want), full: make(chan time.Time, 1), done: make(chan struct{})}
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		// -c rewrites one status line with CR after every message and
		// session: "sess=N quit=N mesg=N".
		sc := bufio.NewScanner(out)
		sc.Split(splitCR)
		for sc.Scan() {
			m := mesgRE.FindSubmatch(sc.Bytes())
			if m == nil {
				continue
			}
			n, _ := strconv.ParseInt(string(m[1]), 10, 64)
			if s.count.Swap(n) < s.want && n >= s.want {
				s.full <- time.Now()
			}
		}
		s.cmd.Wait()
		close(s.done)
	}()
	port, err := waitPort(s.cmd.Process.Pid, s.done, 10*time.Second)
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("smtp-sink: %w", err)
	}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	return s, nil
}

func splitCR(data []byte, atEOF bool) (int, []byte, error) {
	for i, c := range data {
		if c == '\r' || c == '\n' {
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// wait returns when the sink has counted every message it should get.
func (s *sink) wait(ctx context.Context) (time.Time, error) {
	select {
	case t := <-s.full:
		return t, nil
	case <-s.done:
		return time.Time{}, errors.New("smtp-sink exited")
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// cpu is the CPU time the sink has used so far.
func (s *sink) cpu() time.Duration { return cpuTime(s.cmd.Process.Pid) }

func (s *sink) stop() {
	s.cmd.Process.Kill()
	<-s.done
}

// postfixProc is a private Postfix instance.
type postfixProc struct {
	bin, dir, addr string
	pid            int
}

func startPostfix(bin, dir, relay string, hold bool) (*postfixProc, error) {
	for _, d := range []string{"etc", "spool", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if out, err := exec.Command("chown", "postfix", filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("chown: %v %s", err, out)
	}
	restrictions := "permit_mynetworks, reject_unauth_destination"
	inFlow := *inFlowFlag
	if hold {
		inFlow = "0s"
		// Every message goes to the hold queue, which the queue manager
		// never schedules: delivery paused.
		restrictions = "check_client_access static:HOLD, " + restrictions
	}
	conc := strconv.Itoa(*concFlag)
	mainCF := strings.NewReplacer("DIR", dir, "RELAY", relay, "RESTRICTIONS", restrictions,
		"CONC", conc, "PROCS", strconv.Itoa(*procLimitFlag), "INFLOW", inFlow).Replace(`compatibility_level = 3.6
queue_directory = DIR/spool
data_directory = DIR/data
maillog_file = DIR/maillog
maillog_file_prefixes = DIR
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
local_recipient_maps =
relay_domains =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
relayhost = [RELAY]
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtpd_recipient_restrictions = RESTRICTIONS
smtpd_relay_restrictions =
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
in_flow_delay = INFLOW
biff = no
default_process_limit = PROCS
default_destination_concurrency_limit = CONC
smtp_destination_concurrency_limit = CONC
initial_destination_concurrency = CONC
smtp_connection_cache_on_demand = yes
`)
	// relayhost wants [host]:port.
	host, port, _ := net.SplitHostPort(relay)
	mainCF = strings.Replace(mainCF, "relayhost = ["+relay+"]", "relayhost = ["+host+"]:"+port, 1)
	// Port 0: the kernel chooses; the port is read back from /proc.
	masterCF := `127.0.0.1:0 inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000 0 flush
proxymap  unix  - - n -    - proxymap
smtp      unix  - - n -    - smtp
relay     unix  - - n -    - smtp
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
`
	etc := filepath.Join(dir, "etc")
	for name, content := range map[string]string{"main.cf": mainCF, "master.cf": masterCF} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	pf := &postfixProc{bin: bin, dir: dir}
	start := exec.Command(bin, "-c", etc, "start")
	if *postfixSched == "batch" {
		// The master and every process it starts inherit the policy.
		start = exec.Command("chrt", "--batch", "0", bin, "-c", etc, "start")
	}
	if out, err := start.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("postfix start: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(filepath.Join(dir, "spool", "pid", "master.pid")); err == nil {
			pf.pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			if p := procnet.ListeningPort(pf.pid); p != 0 {
				pf.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
				return pf, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	pf.stop()
	log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
	return nil, fmt.Errorf("postfix did not start listening:\n%s", log)
}

// stop stops this instance only ("postfix -c" signals the master whose
// pid file is in its queue directory) and waits for the master to exit.
func (pf *postfixProc) stop() {
	etc := filepath.Join(pf.dir, "etc")
	exec.Command(pf.bin, "-c", etc, "stop").Run()
	if pf.pid > 0 && !waitGone(pf.pid, 30*time.Second) {
		exec.Command(pf.bin, "-c", etc, "abort").Run()
		if !waitGone(pf.pid, 10*time.Second) {
			log.Printf("postfix master %d still running after abort", pf.pid)
		}
	}
}

// sluiceProc is a running "sluice serve".
type sluiceProc struct {
	cmd                *exec.Cmd
	smtpAddr, httpAddr string
	done               chan struct{}
}

func startSluice(dir, next string, accept, withPprof bool) (*sluiceProc, error) {
	conf := fmt.Sprintf(`[smtp]
hostname = "sluice.test"
trusted_networks = ["127.0.0.0/8"]

[smtp.limits]
max_connections = 5000
in_flow_delay = %q

[queue]
workers = %d

[delivery]
smarthost = %q
%s
[delivery.shaping]
concurrency = %d
initial_concurrency = %d
max_per_connection = 1000

[http]
pprof = %v

[log]
level = "info"
`, *inFlowFlag, *workersFlag, next, map[bool]string{true: "greeting_timeout = \"1h\"\n", false: ""}[accept], *concFlag, *concFlag, withPprof)
	if *sluiceSched != "" {
		conf += fmt.Sprintf("\n[process]\ncpu_scheduling = %q\n", *sluiceSched)
	}
	cfg := filepath.Join(dir, "sluice.toml")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "sluice.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	sl := &sluiceProc{done: make(chan struct{})}
	sl.cmd = exec.Command(*sluiceFlag, "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--spool", filepath.Join(dir, "spool"))
	sl.cmd.Stdout, sl.cmd.Stderr = logf, logf
	if err := sl.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { sl.cmd.Wait(); close(sl.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		f, err := os.Open(logf.Name())
		if err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				var rec struct{ Msg, SMTP, HTTP string }
				if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
					sl.smtpAddr, sl.httpAddr = rec.SMTP, rec.HTTP
				}
			}
			f.Close()
		}
		if sl.smtpAddr != "" {
			return sl, nil
		}
		select {
		case <-sl.done:
			b, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("sluice exited before listening:\n%s", b)
		case <-time.After(20 * time.Millisecond):
		}
	}
	sl.stop()
	return nil, errors.New("sluice did not log \"listening\" within 20s")
}

// metrics reads unlabelled samples of sluice's /metrics, in the order
// of names, from one fetch of the page.
func (sl *sluiceProc) metrics(names ...string) ([]float64, error) {
	resp, err := http.Get("http://" + sl.httpAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	page := "\n" + string(b) // every sample line starts after a newline
	vals := make([]float64, len(names))
	for i, name := range names {
		_, rest, ok := strings.Cut(page, "\n"+name+" ")
		if !ok {
			return nil, fmt.Errorf("no %s in /metrics", name)
		}
		v, _, _ := strings.Cut(rest, "\n")
		if vals[i], err = strconv.ParseFloat(v, 64); err != nil {
			return nil, fmt.Errorf("%s in /metrics: %w", name, err)
		}
	}
	return vals, nil
}

// enqueued reads sluice_queue_enqueued_total from /metrics.
func (sl *sluiceProc) enqueued() (int, error) {
	v, err := sl.metrics("sluice_queue_enqueued_total")
	if err != nil {
		return 0, err
	}
	return int(v[0]), nil
}

// fsyncs reads the mean duration of sluice's WAL fsyncs (µs) and the mean
// number of messages each made durable; zeros if /metrics lacks them.
func (sl *sluiceProc) fsyncs() (us, msgs float64) {
	v, err := sl.metrics("sluice_queue_fsync_duration_seconds_sum", "sluice_queue_fsync_duration_seconds_count",
		"sluice_queue_fsync_batch_size_sum", "sluice_queue_fsync_batch_size_count")
	if err != nil || v[1] == 0 || v[3] == 0 {
		return 0, 0
	}
	return v[0] / v[1] * 1e6, v[2] / v[3]
}

// stop asks sluice to shut down (SIGTERM) and kills it after 40 s.
func (sl *sluiceProc) stop() {
	sl.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-sl.done:
	case <-time.After(40 * time.Second):
		log.Printf("sluice did not exit within 40s of SIGTERM; killing it")
		sl.cmd.Process.Kill()
		<-sl.done
	}
}

// memWatch samples the summed PSS of a process (and, with tree, its
// descendants) until stopped.
type memWatch struct {
	pid      int
	tree     bool
	stopc    chan struct{}
	done     chan struct{}
	peakPSS  int64 // KiB
	maxProcs int
	cpu0     time.Duration // the CPU time of the process (or tree) when watching began
}

func watch(pid int, tree bool) *memWatch {
	m := &memWatch{pid: pid, tree: tree, stopc: make(chan struct{}), done: make(chan struct{})}
	m.cpu0 = m.cpuNow()
	go func() {
		defer close(m.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			pids := []int{pid}
			if tree {
				pids = descendants(pid)
			}
			var sum int64
			for _, p := range pids {
				sum += pssKiB(p)
			}
			m.peakPSS = max(m.peakPSS, sum)
			m.maxProcs = max(m.maxProcs, len(pids))
			select {
			case <-m.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// stop returns the peak summed PSS, for one process its VmHWM in MiB, and
// the CPU time (user and system) used while watched.
func (m *memWatch) stop() (pss, hwm float64, procs int, cpu time.Duration) {
	close(m.stopc)
	<-m.done
	if !m.tree {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.pid))
		hwm = float64(field(string(b), "VmHWM:")) / 1024
	}
	return float64(m.peakPSS) / 1024, hwm, m.maxProcs, m.cpuNow() - m.cpu0
}

// cpuNow is the CPU time the process has used, or for a tree (Postfix's
// master and the daemons it runs) what every live process in it has used
// plus what the processes it has reaped used: Postfix's daemons exit and
// are replaced as they reach their max_use, and an exited child's time
// moves to its parent's cutime and cstime when the parent waits for it.
func (m *memWatch) cpuNow() time.Duration {
	if !m.tree {
		return cpuTime(m.pid)
	}
	var sum time.Duration
	for _, p := range descendants(m.pid) {
		sum += cpuTime(p) + reapedCPU(p)
	}
	return sum
}

// cpuTime is the user and system time pid has used, from /proc/PID/stat
// (in clock ticks of 10 ms: USER_HZ is 100 on Linux).
func cpuTime(pid int) time.Duration { return statTicks(pid, 11, 12) }

// reapedCPU is the user and system time of pid's children that it has
// waited for.
func reapedCPU(pid int) time.Duration { return statTicks(pid, 13, 14) }

// statTicks sums two fields of /proc/PID/stat, counted from the one after
// the command name, as a duration.
func statTicks(pid, i, j int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; the fields after it
	// start after its closing parenthesis: utime, stime, cutime and
	// cstime are fields 14 to 17, so the 12th to 15th after the state
	// (field 3).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) <= max(i, j) {
		return 0
	}
	a, _ := strconv.ParseInt(f[i], 10, 64)
	c, _ := strconv.ParseInt(f[j], 10, 64)
	return time.Duration(a+c) * 10 * time.Millisecond
}

// descendants returns pid and every process below it.
func descendants(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		children[pp] = append(children[pp], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

func pssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	return field(string(b), "Pss:")
}

// field returns the number after name in a /proc file of "Name: N kB" lines.
func field(text, name string) int64 {
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// waitPort waits until process pid listens on a TCP port, or exits.
func waitPort(pid int, exited <-chan struct{}, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p := procnet.ListeningPort(pid); p != 0 {
			return p, nil
		}
		select {
		case <-exited:
			return 0, errors.New("exited before listening")
		case <-time.After(10 * time.Millisecond):
		}
	}
	return 0, errors.New("not listening")
}

func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func countFiles(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// tool finds a program on PATH or in the sbin directories, where Debian
// installs Postfix's.
func tool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: install postfix (bench/relay/run does)", name)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseSize(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "KiB"):
		mult, s = 1024, strings.TrimSuffix(s, "KiB")
	case strings.HasSuffix(s, "MiB"):
		mult, s = 1<<20, strings.TrimSuffix(s, "MiB")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func sizeName(n int) string {
	switch {
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n%1024 == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// printMachine writes what the figures depend on to standard error.
func printMachine() {
	uname, _ := exec.Command("uname", "-r").Output()
	pfv := ""
	if p, err := tool("postconf"); err == nil {
		out, _ := exec.Command(p, "-d", "-h", "mail_version").Output()
		pfv = strings.TrimSpace(string(out))
	}
	log.Printf("machine: %d CPUs, kernel %s, %s, Postfix %s, load %s", runtime.NumCPU(),
		strings.TrimSpace(string(uname)), runtime.Version(), pfv, loadavg())
}

// loadavg returns the 1-minute load average: on a shared machine, the
// noise under a figure.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}
