package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"os"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
)

// addrList is a repeatable flag.
type addrList []string

func (l *addrList) String() string     { return strings.Join(*l, ",") }
func (l *addrList) Set(v string) error { *l = append(*l, v); return nil }

type sendFlags struct {
	server, from, subject, body, helo string
	to                                addrList
	timeout                           time.Duration
}

func sendFlagSet(out io.Writer) (*flag.FlagSet, *sendFlags) {
	f := &sendFlags{}
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&f.server, "server", "127.0.0.1:2525", "SMTP server `address` (host:port)")
	fs.StringVar(&f.from, "from", "", "sender `address` (required)")
	fs.Var(&f.to, "to", "recipient `address` (required; repeat for more)")
	fs.StringVar(&f.subject, "subject", "", "`subject` line")
	fs.StringVar(&f.body, "body", "", "body `file`, or - for standard input (default: an empty body)")
	fs.StringVar(&f.helo, "helo", "localhost", "`name` to give in EHLO")
	fs.DurationVar(&f.timeout, "timeout", time.Minute, "deadline of the whole submission")
	fs.Usage = func() {
		fmt.Fprintln(out, "usage: sluice send --server ADDR --from ADDR --to ADDR [--to ADDR ...] [--subject S] [--body FILE|-]\n\n"+
			"Submit one text message and print the server's final reply.\n\nflags:")
		fs.PrintDefaults()
	}
	return fs, f
}

func runSend(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, f := sendFlagSet(stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if err := f.check(); err != nil {
		fmt.Fprintln(stderr, "sluice send:", err)
		return exitUsage
	}
	body, err := readBody(f.body, stdin)
	if err != nil {
		fmt.Fprintln(stderr, "sluice send:", err)
		return exitFailure
	}
	msg := buildMessage(f, body, time.Now())
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	reply, err := submit(ctx, f, msg)
	if err != nil {
		fmt.Fprintln(stderr, "sluice send:", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, reply)
	return exitOK
}

func (f *sendFlags) check() error {
	var errs []error
	if _, err := sluice.ParseMailbox(f.from, false); err != nil {
		errs = append(errs, fmt.Errorf("--from: %w", err))
	}
	if len(f.to) == 0 {
		errs = append(errs, errors.New("--to: at least one recipient is required"))
	}
	for _, to := range f.to {
		if _, err := sluice.ParseMailbox(to, false); err != nil {
			errs = append(errs, fmt.Errorf("--to: %w", err))
		}
	}
	if err := checkHostPort(f.server, false); err != nil {
		errs = append(errs, fmt.Errorf("--server %q: %w", f.server, err))
	}
	if strings.ContainsAny(f.subject, "\r\n") {
		errs = append(errs, errors.New("--subject: must be one line"))
	}
	if f.timeout <= 0 {
		errs = append(errs, errors.New("--timeout: must be positive"))
	}
	return errors.Join(errs...)
}

func readBody(name string, stdin io.Reader) ([]byte, error) {
	switch name {
	case "":
		return nil, nil
	case "-":
		return io.ReadAll(stdin)
	}
	return os.ReadFile(name)
}

// buildMessage formats an RFC 5322 message with a text/plain body and CRLF
// line endings. A body that is not short-lined ASCII is sent
// quoted-printable, so the message is 7-bit and needs no extension.
func buildMessage(f *sendFlags, body []byte, now time.Time) []byte {
	var b bytes.Buffer
	header := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	header("From", f.from)
	header("To", strings.Join(f.to, ", "))
	header("Subject", mime.QEncoding.Encode("utf-8", f.subject))
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", "<"+randomHex(12)+"@"+sluice.Domain(f.from)+">")
	header("MIME-Version", "1.0")
	text := toCRLF(body)
	if plain7bit(text) {
		header("Content-Type", "text/plain; charset=us-ascii")
		header("Content-Transfer-Encoding", "7bit")
		b.WriteString("\r\n")
		b.Write(text)
		return b.Bytes()
	}
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	qp.Write(text) // writes to a bytes.Buffer do not fail
	qp.Close()
	return b.Bytes()
}

// toCRLF normalises line endings to CRLF and ends the text with one.
func toCRLF(body []byte) []byte {
	s := strings.ReplaceAll(string(body), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

// plain7bit reports whether text is ASCII without NULs and with lines
// within the RFC 5322 limit of 998 characters.
func plain7bit(text []byte) bool {
	for _, line := range bytes.Split(text, []byte("\r\n")) {
		if len(line) > 998 {
			return false
		}
		for _, c := range line {
			if c == 0 || c >= 0x80 {
				return false
			}
		}
	}
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// submit sends msg in one SMTP session and returns the server's reply to
// the end of DATA, such as "250 2.0.0 queued as 01J...".
func submit(ctx context.Context, f *sendFlags, msg []byte) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", f.server)
	if err != nil {
		return "", err
	}
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	// Cancelling ctx (SIGINT) unblocks the session at once.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	c := gosmtp.NewClient(conn)
	defer c.Close()
	timeout := time.Until(deadline)
	c.CommandTimeout, c.SubmissionTimeout = timeout, timeout
	if err := c.Hello(f.helo); err != nil {
		return "", replyError("EHLO", err)
	}
	if err := c.Mail(f.from, nil); err != nil {
		return "", replyError("MAIL FROM", err)
	}
	for _, to := range f.to {
		if err := c.Rcpt(to, nil); err != nil {
			return "", replyError("RCPT TO:<"+to+">", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", replyError("DATA", err)
	}
	if _, err := w.Write(msg); err != nil {
		return "", replyError("message", err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", replyError("end of DATA", err)
	}
	c.Quit() // the message is accepted; a failed QUIT changes nothing
	return "250 " + resp.StatusText, nil
}

// replyError formats a server's refusal as the reply line it sent.
func replyError(stage string, err error) error {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		r := &sluice.Reply{Code: se.Code, Enhanced: sluice.EnhancedCode(se.EnhancedCode), Message: se.Message}
		return fmt.Errorf("%s: %s", stage, r.Error())
	}
	return fmt.Errorf("%s: %w", stage, err)
}
