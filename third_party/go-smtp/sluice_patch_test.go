package smtp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// The tests of sluice's patch (see SLUICE-PATCH.md): the patched readers
// must hand out exactly what the originals did.

// referenceDataRead is dataReader.Read before the patch: byte by byte.
func referenceDataRead(r *dataReader, b []byte) (n int, err error) {
	const (
		stateBeginLine = iota
		stateDot
		stateDotCR
		stateCR
		stateData
		stateEOF
	)
	for n < len(b) && r.state != stateEOF {
		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		switch r.state {
		case stateBeginLine:
			if c == '.' {
				r.state = stateDot
				continue
			}
			if c == '\r' {
				r.state = stateCR
				break
			}
			r.state = stateData
		case stateDot:
			if c == '\r' {
				r.state = stateDotCR
				continue
			}
			r.state = stateData
		case stateDotCR:
			if c == '\n' {
				r.state = stateEOF
				continue
			}
			r.state = stateData
		case stateCR:
			if c == '\n' {
				r.state = stateBeginLine
				break
			}
			r.state = stateData
		case stateData:
			if c == '\r' {
				r.state = stateCR
			}
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == stateEOF {
		err = io.EOF
	}
	return
}

// trickle hands out its data in reads of at most n octets.
type trickle struct {
	data []byte
	n    int
}

func (t *trickle) Read(b []byte) (int, error) {
	if len(t.data) == 0 {
		return 0, io.EOF
	}
	k := copy(b[:min(len(b), t.n)], t.data)
	t.data = t.data[k:]
	return k, nil
}

// drain reads r with buffers of size bs and returns the data, the error
// that ended it and what is left in the bufio.Reader after it.
func drain(read func([]byte) (int, error), br *bufio.Reader, bs int) ([]byte, error, []byte) {
	var out []byte
	buf := make([]byte, bs)
	var err error
	for i := 0; i < 1<<16 && err == nil; i++ {
		var n int
		n, err = read(buf)
		out = append(out, buf[:n]...)
	}
	rest, _ := io.ReadAll(br)
	return out, err, rest
}

func FuzzPatchedDataReader(f *testing.F) {
	for _, s := range []string{
		"hello\r\n.\r\nQUIT\r\n",
		"..dot\r\n.x\r\n\r\n.\r\nNOOP\r\n",
		"a\r\r\n.\r\r\nb\r\n.\r\n",
		"no end\r\n",
		"bare\nlf\n.\n\r\n.\r\n",
	} {
		f.Add([]byte(s), uint8(3), uint8(16))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk, bufSize uint8) {
		bs := int(bufSize%64) + 1
		newReader := func() (*dataReader, *bufio.Reader) {
			br := bufio.NewReaderSize(&trickle{data, int(chunk%32) + 1}, 16)
			return &dataReader{r: br}, br
		}
		r1, br1 := newReader()
		want, wantErr, wantRest := drain(func(b []byte) (int, error) { return referenceDataRead(r1, b) }, br1, bs)
		r2, br2 := newReader()
		got, gotErr, gotRest := drain(r2.Read, br2, bs)
		if !bytes.Equal(got, want) || gotErr != wantErr || !bytes.Equal(gotRest, wantRest) {
			t.Fatalf("patched: %q, %v, rest %q; original: %q, %v, rest %q", got, gotErr, gotRest, want, wantErr, wantRest)
		}
	})
}

func FuzzPatchedLineLimitReader(f *testing.F) {
	f.Add([]byte("short\nlines\n"), uint8(5), uint8(3))
	f.Add([]byte("a much longer line\nx\n"), uint8(7), uint8(4))
	f.Fuzz(func(t *testing.T, data []byte, limit, chunk uint8) {
		lim := int(limit%40) + 1
		reference := func(r *lineLimitReader, b []byte) (int, error) {
			if r.curLineLength > r.LineLimit && r.LineLimit > 0 {
				return 0, ErrTooLongLine
			}
			n, err := r.R.Read(b)
			if err != nil {
				return n, err
			}
			for _, chr := range b[:n] {
				if chr == '\n' {
					r.curLineLength = 0
				}
				r.curLineLength++
				if r.curLineLength > r.LineLimit {
					return 0, ErrTooLongLine
				}
			}
			return n, nil
		}
		r1 := &lineLimitReader{R: &trickle{data, int(chunk%16) + 1}, LineLimit: lim}
		r2 := &lineLimitReader{R: &trickle{data, int(chunk%16) + 1}, LineLimit: lim}
		buf1, buf2 := make([]byte, 64), make([]byte, 64)
		for i := 0; i < 1<<16; i++ {
			n1, err1 := reference(r1, buf1)
			n2, err2 := r2.Read(buf2)
			if n1 != n2 || err1 != err2 || !bytes.Equal(buf1[:n1], buf2[:n2]) {
				t.Fatalf("read %d: patched %q, %v; original %q, %v", i, buf2[:n2], err2, buf1[:n1], err1)
			}
			if err1 != nil {
				// ErrTooLongLine is sticky; EOF stays EOF.
				n1, err1 = reference(r1, buf1)
				n2, err2 = r2.Read(buf2)
				if n1 != n2 || err1 != err2 {
					t.Fatalf("after the error: patched %d, %v; original %d, %v", n2, err2, n1, err1)
				}
				return
			}
		}
	})
}

// BenchmarkDataReader reads a 100 KiB message of 78-octet lines (76
// octets and CRLF) through the patched reader.
func BenchmarkDataReader(b *testing.B) {
	line := strings.Repeat("x", 76) + "\r\n"
	msg := []byte(strings.Repeat(line, 100*1024/len(line)) + ".\r\n")
	buf := make([]byte, 32*1024)
	b.SetBytes(int64(len(msg)))
	for i := 0; i < b.N; i++ {
		r := &dataReader{r: bufio.NewReader(bytes.NewReader(msg))}
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// referenceWriteResponse is writeResponse's formatting before the patch.
func referenceWriteResponse(w io.Writer, code int, enhCode EnhancedCode, text ...string) {
	if enhCode == EnhancedCodeNotSet {
		cat := code / 100
		switch cat {
		case 2, 4, 5:
			enhCode = EnhancedCode{cat, 0, 0}
		default:
			enhCode = NoEnhancedCode
		}
	}
	text = strings.Split(strings.Join(text, "\n"), "\n")
	lastLineIndex := len(text) - 1
	for i := 0; i < lastLineIndex; i++ {
		fmt.Fprintf(w, "%d-%v\r\n", code, text[i])
	}
	if enhCode == NoEnhancedCode {
		fmt.Fprintf(w, "%d %v\r\n", code, text[lastLineIndex])
	} else {
		fmt.Fprintf(w, "%d %v.%v.%v %v\r\n", code, enhCode[0], enhCode[1], enhCode[2], text[lastLineIndex])
	}
}

// deadlineConn records the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	w         bytes.Buffer
	deadlines int
}

func (c *deadlineConn) Write(p []byte) (int, error)        { return c.w.Write(p) }
func (c *deadlineConn) SetWriteDeadline(t time.Time) error { c.deadlines++; return nil }

func newResponseConn(timeout time.Duration, bufSize int) (*Conn, *deadlineConn) {
	dc := &deadlineConn{}
	c := &Conn{conn: dc, server: &Server{WriteTimeout: timeout}}
	c.text = textproto.NewConn(struct {
		io.Reader
		io.Writer
		io.Closer
	}{strings.NewReader(""), dc, io.NopCloser(nil)})
	c.text.W = bufio.NewWriterSize(dc, bufSize)
	return c, dc
}

// TestWriteResponseAsBefore: the patched writeResponse writes what fmt
// did, and sets the write deadline only when the reply does not fit in
// the buffer (and so is partly written to the connection at once).
func TestWriteResponseAsBefore(t *testing.T) {
	long := strings.Repeat("x", 300)
	for _, tt := range []struct {
		code int
		enh  EnhancedCode
		text []string
	}{
		{250, EnhancedCodeNotSet, []string{"OK"}},
		{250, NoEnhancedCode, []string{"mx.test Hello", "PIPELINING", "8BITMIME", "SIZE 1000"}},
		{354, NoEnhancedCode, []string{"Go ahead. End your data with <CR><LF>.<CR><LF>"}},
		{550, EnhancedCode{5, 7, 1}, []string{"first\nsecond", "third"}},
		{421, EnhancedCode{4, 0, 0}, nil},
		{334, NoEnhancedCode, []string{""}},
		{220, EnhancedCodeNotSet, []string{"mx.test ESMTP Service Ready"}},
		{452, EnhancedCode{4, 5, 3}, []string{long}},
		{250, EnhancedCodeNotSet, []string{"a\n"}},
	} {
		var want bytes.Buffer
		referenceWriteResponse(&want, tt.code, tt.enh, tt.text...)
		for _, bufSize := range []int{16, 4096} {
			c, dc := newResponseConn(time.Minute, bufSize)
			c.writeResponse(tt.code, tt.enh, tt.text...)
			c.text.W.Flush()
			if dc.w.String() != want.String() {
				t.Errorf("writeResponse(%d, %v, %q) wrote %q, want %q", tt.code, tt.enh, tt.text, dc.w.String(), want.String())
			}
			wantDeadline := 0
			if want.Len() > bufSize {
				wantDeadline = 1
			}
			if dc.deadlines != wantDeadline {
				t.Errorf("writeResponse(%d, %q) with a %d-byte buffer set %d write deadlines, want %d", tt.code, tt.text, bufSize, dc.deadlines, wantDeadline)
			}
		}
	}
}

// BenchmarkWriteResponse: a one-line reply, as to MAIL, RCPT and the
// final dot.
func BenchmarkWriteResponse(b *testing.B) {
	c, dc := newResponseConn(time.Minute, 4096)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.writeResponse(250, EnhancedCode{2, 0, 0}, "OK: queued as 06H0BU7564U5DJ4D7S3G")
		c.text.W.Flush()
		dc.w.Reset()
	}
}
