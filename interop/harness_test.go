//go:build interop

package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/procnet"
)

// sluiceBin is the binary under test, built once by TestMain.
var sluiceBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sluice-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	sluiceBin = filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-o", sluiceBin, "github.com/sluicemta/sluice/cmd/sluice")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building sluice:", err)
		return 1
	}
	return m.Run()
}

// tool returns the path of an external program. When it is missing the
// test fails if SLUICE_INTEROP=1 (scripts/test promised it) and is skipped
// otherwise.
func tool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	// Debian installs the Postfix test programs in /usr/sbin, which is
	// not on every PATH.
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("SLUICE_INTEROP") == "1" {
		t.Fatalf("%s not found and SLUICE_INTEROP=1: install swaks and postfix (scripts/test does)", name)
	}
	t.Skipf("%s not found; set SLUICE_INTEROP=1 to make this a failure", name)
	return ""
}

// poll calls cond every interval until it returns true or the deadline
// passes; it reports whether cond became true.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logLines collects a process's stderr, line by line.
type logLines struct {
	mu      sync.Mutex // guards partial, lines
	partial []byte
	lines   []string
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
}

func (l *logLines) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// sluiceProc is a running "sluice serve".
type sluiceProc struct {
	cmd      *exec.Cmd
	log      *logLines
	done     chan struct{} // closed when the process has exited
	waitErr  error         // set before done is closed
	config   string        // the configuration file
	smtpAddr string
	httpAddr string
	extra    []string // the addresses of [[smtp.listener]], in order
}

// startSluice runs "sluice serve" on kernel-chosen ports with args added,
// and returns once it has logged the addresses it listens on.
func startSluice(t *testing.T, spool string, args ...string) *sluiceProc {
	t.Helper()
	return startSluiceWith(t, spool, "", args...)
}

// startSluiceWith is startSluice with extra TOML appended to the
// configuration file.
func startSluiceWith(t *testing.T, spool, extraConf string, args ...string) *sluiceProc {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "sluice.toml")
	// Fast retries so a deferred message is tried again within the
	// tests' deadlines.
	conf := "[queue]\nretry_min = \"200ms\"\nretry_max = \"1s\"\nrestart_spread = \"100ms\"\n\n[delivery]\nconnect_timeout = \"5s\"\ncommand_timeout = \"10s\"\n" + extraConf
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	argv := append([]string{"serve", "--config", cfg, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--spool", spool, "--hostname", "sluice.test", "--log-level", "debug"}, args...)
	p := &sluiceProc{cmd: exec.Command(sluiceBin, argv...), config: cfg, log: &logLines{}, done: make(chan struct{})}
	p.cmd.Stderr = p.log
	p.cmd.Stdout = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			for _, l := range p.log.snapshot() {
				t.Logf("sluice: %s", l)
			}
		}
	})
	ok := poll(20*time.Second, func() bool {
		select {
		case <-p.done:
			return true
		default:
		}
		for _, l := range p.log.snapshot() {
			var rec struct {
				Msg, SMTP, HTTP string
				Extra           []string `json:"smtp_listeners"`
			}
			if json.Unmarshal([]byte(l), &rec) == nil && rec.Msg == "listening" {
				p.smtpAddr, p.httpAddr, p.extra = rec.SMTP, rec.HTTP, rec.Extra
				return true
			}
		}
		return false
	})
	if !ok || p.smtpAddr == "" {
		t.Fatalf("sluice serve did not log \"listening\" (exited: %v)\n%s", p.exited(), strings.Join(p.log.snapshot(), "\n"))
	}
	return p
}

func (p *sluiceProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits for a graceful exit, then SIGKILLs.
func (p *sluiceProc) stop(t *testing.T) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.waitErr != nil {
			t.Errorf("sluice serve exited after SIGTERM with %v", p.waitErr)
		}
	case <-time.After(40 * time.Second):
		t.Errorf("sluice serve still running 40s after SIGTERM; killing it")
		p.kill(t)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *sluiceProc) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("sluice serve survived SIGKILL for 10s")
	}
}

// sink is a running Postfix smtp-sink that dumps each message to a file.
type sink struct {
	addr string
	dir  string
}

// startSink runs smtp-sink on a port the kernel chooses. smtp-sink cannot
// report the port it bound, so the test finds it the way ss(8) does: the
// process's socket inodes in /proc/PID/fd, looked up in /proc/PID/net/tcp.
// That avoids both fixed ports and the race of picking a "free" port by
// listening and closing.
func startSink(t *testing.T) *sink {
	t.Helper()
	bin := tool(t, "smtp-sink")
	s := &sink{dir: t.TempDir()}
	args := []string{"-d", s.dir + "/"}
	if os.Geteuid() == 0 {
		// smtp-sink refuses to run as root without a user to switch to;
		// root keeps the dump directory writable.
		args = append(args, "-u", "root")
	}
	args = append(args, "127.0.0.1:0", "256")
	cmd := exec.Command(bin, args...)
	var out logLines
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	var port int
	ok := poll(10*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		port = procnet.ListeningPort(cmd.Process.Pid)
		return port != 0
	})
	if !ok || port == 0 {
		t.Fatalf("smtp-sink did not start listening: %s", strings.Join(out.snapshot(), "\n"))
	}
	s.addr = "127.0.0.1:" + strconv.Itoa(port)
	return s
}

// dumps returns the contents of the messages the sink has written so far.
func (s *sink) dumps(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func (s *sink) count(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// splitDump separates a dump into its header lines (smtp-sink's X-
// annotations removed; line endings are LF in dumps) and its body.
func splitDump(d string) (header []string, body string) {
	h, body, _ := strings.Cut(d, "\n\n")
	for _, l := range strings.Split(h, "\n") {
		switch {
		case strings.HasPrefix(l, "X-Client-Addr:"), strings.HasPrefix(l, "X-Client-Proto:"),
			strings.HasPrefix(l, "X-Helo-Args:"), strings.HasPrefix(l, "X-Mail-Args:"),
			strings.HasPrefix(l, "X-Rcpt-Args:"):
			continue
		}
		header = append(header, l)
	}
	return header, body
}

// withoutReceived drops Received fields (with their continuation lines).
func withoutReceived(header []string) (kept []string, received int) {
	inReceived := false
	for _, l := range header {
		if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
			if !inReceived {
				kept = append(kept, l)
			}
			continue
		}
		inReceived = strings.HasPrefix(strings.ToLower(l), "received:")
		if inReceived {
			received++
			continue
		}
		kept = append(kept, l)
	}
	return kept, received
}

// headerValue returns the first value of field name in a dump.
func headerValue(dump, name string) string {
	header, _ := splitDump(dump)
	prefix := strings.ToLower(name) + ":"
	for _, l := range header {
		if strings.HasPrefix(strings.ToLower(l), prefix) {
			return strings.TrimSpace(l[len(prefix):])
		}
	}
	return ""
}

// messageFile writes msg to a file of its own for swaks --data and returns
// its path.
func messageFile(t *testing.T, msg string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(file, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// swaks sends the message in file dataFile through server and reports
// whether the server acknowledged the end of DATA with 250, with swaks's
// transcript. extra are more swaks options.
func swaks(ctx context.Context, bin, server, from, to, dataFile string, extra ...string) (acked bool, transcript string) {
	args := append([]string{"--server", server, "--from", from, "--to", to,
		"--data", dataFile, "--timeout", "30s", "--helo", "swaks.test"}, extra...)
	cmd := exec.CommandContext(ctx, bin, args...)
	out, _ := cmd.CombinedOutput()
	return dataAcked(string(out)), string(out)
}

// dataAcked reports whether a swaks transcript shows a 250 reply to the
// final "." of DATA.
func dataAcked(transcript string) bool {
	lines := strings.Split(transcript, "\n")
	for i, l := range lines {
		if strings.TrimRight(l, "\r") == " -> ." && i+1 < len(lines) {
			return strings.HasPrefix(lines[i+1], "<-  250")
		}
	}
	return false
}
