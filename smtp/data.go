package smtp

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

// Data receives the message of the transaction, runs the filters and
// queues it. The 250 reply is returned (as an *SMTPError with code 250,
// which go-smtp writes verbatim) only after Enqueue has made the message
// durable.
func (s *session) Data(r io.Reader) (err error) {
	defer s.recoverPanic(&err)
	if s.env == nil || len(s.env.Recipients) == 0 {
		return toSMTPError(replyNoSender)
	}
	// After Data, go-smtp drains what is left of a message refused early
	// (too large, a line too long) before it writes the reply and resets
	// (Reset). The drain's reads renew the DATA timeout like the
	// message's (stateDrain), so a client still sending gets its 552, not
	// a 421 timeout; but a client that stalls there is timed out and
	// closed like one between commands, since what it sends next is the
	// rest of its message, not commands.
	s.tc.setState(stateData)
	defer s.tc.setState(stateDrain)

	now := time.Now()
	env := s.env.Clone()
	env.Received = now
	env.Client = s.clientInfo()
	received := receivedHeader(env, s.srv.cfg.hostname, now)
	var y yielder
	if s.tc != nil {
		y = s.tc
	}
	body := &dataReader{r: newStrictReader(r, y, s.srv.cfg.maxLineLength, s.srv.cfg.maxHops, s.srv.cfg.normalizeLineEndings)}

	var reply *sluice.Reply
	switch {
	case s.txDiscard:
		reply = s.discard(env, body)
	case s.srv.cfg.filters.Has(filter.StageData):
		reply = s.filterAndEnqueue(env, body, received)
	default:
		reply = s.enqueue(env, body, io.MultiReader(strings.NewReader(received), s.headerBlock(nil), body), s.txQuarantine)
	}
	var content *contentError
	if errors.Is(body.err, gosmtp.ErrDataReset) {
		// RSET during BDAT (RFC 3030: it ends the transfer) or the end of
		// the connection: nothing was queued, the session goes on, and
		// go-smtp answers the RSET; this reply goes nowhere.
		return toSMTPError(replyReadFailed)
	}
	if body.err != nil && !errors.Is(body.err, gosmtp.ErrDataTooLarge) && !errors.As(body.err, &content) {
		// The end of the data was never seen: what the client sends next
		// is message text, not commands. End the session.
		return s.closeWith(replyReadFailed)
	}
	if content != nil && content.closes {
		s.tc.errors++
		return s.closeWith(reply)
	}
	if !reply.Positive() {
		return s.countError(reply)
	}
	return toSMTPError(reply)
}

// enqueue hands the message to the queue and returns the reply for the
// client. A quarantined message is queued held (see [HoldEnqueuer]).
func (s *session) enqueue(env *sluice.Envelope, data *dataReader, msg io.Reader, quarantine bool) *sluice.Reply {
	enqueue := s.srv.q.Enqueue
	if quarantine {
		he, ok := s.srv.q.(HoldEnqueuer)
		if !ok {
			io.Copy(io.Discard, msg)
			return s.failed(env, data, errors.New("smtp: a filter quarantined the message but the queue cannot hold it"))
		}
		enqueue = he.EnqueueHeld
	}
	id, err := enqueue(s.ctx, env, msg)
	if err == nil && data.err == nil {
		s.srv.metrics.message(resultQueued)
		s.log.LogAttrs(s.ctx, slog.LevelInfo, "message queued", slog.String("id", id),
			slog.String("from", env.From), slog.Int("rcpts", len(env.Recipients)),
			slog.Int64("size", data.n), slog.String("helo", env.Client.Helo), slog.Bool("held", quarantine))
		return replyQueued(id)
	}
	if err == nil {
		// The queue took a message we could not read to the end.
		err = fmt.Errorf("smtp: queue accepted a truncated message %s: %w", id, data.err)
	}
	return s.failed(env, data, err)
}

// failed logs why a message was not queued and returns the reply for the
// client: the reply carried by err if any, never the internal error text.
func (s *session) failed(env *sluice.Envelope, data *dataReader, err error) *sluice.Reply {
	var reply *sluice.Reply
	var content *contentError
	switch {
	case errors.Is(data.err, gosmtp.ErrDataTooLarge):
		reply = replyTooLarge
	case errors.As(data.err, &content):
		reply = content.reply
	case data.err != nil:
		reply = replyReadFailed // the client went away or timed out
		err = fmt.Errorf("smtp: read message: %w", data.err)
	case errors.Is(err, syscall.ENOSPC):
		reply = replyNoSpace
	default:
		if r, ok := sluice.ReplyOf(err); ok && !r.Positive() {
			reply = r
		} else {
			reply = replyTempFailure
		}
	}
	s.countReply(reply)
	s.log.LogAttrs(s.ctx, slog.LevelWarn, "message not queued",
		slog.String("from", env.From), slog.Int("rcpts", len(env.Recipients)),
		slog.Int64("size", data.n), slog.String("reply", reply.Error()), slog.Any("error", err))
	return reply
}

func (s *session) countReply(r *sluice.Reply) {
	if r.Permanent() {
		s.srv.metrics.message(resultRejected)
	} else {
		s.srv.metrics.message(resultDeferred)
	}
}

// filterAndEnqueue spools the message to a temporary file, runs the filter
// chain on it and queues it if the chain accepts it.
func (s *session) filterAndEnqueue(env *sluice.Envelope, data *dataReader, received string) *sluice.Reply {
	f, err := os.CreateTemp(s.srv.cfg.tempDir, "sluice-data-*")
	if err != nil {
		return s.failed(env, data, fmt.Errorf("smtp: spool for filters: %w", err))
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	if _, err := io.WriteString(f, received); err != nil {
		return s.failed(env, data, fmt.Errorf("smtp: spool for filters: %w", err))
	}
	if _, err := io.Copy(f, data); err != nil {
		return s.failed(env, data, fmt.Errorf("smtp: spool for filters: %w", err))
	}
	size := int64(len(received)) + data.n

	ctx := s.tx
	if ctx == nil { // not reached: DATA follows MAIL
		ctx = s.ctx
	}
	v := s.srv.cfg.filters.Run(ctx, &filter.Message{Envelope: env.Clone(), Body: f, Size: size})
	switch v.Action {
	case filter.Accept, filter.Quarantine:
	case filter.Discard:
		s.srv.metrics.message(resultDiscarded)
		s.log.LogAttrs(s.ctx, slog.LevelInfo, "message discarded by filter",
			slog.String("from", env.From), slog.Int("rcpts", len(env.Recipients)), slog.Int64("size", data.n))
		return v.Reply
	default:
		s.countReply(v.Reply)
		s.log.LogAttrs(s.ctx, slog.LevelInfo, "message refused by filter",
			slog.String("from", env.From), slog.Int("rcpts", len(env.Recipients)),
			slog.Int64("size", data.n), slog.String("reply", v.Reply.Error()))
		return v.Reply
	}

	msg := io.MultiReader(
		strings.NewReader(received),
		s.headerBlock(v.Headers),
		io.NewSectionReader(f, int64(len(received)), data.n),
	)
	return s.enqueue(env, data, msg, s.txQuarantine || v.Action == filter.Quarantine)
}

// headerBlock returns the header fields the filters of the transaction
// asked for (the earlier stages', then more), ready to prepend.
func (s *session) headerBlock(more []filter.Header) io.Reader {
	var hdrs strings.Builder
	for _, h := range append(append([]filter.Header(nil), s.txHeaders...), more...) {
		if line, ok := formatHeader(h.Name, h.Value); ok {
			hdrs.WriteString(line)
		} else {
			s.log.Warn("filter header dropped: bad field name", slog.String("name", h.Name))
		}
	}
	return strings.NewReader(hdrs.String())
}

// discard reads the message of a transaction a filter asked to discard
// and answers success without queueing it.
func (s *session) discard(env *sluice.Envelope, data *dataReader) *sluice.Reply {
	io.Copy(io.Discard, data)
	if data.err != nil {
		return s.failed(env, data, data.err)
	}
	s.srv.metrics.message(resultDiscarded)
	s.log.LogAttrs(s.ctx, slog.LevelInfo, "message discarded by filter",
		slog.String("from", env.From), slog.Int("rcpts", len(env.Recipients)), slog.Int64("size", data.n))
	return sluice.NewReply(250, sluice.EnhancedCode{2, 0, 0}, "discarded")
}

// dataReader counts the bytes of the message and keeps the first read
// error, so the reply can tell a client problem (too large, gone) from a
// queue problem whatever the queue wraps.
type dataReader struct {
	r   io.Reader
	n   int64
	err error // first error other than io.EOF
}

func (d *dataReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.n += int64(n)
	if err != nil && err != io.EOF && d.err == nil {
		d.err = err
	}
	return n, err
}
