package suppress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// File is a [Store] read from a text file (see the package doc for the
// format). It notices changes to the file by its modification time and
// size, checked at most once per check interval, and [File.Reload] reads
// it at once. It is safe for concurrent use.
type File struct {
	path     string
	interval time.Duration
	now      func() time.Time

	mu      sync.RWMutex // guards the fields below
	entries map[string]List
	stamp   fileStamp
	checked time.Time
	lastErr error // the error of the last failed reload, if any
}

var _ Store = (*File)(nil)

type fileStamp struct {
	mod  time.Time
	size int64
}

// FileOption configures a [File].
type FileOption func(*File)

// WithCheckInterval sets how often a lookup checks whether the file
// changed. 0 checks only on [File.Reload]. Default: 5s.
func WithCheckInterval(d time.Duration) FileOption { return func(f *File) { f.interval = d } }

// WithClock sets the clock of the check interval. Default: time.Now.
func WithClock(now func() time.Time) FileOption { return func(f *File) { f.now = now } }

// OpenFile reads the suppression file at path. It fails if the file
// cannot be read or has a bad line.
func OpenFile(path string, opts ...FileOption) (*File, error) {
	f := &File{path: path, interval: 5 * time.Second, now: time.Now}
	for _, o := range opts {
		o(f)
	}
	if f.interval < 0 || f.now == nil {
		return nil, errors.New("suppress: bad check interval or nil clock")
	}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Reload reads the file again. On error the lists read before stay in
// force and the error names the file and line.
func (f *File) Reload() error {
	st, err := os.Stat(f.path)
	if err != nil {
		return f.failed(fmt.Errorf("suppress: %w", err))
	}
	entries, err := parseFile(f.path)
	if err != nil {
		return f.failed(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries, f.lastErr = entries, nil
	f.stamp = fileStamp{st.ModTime(), st.Size()}
	f.checked = f.now()
	return nil
}

func (f *File) failed(err error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastErr = err
	f.checked = f.now()
	return err
}

// Err returns the error of the last reload, or nil if it succeeded.
func (f *File) Err() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.lastErr
}

// Lookup implements [Store]. A change of the file seen here is loaded
// first; if it does not load, the previous lists answer.
func (f *File) Lookup(ctx context.Context, account, address string) (List, bool, error) {
	f.maybeReload()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if l, ok := f.entries[account+" "+address]; ok {
		return l, true, nil
	}
	l, ok := f.entries["* "+address]
	return l, ok, nil
}

// maybeReload reloads the file if the check interval passed and its stamp
// changed.
func (f *File) maybeReload() {
	if f.interval == 0 {
		return
	}
	f.mu.Lock()
	due := f.now().Sub(f.checked) >= f.interval
	if due {
		f.checked = f.now()
	}
	stamp := f.stamp
	f.mu.Unlock()
	if !due {
		return
	}
	st, err := os.Stat(f.path)
	if err == nil && (fileStamp{st.ModTime(), st.Size()}) == stamp {
		return
	}
	f.Reload() // an error is kept for Err; the old lists stay
}

// parseFile reads the entries of a suppression file, keyed by
// "account address", lower case.
func parseFile(path string) (map[string]List, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("suppress: %w", err)
	}
	defer fh.Close()
	entries := make(map[string]List)
	sc := bufio.NewScanner(fh)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 3 {
			return nil, fmt.Errorf("suppress: %s:%d: want \"account list address\", got %d fields", path, n, len(fields))
		}
		list := List(strings.ToLower(fields[1]))
		if list != Bounce && list != Unsubscribe {
			return nil, fmt.Errorf("suppress: %s:%d: unknown list %q (want bounce or unsubscribe)", path, n, fields[1])
		}
		if !strings.Contains(fields[2], "@") {
			return nil, fmt.Errorf("suppress: %s:%d: %q is not an address", path, n, fields[2])
		}
		entries[strings.ToLower(fields[0])+" "+strings.ToLower(fields[2])] = list
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("suppress: %s: %w", path, err)
	}
	return entries, nil
}
