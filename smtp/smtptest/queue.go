package smtptest

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/sluicemta/sluice"
)

// Queue is an in-memory queue for tests of sluice's acceptor: it
// implements the acceptor's Enqueuer (smtp.Enqueuer) by keeping every
// message it is given, with no durability at all. Its zero value is
// ready to use.
type Queue struct {
	mu   sync.Mutex // guards msgs
	msgs []Queued
}

// Queued is a message a [Queue] was given.
type Queued struct {
	ID       string
	Envelope *sluice.Envelope
	Body     string
}

// Enqueue keeps the message and returns its ID ("ID1", "ID2", ...).
func (q *Queue) Enqueue(_ context.Context, env *sluice.Envelope, body io.Reader) (string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	id := fmt.Sprintf("ID%d", len(q.msgs)+1)
	q.msgs = append(q.msgs, Queued{ID: id, Envelope: env.Clone(), Body: string(b)})
	return id, nil
}

// Messages returns the messages queued so far, oldest first.
func (q *Queue) Messages() []Queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Queued(nil), q.msgs...)
}
