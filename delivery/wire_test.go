package delivery

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/textproto"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// optsBackend is a go-smtp server backend that records the MAIL and RCPT
// parameters it receives.
type optsBackend struct {
	mu    sync.Mutex
	mails []smtp.MailOptions
	rcpts []smtp.RcptOptions
}

func (b *optsBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &optsSession{b}, nil }

type optsSession struct{ b *optsBackend }

func (s *optsSession) Mail(_ string, o *smtp.MailOptions) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.mails = append(s.b.mails, *o)
	return nil
}
func (s *optsSession) Rcpt(_ string, o *smtp.RcptOptions) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.rcpts = append(s.b.rcpts, *o)
	return nil
}
func (s *optsSession) Data(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }
func (s *optsSession) Reset()                 {}
func (s *optsSession) Logout() error          { return nil }

func (b *optsBackend) take() ([]smtp.MailOptions, []smtp.RcptOptions) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m, r := b.mails, b.rcpts
	b.mails, b.rcpts = nil, nil
	return m, r
}

// teeListener keeps a copy of everything its connections read.
type teeListener struct {
	net.Listener
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *teeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &teeConn{Conn: c, l: l}, nil
}

// commands returns the MAIL and RCPT lines read since the last call.
func (l *teeListener) commands() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\r\n") {
		if strings.HasPrefix(line, "MAIL ") || strings.HasPrefix(line, "RCPT ") {
			out = append(out, line)
		}
	}
	l.buf.Reset()
	return out
}

type teeConn struct {
	net.Conn
	l *teeListener
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	c.l.buf.Write(p[:n])
	c.l.mu.Unlock()
	return n, err
}

// TestMailRcptCommandsAsGoSMTP sends the envelopes of a table once with
// go-smtp's client (Mail and Rcpt with mailOptions and rcptOptions, as the
// agent did before it wrote its own commands) and once as the lines of
// mailCommand and rcptCommand, to a go-smtp server: the lines on the wire
// and the parameters the server's backend gets must be the same.
func TestMailRcptCommandsAsGoSMTP(t *testing.T) {
	envelopes := []*sluice.Envelope{
		{From: "a@x.test", Recipients: []sluice.Recipient{{Address: "b@y.test"}}},
		{From: "a@x.test", Ret: "full", EnvID: "id+1=2", Recipients: []sluice.Recipient{
			{Address: "b@y.test", Notify: []string{"success", "FAILURE"}, ORcpt: "rfc822;b+x=y@y.test"},
			{Address: "c@y.test", Notify: []string{"NEVER"}, ORcpt: "utf-8;ü c@y.test"},
			{Address: "d@y.test", ORcpt: "RFC822;bad\x01"},
		}},
		{From: "ü@x.test", SMTPUTF8: true, Ret: "HDRS", EnvID: "with space", Recipients: []sluice.Recipient{
			{Address: "ü@y.test", ORcpt: "UTF-8;ü@y.test", Notify: []string{"delay"}},
		}},
		{From: "", Recipients: []sluice.Recipient{{Address: "b@y.test"}}},
	}
	for _, server := range []struct {
		name           string
		dsn, smtpUTF8  bool
		maxMessageSize int64
	}{
		{"DSN and SMTPUTF8", true, true, 1 << 20},
		{"DSN", true, false, 1 << 20},
		{"neither, no SIZE", false, false, 0},
	} {
		t.Run(server.name, func(t *testing.T) {
			be := &optsBackend{}
			s := smtp.NewServer(be)
			s.Domain, s.EnableDSN, s.EnableSMTPUTF8, s.MaxMessageBytes = "opts.test", server.dsn, server.smtpUTF8, server.maxMessageSize
			s.AllowInsecureAuth = true
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			tl := &teeListener{Listener: ln}
			done := make(chan struct{})
			go func() { defer close(done); s.Serve(tl) }()
			t.Cleanup(func() { s.Close(); <-done })

			for i, env := range envelopes {
				if env.SMTPUTF8 && !server.smtpUTF8 {
					continue // the agent bounces it before MAIL
				}
				msg := queue.NewMessage(env, 1234, nil)
				viaGoSMTP(t, ln.Addr().String(), msg)
				wantLines := tl.commands()
				wantMail, wantRcpt := be.take()
				viaCommands(t, ln.Addr().String(), msg)
				gotLines := tl.commands()
				gotMail, gotRcpt := be.take()
				if len(wantLines) != 1+len(env.Recipients) {
					t.Fatalf("envelope %d: captured %q, want MAIL and %d RCPT lines", i, wantLines, len(env.Recipients))
				}
				if !reflect.DeepEqual(gotLines, wantLines) {
					t.Errorf("envelope %d: lines\n got %q\nwant %q", i, gotLines, wantLines)
				}
				if !reflect.DeepEqual(gotMail, wantMail) || !reflect.DeepEqual(gotRcpt, wantRcpt) {
					t.Errorf("envelope %d: backend got %+v %+v, want %+v %+v", i, gotMail, gotRcpt, wantMail, wantRcpt)
				}
			}
		})
	}
}

func dialClient(t *testing.T, addr string) (net.Conn, *smtp.Client) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := smtp.NewClient(nc)
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return nc, c
}

func viaGoSMTP(t *testing.T, addr string, msg *queue.Message) {
	t.Helper()
	nc, c := dialClient(t, addr)
	defer nc.Close()
	if err := c.Mail(msg.Envelope.From, mailOptions(msg)); err != nil {
		t.Fatal(err)
	}
	for _, r := range msg.Envelope.Recipients {
		if err := c.Rcpt(r.Address, rcptOptions(r)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

func viaCommands(t *testing.T, addr string, msg *queue.Message) {
	t.Helper()
	nc, c := dialClient(t, addr)
	defer nc.Close()
	ext := extensionsOf(c)
	lines := []string{mailCommand(msg, ext)}
	for _, r := range msg.Envelope.Recipients {
		lines = append(lines, rcptCommand(r, ext))
	}
	tr := textproto.NewReader(bufio.NewReader(nc))
	for _, l := range append(lines, "QUIT") {
		if _, err := io.WriteString(nc, l+"\r\n"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := tr.ReadResponse(0); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
	}
}
