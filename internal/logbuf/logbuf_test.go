package logbuf_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/logbuf"
)

// recorder keeps each write it is given.
type recorder struct {
	mu     sync.Mutex
	writes []string
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.writes...)
}

func TestLinesAreWrittenTogether(t *testing.T) {
	var r recorder
	w := logbuf.New(&r, time.Hour, 1<<10, nil)
	for _, l := range []string{"a\n", "b\n", "c\n"} {
		if n, err := w.Write([]byte(l)); n != len(l) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", l, n, err)
		}
	}
	if got := r.get(); len(got) != 0 {
		t.Fatalf("written before a flush: %q", got)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := r.get(); len(got) != 1 || got[0] != "a\nb\nc\n" {
		t.Fatalf("writes %q, want one write of the three lines", got)
	}
}

func TestLimit(t *testing.T) {
	var r recorder
	w := logbuf.New(&r, time.Hour, 100, nil)
	line := strings.Repeat("x", 59) + "\n"
	w.Write([]byte(line))
	w.Write([]byte(line)) // would pass the limit: the first goes out
	if got := r.get(); len(got) != 1 || got[0] != line {
		t.Fatalf("writes %q, want the first line alone", got)
	}
	big := strings.Repeat("y", 150) + "\n"
	w.Write([]byte(big)) // over the limit alone: written at once, after what waited
	if got := r.get(); len(got) != 3 || got[1] != line || got[2] != big {
		t.Fatalf("writes %q, want the second line and then the long one", got)
	}
}

func TestDelay(t *testing.T) {
	var r recorder
	w := logbuf.New(&r, 10*time.Millisecond, 1<<10, nil)
	defer w.Close()
	w.Write([]byte("a\n"))
	w.Write([]byte("b\n"))
	deadline := time.Now().Add(10 * time.Second)
	for len(r.get()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("buffered lines not written 10 s after a 10 ms delay")
		}
		time.Sleep(time.Millisecond) // polling for the timer's write, with a deadline
	}
	if got := r.get(); len(got) != 1 || got[0] != "a\nb\n" {
		t.Fatalf("writes %q, want one write of both lines", got)
	}
	w.Write([]byte("c\n")) // the timer is armed again
	for len(r.get()) == 1 {
		if time.Now().After(deadline) {
			t.Fatal("a line buffered after the first timed flush was never written")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestHandlerFlushesWarnings(t *testing.T) {
	var r recorder
	w := logbuf.New(&r, time.Hour, 1<<16, nil)
	log := slog.New(w.Handler(slog.NewTextHandler(w, nil), slog.LevelWarn)).With("component", "test")
	log.Info("first")
	log.WithGroup("g").Info("second")
	if got := r.get(); len(got) != 0 {
		t.Fatalf("info lines written at once: %q", got)
	}
	log.Warn("third")
	got := strings.Join(r.get(), "")
	i, j, k := strings.Index(got, "msg=first"), strings.Index(got, "msg=second"), strings.Index(got, "msg=third")
	if i < 0 || j < i || k < j {
		t.Fatalf("after a warning the log holds %q, want the three lines in order", got)
	}
}

func TestClose(t *testing.T) {
	var r recorder
	w := logbuf.New(&r, time.Hour, 1<<10, nil)
	w.Write([]byte("a\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("b\n"))
	if got := r.get(); len(got) != 2 || got[0] != "a\n" || got[1] != "b\n" {
		t.Fatalf("writes %q, want a at Close and b at once after it", got)
	}
}

// TestConcurrentWritersKeepLinesWhole: lines from many goroutines come out
// whole, each once.
func TestConcurrentWritersKeepLinesWhole(t *testing.T) {
	var out bytes.Buffer
	var mu sync.Mutex
	w := logbuf.New(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	}), time.Millisecond, 4<<10, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				fmt.Fprintf(w, "goroutine %d line %d %s\n", g, i, strings.Repeat("z", i%97))
			}
		})
	}
	wg.Wait()
	w.Close()
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var g, i int
		if n, _ := fmt.Sscanf(l, "goroutine %d line %d ", &g, &i); n != 2 || l != fmt.Sprintf("goroutine %d line %d %s", g, i, strings.Repeat("z", i%97)) {
			t.Fatalf("damaged line %q", l)
		}
		if seen[l] {
			t.Fatalf("line %q written twice", l)
		}
		seen[l] = true
	}
	if len(seen) != 8*500 {
		t.Fatalf("%d lines written, want %d", len(seen), 8*500)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestTimedFlushErrorIsReported: a write that fails when the delay ends
// has no caller to return to; it goes to onError, not nowhere.
func TestTimedFlushErrorIsReported(t *testing.T) {
	failed := make(chan error, 1)
	w := logbuf.New(writerFunc(func([]byte) (int, error) { return 0, errors.New("disk full") }),
		time.Millisecond, 1<<10, func(err error) { failed <- err })
	defer w.Close()
	w.Write([]byte("a\n"))
	select {
	case err := <-failed:
		if err == nil || err.Error() != "disk full" {
			t.Errorf("onError got %v, want the write's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the timed flush's write error was not reported within 10 s")
	}
}
