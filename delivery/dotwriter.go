package delivery

import (
	"bufio"
	"bytes"
)

// dotWriter writes a message body as the text of DATA (RFC 5321 section
// 4.5.2): a line that starts with "." gets another one, a bare LF becomes
// CRLF, and Close ends the body with CRLF "." CRLF. Its output is exactly
// that of net/textproto's DotWriter (FuzzDotWriter checks it), bare CR
// quirks included, but it works on runs of lines rather than byte by
// byte: textproto's writer calls bufio.Writer.WriteByte for every byte,
// which was 16% of sluice's CPU relaying 100 KiB messages. A queued body
// always has CRLF line endings (the acceptor refuses bare CR and LF), so
// for the usual body one Write is one copy.
type dotWriter struct {
	w     *bufio.Writer
	state dotState
}

type dotState int

const (
	dotBegin     dotState = iota // nothing written yet
	dotLineStart                 // after an LF
	dotData                      // inside a line
	dotCR                        // after a CR that an LF would complete
)

func newDotWriter(w *bufio.Writer) *dotWriter { return &dotWriter{w: w} }

// Write writes p, escaped. Like textproto's writer it treats an LF as the
// end of a line whether or not a CR came before it, and a CR as part of
// the line end only when the byte before it did not itself complete a
// CR (so "\r\r\n" is a CR and a bare LF).
func (d *dotWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if d.state == dotBegin || d.state == dotLineStart {
		d.state = dotData
		if p[0] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				return 0, err
			}
		}
	}
	cr := d.state == dotCR // the state at p[from]
	start := 0             // p[:start] is written
	from := 0              // the scan for the next LF starts here
	for {
		j := bytes.IndexByte(p[from:], '\n')
		if j < 0 {
			break
		}
		j += from
		if !endsWithCR(p[from:j], cr) { // a bare LF: add the CR
			if _, err := d.w.Write(p[start:j]); err != nil {
				return start, err
			}
			if _, err := d.w.WriteString("\r\n"); err != nil {
				return j, err
			}
			start = j + 1
		}
		from, cr = j+1, false
		if from == len(p) {
			if _, err := d.w.Write(p[start:]); err != nil {
				return start, err
			}
			d.state = dotLineStart
			return len(p), nil
		}
		if p[from] == '.' {
			if _, err := d.w.Write(p[start:from]); err != nil {
				return start, err
			}
			if err := d.w.WriteByte('.'); err != nil {
				return from, err
			}
			start = from
		}
	}
	if _, err := d.w.Write(p[start:]); err != nil {
		return start, err
	}
	d.state = dotData
	if endsWithCR(p[from:], cr) {
		d.state = dotCR
	}
	return len(p), nil
}

// endsWithCR reports whether the state after s is "after a CR", given
// that state before s (cr). In textproto's state machine a CR read after
// a CR that was part of a line end does not start a line end itself, so
// what counts is the parity of the run of CRs at the end of s.
func endsWithCR(s []byte, cr bool) bool {
	n := 0
	for n < len(s) && s[len(s)-1-n] == '\r' {
		n++
	}
	if n == len(s) { // the run reaches back to the state before s
		return cr != (n%2 == 1)
	}
	return n%2 == 1
}

// Close ends the body: a CRLF if the last line lacks one, then "." CRLF.
// It flushes the buffer.
func (d *dotWriter) Close() error {
	var end string
	switch d.state {
	case dotLineStart:
		end = ".\r\n"
	case dotCR:
		end = "\n.\r\n"
	default: // an empty body, as textproto, gets an empty line
		end = "\r\n.\r\n"
	}
	d.state = dotLineStart
	if _, err := d.w.WriteString(end); err != nil {
		return err
	}
	return d.w.Flush()
}
