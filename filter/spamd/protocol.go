package spamd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"unicode"

	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/health"
)

// Command is the spamd request a [Filter] sends.
type Command int

// The commands. The zero value is Symbols.
const (
	// Symbols asks for the score and the names of the rules that hit.
	Symbols Command = iota
	// Report asks for the score and SpamAssassin's textual report.
	Report
	// Headers asks for the score and the message's header as spamd would
	// rewrite it (SpamAssassin 3.4 and later); its X-Spam-* fields are
	// added to the message.
	Headers
)

// String returns the command's name on the wire.
func (c Command) String() string {
	switch c {
	case Symbols:
		return "SYMBOLS"
	case Report:
		return "REPORT"
	case Headers:
		return "HEADERS"
	}
	return "Command(" + strconv.Itoa(int(c)) + ")"
}

func (c Command) valid() bool { return c >= Symbols && c <= Headers }

// maxAnswer bounds what is read from spamd: a report or header block is a
// few KiB; anything near this is not spamd.
const maxAnswer = 4 << 20

// dialError is a failure to reach a replica: nothing was sent, so another
// replica may be tried.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// exchange sends m to the spamd at addr and reads the whole answer, every
// step bound by ctx.
func (f *Filter) exchange(ctx context.Context, addr string, m *filter.Message) (*Result, error) {
	conn, stop, err := health.Dial(ctx, addr)
	if err != nil {
		return nil, &dialError{ctxErr(ctx, err)}
	}
	defer conn.Close()
	defer stop()
	if err := f.send(conn, m); err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("send: %w", err))
	}
	res, err := readAnswer(bufio.NewReader(io.LimitReader(conn, maxAnswer)), f.cfg.command)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	return res, nil
}

// send writes the request. A message without a final line break gets
// CRLF appended: spamd waits for one forever otherwise (seed 004).
func (f *Filter) send(conn net.Conn, m *filter.Message) error {
	addNL, err := lacksNewline(m)
	if err != nil {
		return err
	}
	length := m.Size
	if addNL {
		length += 2
	}
	w := bufio.NewWriter(conn)
	fmt.Fprintf(w, "%s SPAMC/1.5\r\nContent-length: %d\r\n", f.cfg.command, length)
	if f.cfg.user != "" {
		fmt.Fprintf(w, "User: %s\r\n", f.cfg.user)
	}
	w.WriteString("\r\n")
	n, err := io.Copy(w, m.Reader())
	if err != nil {
		return err
	}
	if n != m.Size {
		return fmt.Errorf("message is %d bytes, not %d", n, m.Size)
	}
	if addNL {
		w.WriteString("\r\n")
	}
	// No half-close: Content-length frames the request, and a half-close
	// would hide the missing line break from spamd (it then finishes on
	// EOF) that the real-spamd test must be able to catch.
	return w.Flush()
}

// lacksNewline reports whether m does not end with a line break: an empty
// message too, on which spamd waits as on any other (Content-length: 0).
func lacksNewline(m *filter.Message) (bool, error) {
	if m.Size == 0 {
		return true, nil
	}
	if m.Body == nil {
		return false, nil
	}
	var last [1]byte
	if _, err := m.Body.ReadAt(last[:], m.Size-1); err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read message: %w", err)
	}
	return last[0] != '\n', nil
}

// readAnswer reads "SPAMD/1.1 0 EX_OK", the header lines, a blank line
// and Content-length bytes of content.
func readAnswer(r *bufio.Reader, cmd Command) (*Result, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if err := statusLine(line); err != nil {
		return nil, err
	}
	var (
		res     *Result
		length  = -1
		sawSpam bool
	)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("read answer header: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("answer header %q: no colon", line)
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			length, err = strconv.Atoi(value)
			if err != nil || length < 0 {
				return nil, fmt.Errorf("answer Content-length %q", value)
			}
		case "spam":
			if res, err = parseSpam(value); err != nil {
				return nil, err
			}
			sawSpam = true
		}
	}
	if !sawSpam {
		return nil, errors.New("answer has no Spam header")
	}
	content, err := readContent(r, length)
	if err != nil {
		return nil, err
	}
	fill(res, cmd, content)
	return res, nil
}

// statusLine checks "SPAMD/1.1 0 EX_OK"; any other code is spamd's error.
func statusLine(line string) error {
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "SPAMD/") {
		return fmt.Errorf("answer %q is not spamd's", strings.TrimSpace(line))
	}
	if f[1] != "0" {
		return fmt.Errorf("spamd error %s", strings.Join(f[1:], " "))
	}
	return nil
}

// parseSpam parses "True ; 1003.3 / 5.0".
func parseSpam(v string) (*Result, error) {
	verdict, scores, ok := strings.Cut(v, ";")
	s, req, ok2 := strings.Cut(scores, "/")
	if !ok || !ok2 {
		return nil, fmt.Errorf("answer Spam header %q", v)
	}
	res := &Result{}
	switch strings.ToLower(strings.TrimSpace(verdict)) {
	case "true", "yes":
		res.Spam = true
	case "false", "no":
	default:
		return nil, fmt.Errorf("answer Spam header %q", v)
	}
	var err1, err2 error
	res.Score, err1 = strconv.ParseFloat(strings.TrimSpace(s), 64)
	res.Required, err2 = strconv.ParseFloat(strings.TrimSpace(req), 64)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("answer Spam header %q", v)
	}
	return res, nil
}

// readContent reads length bytes, or to the end when spamd sent no
// Content-length (CHECK).
func readContent(r *bufio.Reader, length int) ([]byte, error) {
	if length < 0 {
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("read answer: %w", err)
		}
		return b, nil
	}
	b := make([]byte, min(length, maxAnswer))
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("read answer content (%d bytes): %w", length, err)
	}
	return b, nil
}

func fill(res *Result, cmd Command, content []byte) {
	text := strings.TrimSpace(string(content))
	switch cmd {
	case Symbols:
		// Rule names are letters, digits and underscores; anything else
		// is not carried into a header field.
		for _, s := range strings.FieldsFunc(text, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }) {
			if ruleName(s) {
				res.Symbols = append(res.Symbols, s)
			}
		}
	case Report:
		res.Report = text
	case Headers:
		res.Headers = spamHeaders(text)
	}
}

func ruleName(s string) bool {
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z') {
			return false
		}
	}
	return s != ""
}

// spamHeaders returns the X-Spam-* fields of a header block, unfolded.
func spamHeaders(block string) []filter.Header {
	var hs []filter.Header
	for _, line := range strings.Split(strings.ReplaceAll(block, "\r\n", "\n"), "\n") {
		if line == "" {
			break // end of the header
		}
		if line[0] == ' ' || line[0] == '\t' {
			if n := len(hs); n > 0 && strings.HasPrefix(strings.ToLower(hs[n-1].Name), "x-spam-") {
				hs[n-1].Value += " " + strings.TrimSpace(line)
			}
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		hs = append(hs, filter.Header{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)})
	}
	out := hs[:0]
	for _, h := range hs {
		if strings.HasPrefix(strings.ToLower(h.Name), "x-spam-") {
			out = append(out, h)
		}
	}
	return out
}

// ctxErr names the context's error when err is the I/O failure that its
// deadline or cancellation caused, so the pool can tell a caller who gave
// up (context.Canceled: not the replica's fault) from a replica that did
// not answer in time.
func ctxErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	cerr := ctx.Err()
	if cerr == nil && errors.Is(err, os.ErrDeadlineExceeded) {
		cerr = context.DeadlineExceeded
	}
	if cerr == nil || errors.Is(err, cerr) {
		return err
	}
	return fmt.Errorf("%w (%w)", cerr, err)
}
