package smtp

import (
	"bytes"
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
//
// With normalize set, a bare CR or LF is not refused but completed to
// CRLF in the message; it still never ends the data (go-smtp decides that
// before this reader sees the bytes).
//
// How it reads (see Read): go-smtp's DATA reader returns only when the
// caller's buffer is full or the data has ended, so a client that sends
// "text\r\r\n.\r\n" (a bare CR, then what it takes for the end) and waits
// would leave a plain large read waiting for bytes that never come. With a
// yielder (the connection under go-smtp, see [conn.setYield]) the reader
// reads whatever has arrived, in chunks, and checks it at once. Without
// one it reads a byte per call, which is slow but never waits for more
// than the next byte. BDAT's reader (a pipe) returns what each chunk
// holds, so it is read in chunks without a yielder.
type strictReader struct {
	r         io.Reader
	y         yielder // nil: no chunked reads from go-smtp's DATA reader
	chunked   bool    // read in chunks (with y, or from a reader that never waits for a full buffer)
	maxLine   int     // octets per line without CRLF
	maxHops   int     // Received fields in the header
	normalize bool    // complete bare CR and LF to CRLF instead of refusing

	one     [1]byte
	out     [3]byte // what feed hands out for one byte: at most CR, LF and the byte
	pending []byte  // bytes to hand out before reading more (normalize)

	prevCR   bool   // the last byte was a CR
	lineLen  int    // octets of the current line so far, CR excluded
	inBody   bool   // the empty line ending the header was seen
	name     []byte // the first bytes of the current header line, lower-cased
	hops     int
	violated error
}

// A yielder makes reads of the connection under go-smtp return
// errYield instead of blocking (see [conn.setYield]).
type yielder interface {
	setYield(yieldMode)
}

// yieldMode says what the next read of a connection does.
type yieldMode int32

const (
	yieldOff       yieldMode = iota // read as usual
	yieldNow                        // return errYield without reading
	yieldAfterRead                  // read once (waiting as usual), then as yieldNow
)

// errYield is what a connection's read returns in yieldNow mode. It is
// temporary, so crypto/tls keeps the connection usable and a partial
// record buffered, and bufio hands it out once and forgets it.
var errYield error = yieldError{}

type yieldError struct{}

func (yieldError) Error() string   { return "smtp: nothing more buffered" }
func (yieldError) Timeout() bool   { return true }
func (yieldError) Temporary() bool { return true }

// newStrictReader returns a reader checking r. y is the connection under
// go-smtp's DATA reader r, or nil; a BDAT pipe needs none.
func newStrictReader(r io.Reader, y yielder, maxLine, maxHops int, normalize bool) *strictReader {
	_, pipe := r.(*io.PipeReader)
	if pipe {
		// go-smtp reads the connection in another goroutine meanwhile.
		y = nil
	}
	return &strictReader{r: r, y: y, chunked: !normalize && (y != nil || pipe),
		maxLine: maxLine, maxHops: maxHops, normalize: normalize,
		name: make([]byte, 0, len(receivedName))}
}

const receivedName = "received:"

// Read returns checked message data: in chunks of what has arrived when
// it can (see strictReader), else one byte per read of r.
func (s *strictReader) Read(p []byte) (int, error) {
	if s.violated != nil {
		return 0, s.violated
	}
	if !s.chunked {
		return s.readBytes(p)
	}
	for {
		n, err := s.readChunk(p)
		if n > 0 {
			if verr := s.check(p[:n]); verr != nil {
				s.violated = verr
				return 0, verr
			}
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
		if n > 0 || err != nil || len(p) == 0 {
			return n, err
		}
		// Nothing had arrived, and the one read did not complete a TLS
		// record: read again.
	}
}

// readChunk reads into p what go-smtp has buffered and, if that is
// nothing, what one read of the connection brings; it waits only when
// nothing has arrived.
func (s *strictReader) readChunk(p []byte) (int, error) {
	if s.y == nil {
		return s.r.Read(p)
	}
	defer s.y.setYield(yieldOff)
	s.y.setYield(yieldNow)
	n, err := s.r.Read(p)
	if n == 0 && err == errYield {
		s.y.setYield(yieldAfterRead)
		n, err = s.r.Read(p)
	}
	if err == errYield {
		err = nil
	}
	return n, err
}

// readBytes fills p one byte at a time from r, checking each. It is the
// path with normalize set, or without a yielder.
func (s *strictReader) readBytes(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(s.pending) > 0 {
			k := copy(p[n:], s.pending)
			n += k
			s.pending = s.pending[k:]
			continue
		}
		m, err := s.r.Read(s.one[:])
		if m > 0 && !s.normalize {
			// The common case, without the detour through pending: this
			// loop runs once per byte of every message.
			if verr := s.checkByte(s.one[0]); verr != nil {
				s.violated = verr
				return 0, verr
			}
			p[n] = s.one[0]
			n++
		} else if m > 0 {
			out, verr := s.feed(s.one[0])
			if verr != nil {
				s.violated = verr
				return 0, verr
			}
			s.pending = out
		}
		if err == nil {
			continue
		}
		if err == io.EOF && s.prevCR {
			if !s.normalize {
				s.violated = errBareLineEnding
				return 0, s.violated
			}
			s.prevCR = false
			s.pending = append(s.pending, '\n')
			if verr := s.endLine(); verr != nil {
				s.violated = verr
				return 0, verr
			}
			err = nil // hand out the LF, then read the EOF again
		}
		if errors.Is(err, gosmtp.ErrTooLongLine) {
			// go-smtp's own limit, above ours: it dropped the bytes read
			// with the line, so the stream cannot be followed any more.
			s.violated = &contentError{errLineTooLong(s.maxLine).reply, true}
			return 0, s.violated
		}
		if err != nil && len(s.pending) == 0 {
			return n, err
		}
	}
	return n, nil
}

// feed runs one byte through the state machine with normalize set and
// returns the bytes to hand out for it: itself, completed to a CRLF where
// a line ending was bare.
func (s *strictReader) feed(c byte) ([]byte, error) {
	// readBytes calls feed only when pending is empty, so out can be reused.
	out := s.out[:0]
	if s.prevCR && c != '\n' { // a bare CR: complete it, then take c afresh
		out = append(out, '\n')
		if err := s.checkByte('\n'); err != nil {
			return nil, err
		}
	}
	if c == '\n' && !s.prevCR { // a bare LF: put a CR before it
		out = append(out, '\r')
		if err := s.checkByte('\r'); err != nil {
			return nil, err
		}
	}
	out = append(out, c)
	return out, s.checkByte(c)
}

// check runs the state machine over b. In the body, outside a CRLF, it
// looks for the next CR with bytes.IndexByte rather than at each byte:
// the body is most of every message.
func (s *strictReader) check(b []byte) error {
	for len(b) > 0 {
		if s.inBody && !s.prevCR {
			text := b
			i := bytes.IndexByte(b, '\r')
			if i >= 0 {
				text = b[:i]
			}
			if j := bytes.IndexByte(text, '\n'); j >= 0 {
				// As byte by byte: whichever rule the stream breaks first.
				if s.lineLen+j > s.maxLine {
					return errLineTooLong(s.maxLine)
				}
				return errBareLineEnding
			}
			if s.lineLen += len(text); s.lineLen > s.maxLine {
				return errLineTooLong(s.maxLine)
			}
			if i < 0 {
				return nil
			}
			s.prevCR = true
			b = b[i+1:]
			continue
		}
		if err := s.checkByte(b[0]); err != nil {
			return err
		}
		b = b[1:]
	}
	return nil
}

// checkByte runs the state machine over one byte.
func (s *strictReader) checkByte(c byte) error {
	if s.prevCR {
		if c != '\n' {
			return errBareLineEnding
		}
		s.prevCR = false
		return s.endLine()
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
