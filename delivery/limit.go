package delivery

import (
	"context"
	"strings"
	"sync"
)

// destLimiter caps the sessions open at once to each destination (a
// recipient domain, or the smarthost). Semaphores exist only while in
// use, so the map stays as small as the set of busy destinations. It is
// safe for concurrent use.
type destLimiter struct {
	max int

	mu   sync.Mutex // guards sems and each destSem's users
	sems map[string]*destSem
}

type destSem struct {
	slots chan struct{}
	users int // holders and waiters
}

func newDestLimiter(max int) *destLimiter {
	return &destLimiter{max: max, sems: make(map[string]*destSem)}
}

// acquire waits for a slot for dest and returns the function that gives
// it back, or ctx's error.
func (l *destLimiter) acquire(ctx context.Context, dest string) (func(), error) {
	dest = strings.ToLower(dest)
	l.mu.Lock()
	s, ok := l.sems[dest]
	if !ok {
		s = &destSem{slots: make(chan struct{}, l.max)}
		l.sems[dest] = s
	}
	s.users++
	l.mu.Unlock()
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots; l.leave(dest, s) }, nil
	case <-ctx.Done():
		l.leave(dest, s)
		return nil, ctx.Err()
	}
}

func (l *destLimiter) leave(dest string, s *destSem) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.users--
	if s.users == 0 {
		delete(l.sems, dest)
	}
}
