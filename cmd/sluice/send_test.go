package main

import (
	"bytes"
	"context"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

func newSink(t *testing.T, opts ...smtptest.Option) *smtptest.Sink {
	t.Helper()
	s, err := smtptest.NewSink(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut strings.Builder
	code = run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestSendDelivers(t *testing.T) {
	sink := newSink(t)
	body := "Hello,\n.a line starting with a dot\nbye\n"
	code, stdout, stderr := runCmd(t, body, "send", "--server", sink.Addr(),
		"--from", "me@example.org", "--to", "you@example.com", "--to", "other@example.net",
		"--subject", "Grüße", "--body", "-")
	if code != exitOK {
		t.Fatalf("send exited %d: %s", code, stderr)
	}
	if !strings.HasPrefix(stdout, "250 ") {
		t.Errorf("stdout = %q, want the 250 reply", stdout)
	}
	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sink got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "me@example.org" || strings.Join(m.To, ",") != "you@example.com,other@example.net" {
		t.Errorf("envelope = %q -> %q", m.From, m.To)
	}
	if bytes.Contains(bytes.ReplaceAll(m.Data, []byte("\r\n"), nil), []byte("\n")) {
		t.Error("message has a bare LF")
	}
	parsed, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"From", "To", "Subject", "Date", "Message-Id", "Mime-Version", "Content-Type"} {
		if parsed.Header.Get(h) == "" {
			t.Errorf("header %s missing", h)
		}
	}
	if subj, err := new(mime.WordDecoder).DecodeHeader(parsed.Header.Get("Subject")); err != nil || subj != "Grüße" {
		t.Errorf("Subject = %q, %v; want Grüße", subj, err)
	}
	wantBody := strings.ReplaceAll(body, "\n", "\r\n")
	if !bytes.HasSuffix(m.Data, []byte("\r\n\r\n"+wantBody)) {
		t.Errorf("message %q does not end with the body %q", m.Data, wantBody)
	}
}

func TestSendBodyFile(t *testing.T) {
	sink := newSink(t)
	path := filepath.Join(t.TempDir(), "body.txt")
	if err := os.WriteFile(path, []byte("ça va\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCmd(t, "", "send", "--server", sink.Addr(), "--from", "a@example.org", "--to", "b@example.org", "--body", path)
	if code != exitOK {
		t.Fatalf("send exited %d: %s", code, stderr)
	}
	data := string(sink.Messages()[0].Data)
	if !strings.Contains(data, "Content-Transfer-Encoding: quoted-printable\r\n") || !strings.Contains(data, "\r\n\r\n=C3=A7a va\r\n") {
		t.Errorf("non-ASCII body not sent quoted-printable:\n%s", data)
	}
}

func TestSendReportsRefusal(t *testing.T) {
	sink := newSink(t, smtptest.WithRcptFunc(func(from, to string) error {
		return sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no such user")
	}))
	code, stdout, stderr := runCmd(t, "", "send", "--server", sink.Addr(), "--from", "a@example.org", "--to", "nobody@example.org")
	if code != exitFailure {
		t.Errorf("exit = %d, want %d", code, exitFailure)
	}
	if stdout != "" || !strings.Contains(stderr, "550 5.1.1 no such user") {
		t.Errorf("stdout %q, stderr %q: want the 550 reply on stderr", stdout, stderr)
	}
}

func TestSendUsageErrors(t *testing.T) {
	tests := [][]string{
		{"send", "--to", "b@example.org"},
		{"send", "--from", "a@example.org"},
		{"send", "--from", "not an address", "--to", "b@example.org"},
		{"send", "--from", "a@example.org", "--to", "b@example.org", "--server", "nohostport"},
		{"send", "--bogus"},
		{"send", "--from", "a@example.org", "--to", "b@example.org", "stray"},
		{"nosuchcommand"},
		{},
	}
	for _, args := range tests {
		code, _, stderr := runCmd(t, "", args...)
		if code != exitUsage || stderr == "" {
			t.Errorf("sluice %q: exit %d, stderr %q; want %d and a message", args, code, stderr, exitUsage)
		}
	}
}

func TestVersionAndHelp(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"help"}, {"help", "serve"}, {"help", "send"}} {
		code, stdout, _ := runCmd(t, "", args...)
		if code != exitOK || stdout == "" {
			t.Errorf("sluice %q: exit %d, stdout %q", args, code, stdout)
		}
	}
}
