package parse_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/parse"
)

func message(body string) *filter.Message {
	return &filter.Message{
		Envelope: &sluice.Envelope{From: "a@example.org", Recipients: []sluice.Recipient{{Address: "b@example.com"}}},
		Body:     strings.NewReader(body),
		Size:     int64(len(body)),
	}
}

const multipart = "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n" +
	"--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n" +
	"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n" +
	"--XX--\r\n"

func nested(depth int) string {
	var b strings.Builder
	b.WriteString("From: a@example.org\r\n")
	for i := range depth {
		b.WriteString("Content-Type: multipart/mixed; boundary=B" + string(rune('a'+i)) + "\r\n\r\n--B" + string(rune('a'+i)) + "\r\n")
	}
	b.WriteString("Content-Type: text/plain\r\n\r\nleaf\r\n")
	for i := depth - 1; i >= 0; i-- {
		b.WriteString("--B" + string(rune('a'+i)) + "--\r\n")
	}
	return b.String()
}

func TestCheck(t *testing.T) {
	f, err := parse.New(parse.WithMaxHeaderFields(5), parse.WithMaxDepth(3), parse.WithMaxParts(10), parse.WithMaxHeaderBytes(1024))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		body   string
		reason string // "" for accept, else a substring of the reply
	}{
		{"plain message", "From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n", ""},
		{"multipart with base64", multipart, ""},
		{"unknown charset is not structural", "Content-Type: text/plain; charset=x-nonsense\r\n\r\nhi\r\n", ""},
		{"nesting at the limit", nested(3), ""},
		{"header line without a colon", "From: a@example.org\r\nthis is not a header\r\n\r\nbody\r\n", "header: message: malformed MIME header line"},
		{"header starting with a space", " folded: x\r\n\r\nbody\r\n", "malformed MIME header initial line"},
		{"too many header fields", strings.Repeat("X-A: 1\r\n", 6) + "\r\nbody\r\n", "6 header fields, more than 5"},
		{"header too large", "Subject: " + strings.Repeat("x", 2000) + "\r\n\r\nbody\r\n", "header:"},
		{"multipart never closed", strings.TrimSuffix(multipart, "--XX--\r\n"), "unexpected EOF"},
		{"bad base64", strings.Replace(multipart, "aGVsbG8=", "!!!not base64!!!", 1), "body:"},
		{"nested too deep", nested(4), "nested deeper than 3"},
		{"too many parts", "Content-Type: multipart/mixed; boundary=Z\r\n\r\n" + strings.Repeat("--Z\r\n\r\nx\r\n", 10) + "--Z--\r\n", "more than 10 MIME parts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := f.Check(context.Background(), message(tt.body))
			if err != nil {
				t.Fatalf("Check error %v, want a verdict", err)
			}
			if tt.reason == "" {
				if v.Action != filter.Accept {
					t.Errorf("verdict %v %v, want accept", v.Action, v.Reply)
				}
				return
			}
			if v.Action != filter.Reject || v.Reply.Code != 550 || v.Reply.Enhanced != (sluice.EnhancedCode{5, 6, 0}) ||
				!strings.Contains(v.Reply.Message, tt.reason) {
				t.Errorf("verdict %v %v, want 550 5.6.0 containing %q", v.Action, v.Reply, tt.reason)
			}
		})
	}
}

// TestReadFailureIsAnError: a message that cannot be read is the
// filter's failure (its OnError policy), not the message's fault.
func TestReadFailureIsAnError(t *testing.T) {
	f, _ := parse.New()
	m := message("From: a@example.org\r\n\r\nbody\r\n")
	m.Body = failingReaderAt{}
	if _, err := f.Check(context.Background(), m); err == nil {
		t.Error("Check of an unreadable message returned no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Check(ctx, message(multipart)); !errors.Is(err, context.Canceled) {
		t.Errorf("Check with an ended context: %v, want context.Canceled", err)
	}
	if v, err := f.Check(context.Background(), &filter.Message{Envelope: m.Envelope}); err != nil || v.Action != filter.Accept {
		t.Errorf("Check without a body: %+v %v, want accept", v, err)
	}
}

type failingReaderAt struct{}

func (failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, errors.New("disk error") }

func TestNewValidates(t *testing.T) {
	if _, err := parse.New(parse.WithMaxParts(0)); err == nil {
		t.Error("New accepted a limit of 0")
	}
}

// FuzzCheck: whatever the bytes, Check of an in-memory message never
// fails and never panics: it accepts, or refuses with 550 5.6.0 and a
// reason.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{multipart, nested(3), "From: a\r\n\r\nx\r\n", "x", "", " a: b\r\n\r\n",
		"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n"} {
		f.Add(s)
	}
	p, err := parse.New(parse.WithMaxParts(50), parse.WithMaxDepth(5))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string) {
		v, err := p.Check(context.Background(), message(body))
		if err != nil {
			t.Fatalf("Check error %v on an in-memory message", err)
		}
		switch v.Action {
		case filter.Accept:
		case filter.Reject:
			if v.Reply.Code != 550 || v.Reply.Enhanced != (sluice.EnhancedCode{5, 6, 0}) || v.Reply.Message == "" {
				t.Errorf("refusal %v, want 550 5.6.0 with a reason", v.Reply)
			}
		default:
			t.Errorf("action %v, want accept or reject", v.Action)
		}
	})
}
