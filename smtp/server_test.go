package smtp_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/smtp"
)

// untrusted makes the test client (127.0.0.1) an outside client.
var untrusted = smtp.WithTrustedNetworks(netip.MustParsePrefix("192.0.2.0/24"))

func TestGreetingAndExtensions(t *testing.T) {
	_, addr := startServer(t, &recorder{}, smtp.WithMaxMessageBytes(1024))
	c := dial(t, addr)
	c.expect("220 mx.test ESMTP")
	c.send("EHLO client.test")
	lines := c.expect("250 ")
	got := map[string]bool{}
	for _, l := range lines[1:] {
		got[l[4:]] = true
	}
	for _, ext := range []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE 1024", "SMTPUTF8", "DSN"} {
		if !got[ext] {
			t.Errorf("EHLO reply %q lacks %s", lines, ext)
		}
	}
	c.run([]step{{"QUIT", "221 2.0.0"}})
	c.expectClosed()
}

func TestSMTPUTF8CanBeTurnedOff(t *testing.T) {
	_, addr := startServer(t, &recorder{}, smtp.WithSMTPUTF8(false))
	c := dial(t, addr)
	c.expect("220 ")
	c.send("EHLO client.test")
	if lines := c.expect("250 "); strings.Contains(strings.Join(lines, "\n"), "SMTPUTF8") {
		t.Errorf("EHLO reply %q offers SMTPUTF8", lines)
	}
	c.run([]step{{"MAIL FROM:<a@example.org> SMTPUTF8", "504 5.5.4"}})
}

func TestDialogs(t *testing.T) {
	tests := []struct {
		name  string
		opts  []smtp.Option
		steps []step
	}{
		{"relay denied to an untrusted client", []smtp.Option{untrusted}, []step{
			{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
			{"RCPT TO:<bob@example.net>", "554 5.7.1 <bob@example.net>: relay access denied"},
			{"DATA", "502 5.5.1"},
		}},
		{"local domain accepted from an untrusted client", []smtp.Option{untrusted, smtp.WithLocalDomains("Example.COM")}, []step{
			{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
			{"RCPT TO:<bob@EXAMPLE.com>", "250 2.0.0"},
			{"RCPT TO:<bob@example.net>", "554 5.7.1"},
		}},
		{"trusted client relays anywhere", nil, []step{
			{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
			{"RCPT TO:<bob@example.net>", "250 2.0.0"},
		}},
		{"bad sender syntax", nil, []step{
			{"MAIL FROM:<alice..x@example.org>", "553 5.1.7 bad sender address syntax"},
			{"MAIL FROM:<alice@-example.org>", "553 5.1.7 bad sender address syntax"},
			{"RCPT TO:<bob@example.net>", "502 5.5.1"},
		}},
		{"null sender", nil, []step{
			{"MAIL FROM:<>", "250 2.0.0"},
			{"RCPT TO:<bob@example.net>", "250 2.0.0"},
		}},
		{"UTF-8 sender only with SMTPUTF8", nil, []step{
			{"MAIL FROM:<jörg@example.org>", "553 5.1.7"},
			{"MAIL FROM:<jörg@example.org> SMTPUTF8", "250 2.0.0"},
			{"RCPT TO:<jürgen@bücher.example>", "250 2.0.0"},
		}},
		{"bad recipient syntax", nil, []step{
			{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
			{"RCPT TO:<bob..x@example.net>", "553 5.1.3 bad recipient address syntax"},
			{"RCPT TO:<jürgen@example.net>", "553 5.1.3 bad recipient address syntax"},
			{"RCPT TO:<bob@example.net>", "250 2.0.0"},
		}},
		{"too many recipients", []smtp.Option{smtp.WithMaxRecipients(2)}, []step{
			{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
			{"RCPT TO:<a@example.net>", "250 2.0.0"},
			{"RCPT TO:<b@example.net>", "250 2.0.0"},
			{"RCPT TO:<c@example.net>", "452 4.5.3"},
		}},
		{"SIZE parameter over the limit", []smtp.Option{smtp.WithMaxMessageBytes(100)}, []step{
			{"MAIL FROM:<alice@example.org> SIZE=101", "552 5.3.4"},
			{"MAIL FROM:<alice@example.org> SIZE=100", "250 2.0.0"},
		}},
		{"message over the limit", []smtp.Option{smtp.WithMaxMessageBytes(100)}, []step{
			{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
			{"RCPT TO:<bob@example.net>", "250 2.0.0"},
			{"DATA", "354 "},
			{"Subject: big\r\n\r\n" + strings.Repeat("x", 200) + "\r\n.", "552 5.3.4"},
			{"NOOP", "250 2.0.0"},
		}},
		{"queued as the id of the queue", nil, []step{
			{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
			{"RCPT TO:<bob@example.net>", "250 2.0.0"},
			{"DATA", "354 "},
			{"Subject: hi\r\n\r\nhello\r\n.", "250 2.0.0 queued as ID1"},
			{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
			{"RCPT TO:<bob@example.net>", "250 2.0.0"},
			{"DATA", "354 "},
			{"Subject: hi\r\n\r\nagain\r\n.", "250 2.0.0 queued as ID2"},
		}},
		{"pipelined transaction", nil, []step{
			{"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nRCPT TO:<carol@example.net>\r\nDATA", "250 2.0.0"},
			{"", "250 2.0.0"}, {"", "250 2.0.0"}, {"", "354 "},
			{"Subject: hi\r\n\r\nhello\r\n.\r\nQUIT", "250 2.0.0 queued as ID1"},
			{"", "221 2.0.0"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, addr := startServer(t, &recorder{}, tt.opts...)
			dial(t, addr).run(append(hello, tt.steps...))
		})
	}
}

var transaction = []step{
	{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
	{"RCPT TO:<bob@example.net>", "250 2.0.0"},
	{"DATA", "354 "},
}

func TestEnqueueErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string // the whole reply line
	}{
		{"internal error text is not leaked", fmt.Errorf("queue: fsync /var/spool/secret: %w", errors.New("input/output error")),
			"451 4.3.0 temporary failure, please try again later"},
		{"a reply from the queue is sent as is", fmt.Errorf("queue: %w", sluice.NewReply(452, sluice.EnhancedCode{4, 3, 1}, "queue full")),
			"452 4.3.1 queue full"},
		{"a permanent reply from the queue", sluice.NewReply(554, sluice.EnhancedCode{5, 6, 0}, "bad message"),
			"554 5.6.0 bad message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, addr := startServer(t, &recorder{err: tt.err})
			c := dial(t, addr)
			c.run(append(hello, transaction...))
			c.send("Subject: hi\r\n\r\nhello\r\n.")
			lines := c.expect(tt.want[:9])
			if got := lines[len(lines)-1]; got != tt.want {
				t.Errorf("reply %q, want %q", got, tt.want)
			}
			c.run([]step{{"NOOP", "250 2.0.0"}})
		})
	}
}

func TestPanicInSessionAnswers421AndCloses(t *testing.T) {
	_, addr := startServer(t, &recorder{panic: true})
	c := dial(t, addr)
	c.run(append(hello, transaction...))
	c.send("Subject: hi\r\n\r\nhello\r\n.")
	c.expect("421 4.3.0")
	c.expectClosed()

	// The server still serves other clients.
	dial(t, addr).run(hello)
}

func TestMessageAsQueued(t *testing.T) {
	q := &recorder{}
	_, addr := startServer(t, q, smtp.WithLocalDomains("example.com"))
	body := "From: alice@example.org\r\n" +
		"Subject: dots\r\n" +
		"\r\n" +
		".leading dot\r\n" +
		"..two dots\r\n" +
		".\tdot tab\r\n" +
		"last line\r\n"
	stuffed := strings.ReplaceAll("\r\n"+body, "\r\n.", "\r\n..")[2:]
	c := dial(t, addr)
	c.run(append(hello,
		step{"MAIL FROM:<alice@example.org> BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef", "250 2.0.0"},
		step{"RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@example.com", "250 2.0.0"},
		step{"DATA", "354 "},
		step{stuffed + ".", "250 2.0.0 queued as ID1"},
	))

	msgs := q.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages queued, want 1", len(msgs))
	}
	got := msgs[0]
	received, rest, ok := cutReceived(got.body)
	if !ok {
		t.Fatalf("queued body does not start with a Received header:\n%s", got.body)
	}
	if rest != body {
		t.Errorf("queued body after Received =\n%q\nwant\n%q", rest, body)
	}
	for _, line := range strings.Split(strings.TrimSuffix(received, "\r\n"), "\r\n") {
		if len(line) >= 78 {
			t.Errorf("Received header line %q is %d characters, want < 78", line, len(line))
		}
	}
	unfolded := strings.ReplaceAll(received, "\r\n\t", " ")
	re := regexp.MustCompile(`^Received: from client\.test \(\[127\.0\.0\.1\]\) by mx\.test \(sluice\) with ESMTP for <bob@example\.com>; \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n$`)
	if !re.MatchString(unfolded) {
		t.Errorf("Received header %q does not match %v", unfolded, re)
	}

	env := got.env
	wantEnv := sluice.Envelope{
		From:       "alice@example.org",
		Recipients: []sluice.Recipient{{Address: "bob@example.com", Notify: []string{"SUCCESS", "FAILURE"}, ORcpt: "RFC822;bob+x@example.com"}},
		Client:     sluice.ClientInfo{Addr: env.Client.Addr, Helo: "client.test"},
		Received:   env.Received,
		Body:       "8BITMIME",
		EnvID:      "abc+def",
		Ret:        "HDRS",
	}
	if !reflect.DeepEqual(*env, wantEnv) {
		t.Errorf("envelope = %+v\nwant %+v", *env, wantEnv)
	}
	if a := env.Client.Addr.Addr(); a != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("client address %v, want 127.0.0.1", a)
	}
	if env.Received.IsZero() {
		t.Error("envelope has no Received time")
	}
}

// cutReceived splits a message after its first (folded) header field.
func cutReceived(msg string) (field, rest string, ok bool) {
	if !strings.HasPrefix(msg, "Received: ") {
		return "", "", false
	}
	i := 0
	for {
		j := strings.Index(msg[i:], "\r\n")
		if j < 0 {
			return "", "", false
		}
		i += j + 2
		if i >= len(msg) || (msg[i] != ' ' && msg[i] != '\t') {
			return msg[:i], msg[i:], true
		}
	}
}

func verdict(v filter.Verdict, err error) filter.Filter {
	return filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
		return v, err
	})
}

func TestFilters(t *testing.T) {
	body := "Subject: hi\r\n\r\nhello\r\n"
	tests := []struct {
		name      string
		f         filter.Filter
		want      string // the reply line
		wantQueue bool
		wantHdr   string // header field expected between Received and the message
	}{
		{"reject", verdict(filter.Verdict{Action: filter.Reject}, nil), "550 5.7.1 message rejected", false, ""},
		{"reject with the filter's reply", verdict(filter.Verdict{Action: filter.Reject,
			Reply: sluice.NewReply(554, sluice.EnhancedCode{5, 7, 0}, "spam score 12")}, nil), "554 5.7.0 spam score 12", false, ""},
		{"tempfail", verdict(filter.Verdict{Action: filter.Tempfail}, nil), "451 4.7.1 message deferred, try again later", false, ""},
		{"filter error", verdict(filter.Verdict{}, errors.New("spamd: connection refused")),
			"451 4.7.1 filter f unavailable, try again later", false, ""},
		{"discard", verdict(filter.Verdict{Action: filter.Discard}, nil), "250 2.0.0 discarded", false, ""},
		{"accept with a header", verdict(filter.Verdict{Headers: []filter.Header{{Name: "X-Spam-Status", Value: "No,\r\n score=0.1"}}}, nil),
			"250 2.0.0 queued as ID1", true, "X-Spam-Status: No, score=0.1\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var seen string
			spy := filter.FilterFunc(func(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
				b := make([]byte, m.Size)
				_, err := m.Body.ReadAt(b, 0)
				seen = string(b)
				return filter.Verdict{}, err
			})
			chain, err := filter.New(filter.WithFilter("spy", spy), filter.WithFilter("f", tt.f))
			if err != nil {
				t.Fatal(err)
			}
			q := &recorder{}
			_, addr := startServer(t, q, smtp.WithFilters(chain), smtp.WithTempDir(dir))
			c := dial(t, addr)
			c.run(append(hello, transaction...))
			c.send(body + ".")
			lines := c.expect(tt.want[:9])
			if got := lines[len(lines)-1]; got != tt.want {
				t.Errorf("reply %q, want %q", got, tt.want)
			}

			if _, rest, ok := cutReceived(seen); !ok || rest != body {
				t.Errorf("filter saw %q, want Received + %q", seen, body)
			}
			msgs := q.messages()
			if got := len(msgs) == 1; got != tt.wantQueue {
				t.Fatalf("%d messages queued, want queued = %v", len(msgs), tt.wantQueue)
			}
			if tt.wantQueue {
				received, _, _ := cutReceived(seen)
				if want := received + tt.wantHdr + body; msgs[0].body != want {
					t.Errorf("queued %q, want %q", msgs[0].body, want)
				}
			}
			if files, _ := os.ReadDir(dir); len(files) != 0 {
				t.Errorf("temp dir holds %d files after the transaction, want 0", len(files))
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	chain, err := filter.New(filter.WithFilter("f", verdict(filter.Verdict{}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		q    smtp.Enqueuer
		opts []smtp.Option
		want string
	}{
		{"nil enqueuer", nil, nil, "nil Enqueuer"},
		{"empty hostname", &recorder{}, []smtp.Option{smtp.WithHostname("")}, "hostname"},
		{"hostname with space", &recorder{}, []smtp.Option{smtp.WithHostname("a b")}, "hostname"},
		{"zero size", &recorder{}, []smtp.Option{smtp.WithMaxMessageBytes(0)}, "max message bytes"},
		{"zero recipients", &recorder{}, []smtp.Option{smtp.WithMaxRecipients(0)}, "max recipients"},
		{"zero timeout", &recorder{}, []smtp.Option{smtp.WithDataTimeout(0)}, "timeouts"},
		{"bad local domain", &recorder{}, []smtp.Option{smtp.WithLocalDomains("exa mple.com")}, "local domain"},
		{"bad prefix", &recorder{}, []smtp.Option{smtp.WithTrustedNetworks(netip.Prefix{})}, "trusted network"},
		{"missing temp dir", &recorder{}, []smtp.Option{smtp.WithFilters(chain), smtp.WithTempDir("/nonexistent/sluice")}, "temp dir"},
		{"nil logger", &recorder{}, []smtp.Option{smtp.WithLogger(nil)}, "nil logger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := smtp.New(tt.q, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestDataTimeoutClosesConnection(t *testing.T) {
	q := &recorder{}
	_, addr := startServer(t, q, smtp.WithDataTimeout(100*time.Millisecond))
	c := dial(t, addr)
	c.run(append(hello, transaction...))
	c.send("Subject: slow\r\n\r\nRCPT TO:<mallory@example.net>") // then nothing
	c.expect("421 4.4.2")
	c.expectClosed()
	if msgs := q.messages(); len(msgs) != 0 {
		t.Errorf("%d messages queued, want 0", len(msgs))
	}
}
