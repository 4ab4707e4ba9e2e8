package smtptest

import (
	"bytes"
	"io"
	"time"

	"github.com/emersion/go-smtp"
)

// session is one SMTP session of a Sink; go-smtp calls its methods from
// the connection's goroutine only.
type session struct {
	sink *Sink
	conn *smtp.Conn
	msg  Message
}

func (s *Sink) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{sink: s, conn: c}, nil
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if f := ss.sink.cfg.mailFunc; f != nil {
		if err := f(from); err != nil {
			return toSMTPError(err)
		}
	}
	ss.msg = Message{From: from}
	if opts != nil {
		ss.msg.SMTPUTF8 = opts.UTF8
		ss.msg.Body = string(opts.Body)
	}
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if f := ss.sink.cfg.rcptFunc; f != nil {
		if err := f(ss.msg.From, to); err != nil {
			return toSMTPError(err)
		}
	}
	ss.msg.To = append(ss.msg.To, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	m := ss.msg.clone()
	m.Data = buf.Bytes()
	m.RemoteAddr = ss.conn.Conn().RemoteAddr().String()
	m.Helo = ss.conn.Hostname()
	_, m.TLS = ss.conn.TLSConnectionState()
	m.Received = time.Now()
	if f := ss.sink.cfg.dataFunc; f != nil {
		if err := f(&m); err != nil {
			return toSMTPError(err)
		}
	}
	ss.sink.record(m)
	return nil
}

func (ss *session) Reset() { ss.msg = Message{} }

func (ss *session) Logout() error { return nil }
