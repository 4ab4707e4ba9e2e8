package smtp

import (
	"errors"
	"io"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
)

// contentError is a message that breaks a rule of the content: a bare CR
// or LF, a line too long, too many Received fields. The transaction is
// refused with its reply. After a long line or a loop the session goes
// on, since go-smtp still reads the data to the real end ("\r\n.\r\n").
// After a bare CR or LF the connection is closed (as Postfix and chasquid
// do): the client and the server may no longer agree on where the data
// ends, and go-smtp reads "\r\r\n.\r\n" as data, not as the end.
type contentError struct {
	reply  *sluice.Reply
	closes bool // close the connection after the reply
}

func (e *contentError) Error() string { return "smtp: message refused: " + e.reply.Error() }

var (
	errBareLineEnding = &contentError{sluice.NewReply(550, sluice.EnhancedCode{5, 5, 2},
		"message contains a bare CR or LF; lines must end with CRLF (RFC 5321 section 2.3.8), closing connection"), true}
	errHops = &contentError{sluice.NewReply(554, sluice.EnhancedCode{5, 4, 6},
		"too many Received header fields, mail loop suspected"), false}
)

func errLineTooLong(max int) *contentError {
	return &contentError{sluice.NewReply(550, sluice.EnhancedCode{5, 6, 0},
		"message has a line longer than %d octets (RFC 5322 section 2.1.1)", max), false}
}

// strictReader checks a message as it streams, after go-smtp has removed
// the dot-stuffing and the final ".\r\n" (or, with BDAT, as sent): every
// line ends with CRLF (no bare CR, no bare LF: the SMTP smuggling family,
// CVE-2023-51764 and relatives), no line is longer than maxLine octets
// without its CRLF, and the header has at most maxHops Received fields. At
// the first violation Read returns a *contentError, and keeps returning it.
//
// go-smtp ends the data only at "\r\n.\r\n" (bare LF never starts a line
// for it), so whatever strictReader decides, a DATA command yields at most
// one message. FuzzDataReader checks both properties on the whole server.
// One input escapes the check: go-smtp reads ".\r" followed by a byte
// other than LF, at the start of a line, as that byte alone, so the CR is
// never seen here; the message is queued without it (still one message).
type strictReader struct {
	r       io.Reader
	maxLine int // octets per line without CRLF
	maxHops int // Received fields in the header

	prevCR   bool   // the last byte was a CR
	lineLen  int    // octets of the current line so far, CR excluded
	inBody   bool   // the empty line ending the header was seen
	name     []byte // the first bytes of the current header line, lower-cased
	hops     int
	violated error
}

func newStrictReader(r io.Reader, maxLine, maxHops int) *strictReader {
	return &strictReader{r: r, maxLine: maxLine, maxHops: maxHops, name: make([]byte, 0, len(receivedName))}
}

const receivedName = "received:"

// Read fills p one byte at a time from go-smtp's reader, checking each:
// go-smtp's reader returns only when p is full or the data has ended, so a
// larger read would wait for bytes a client may never send after a bare
// CR ("\r\r\n.\r\n" is not an end for go-smtp), where checking byte by
// byte refuses at once.
func (s *strictReader) Read(p []byte) (int, error) {
	if s.violated != nil {
		return 0, s.violated
	}
	n := 0
	for n < len(p) {
		m, err := s.r.Read(p[n : n+1])
		if m > 0 {
			if verr := s.check(p[n : n+1]); verr != nil {
				s.violated = verr
				return 0, verr
			}
			n++
		}
		if err == io.EOF && s.prevCR {
			s.violated = errBareLineEnding
			return 0, s.violated
		}
		if errors.Is(err, gosmtp.ErrTooLongLine) {
			// go-smtp's own limit, above ours: it dropped the bytes read
			// with the line, so the stream cannot be followed any more.
			s.violated = &contentError{errLineTooLong(s.maxLine).reply, true}
			return 0, s.violated
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// check runs the state machine over b.
func (s *strictReader) check(b []byte) error {
	for _, c := range b {
		if s.prevCR {
			if c != '\n' {
				return errBareLineEnding
			}
			s.prevCR = false
			if err := s.endLine(); err != nil {
				return err
			}
			continue
		}
		switch c {
		case '\r':
			s.prevCR = true
		case '\n':
			return errBareLineEnding
		default:
			s.lineLen++
			if s.lineLen > s.maxLine {
				return errLineTooLong(s.maxLine)
			}
			if !s.inBody && len(s.name) < cap(s.name) {
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				s.name = append(s.name, c)
			}
		}
	}
	return nil
}

// endLine is called at each CRLF: it counts Received fields and notices
// the end of the header.
func (s *strictReader) endLine() error {
	if !s.inBody {
		switch {
		case s.lineLen == 0:
			s.inBody = true
		case string(s.name) == receivedName:
			s.hops++
			if s.hops > s.maxHops {
				return errHops
			}
		}
	}
	s.lineLen = 0
	s.name = s.name[:0]
	return nil
}
