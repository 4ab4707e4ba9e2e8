package smtptest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
)

// Message is one message accepted by a [Sink].
type Message struct {
	From       string    // reverse-path of MAIL, "" for the null sender
	To         []string  // forward-paths of the accepted RCPT commands, in order
	Data       []byte    // the message as received, dot-unstuffed, CRLF line endings
	RemoteAddr string    // the client's address, "host:port"
	Helo       string    // the name the client gave in EHLO or HELO
	TLS        bool      // set when the session was encrypted (STARTTLS)
	SMTPUTF8   bool      // set when MAIL carried the SMTPUTF8 parameter
	Body       string    // the BODY parameter of MAIL, "" if none
	Received   time.Time // when DATA completed
}

func (m Message) clone() Message {
	m.To = append([]string(nil), m.To...)
	m.Data = append([]byte(nil), m.Data...)
	return m
}

// Sink is a recording SMTP server listening on a loopback address. Create
// one with [NewSink] and stop it with [Sink.Close]. All methods are safe for
// concurrent use.
type Sink struct {
	cfg  config
	srv  *smtp.Server
	ln   *countingListener
	done chan struct{} // closed when the serve goroutine returns

	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex    // guards msgs and changed
	msgs    []Message     // accepted messages in arrival order
	changed chan struct{} // closed and replaced whenever msgs grows
}

// NewSink starts a Sink and serves it in a goroutine until Close.
func NewSink(opts ...Option) (*Sink, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.listenAddr == "" {
		return nil, errors.New("smtptest: empty listen address")
	}
	l, err := net.Listen("tcp", cfg.listenAddr)
	if err != nil {
		return nil, fmt.Errorf("smtptest: listen %s: %w", cfg.listenAddr, err)
	}
	s := &Sink{
		cfg:     cfg,
		ln:      &countingListener{Listener: l},
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	s.srv = smtp.NewServer(smtp.BackendFunc(s.newSession))
	s.srv.Domain = cfg.domain
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.TLSConfig = cfg.tls
	s.srv.EnableSMTPUTF8 = cfg.smtpUTF8
	s.srv.EnableDSN = cfg.dsn
	s.srv.ReadTimeout = cfg.readTimeout
	s.srv.WriteTimeout = cfg.readTimeout
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(s.ln)
	}()
	return s, nil
}

// Addr returns the address the sink listens on, "127.0.0.1:PORT".
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Messages returns copies of the accepted messages in arrival order.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.msgs))
	for i, m := range s.msgs {
		out[i] = m.clone()
	}
	return out
}

// Count returns the number of accepted messages.
func (s *Sink) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// WaitFor blocks until the sink has accepted at least n messages or ctx is
// done, in which case it returns an error wrapping ctx.Err().
func (s *Sink) WaitFor(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		got, ch := len(s.msgs), s.changed
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("smtptest: waiting for %d messages, have %d: %w", n, got, ctx.Err())
		}
	}
}

// MaxConcurrent returns the highest number of simultaneous connections the
// sink has seen.
func (s *Sink) MaxConcurrent() int { return s.ln.maxActive() }

// Close stops the sink: it closes the listener and every connection and
// waits for the goroutines serving them. It is idempotent.
func (s *Sink) Close() error {
	s.closeOnce.Do(func() {
		if err := s.srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeErr = fmt.Errorf("smtptest: close: %w", err)
		}
		// go-smtp closes only listeners its Serve has registered, which
		// the serve goroutine may not have done yet.
		s.ln.Close()
		<-s.done
		s.ln.wait()
	})
	return s.closeErr
}

func (s *Sink) record(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
}

// toSMTPError converts a hook's error so that go-smtp writes its code,
// enhanced code and text on the wire.
func toSMTPError(err error) error {
	if err == nil {
		return nil
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	if r, ok := sluice.ReplyOf(err); ok {
		return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Message}
	}
	return err
}
