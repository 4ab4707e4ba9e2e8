package delivery_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/queue"
)

const original = "From: a@x.test\r\nSubject: original\r\nMessage-ID: <m1@x.test>\r\n\r\nsecret body\r\n"

func bounce(t *testing.T, e env, msg *queue.Message, failed ...queue.Failure) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.agent.Bounce(ctx, msg, failed)
}

type dsnPart struct {
	contentType string
	params      map[string]string
	body        string
}

// parseDSN reads a notification back with go-message.
func parseDSN(t *testing.T, raw []byte) (message.Header, []dsnPart) {
	t.Helper()
	ent, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse notification: %v", err)
	}
	mr := ent.MultipartReader()
	if mr == nil {
		t.Fatal("notification is not multipart")
	}
	var parts []dsnPart
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct, params, _ := p.Header.ContentType()
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, dsnPart{ct, params, string(b)})
	}
	return ent.Header, parts
}

// statusGroups splits a message/delivery-status body into its field groups.
func statusGroups(t *testing.T, body string) []textproto.Header {
	t.Helper()
	var out []textproto.Header
	for _, block := range strings.Split(strings.TrimSpace(body), "\r\n\r\n") {
		h, err := textproto.ReadHeader(bufioReader(block + "\r\n\r\n"))
		if err != nil {
			t.Fatalf("delivery-status block %q: %v", block, err)
		}
		out = append(out, h)
	}
	return out
}

func TestBounceBuildsDSN(t *testing.T) {
	e := newAgent(t, delivery.WithResolvers("127.0.0.1:53"))
	msg := newMessage(original, "a@x.test", "b@y.test", "c@y.test")
	msg.Envelope.EnvID = "ENV42"
	err := bounce(t, e, msg,
		queue.Failure{
			Recipient: sluice.Recipient{Address: "b@y.test", ORcpt: "rfc822;b@y.test"},
			Reply:     sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no such user"),
		},
		queue.Failure{
			Recipient: sluice.Recipient{Address: "c@y.test"},
			Reply:     sluice.NewReply(451, sluice.EnhancedCode{4, 4, 1}, "connection refused"),
			Expired:   true,
		},
	)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.dsn.envs) != 1 {
		t.Fatalf("got %d notifications, want 1", len(e.dsn.envs))
	}
	env := e.dsn.envs[0]
	if env.From != "" || len(env.Recipients) != 1 || env.Recipients[0].Address != "a@x.test" || env.Received.IsZero() {
		t.Errorf("notification envelope %+v, want <> -> a@x.test", env)
	}
	h, parts := parseDSN(t, e.dsn.msgs[0])
	ct, params, _ := h.ContentType()
	for k, want := range map[string]string{
		"Content-Type-value": "multipart/report", "report-type": "delivery-status",
		"From": "Mail Delivery System <MAILER-DAEMON@mta.test>", "To": "<a@x.test>",
		"Subject": "Undelivered Mail Returned to Sender", "Auto-Submitted": "auto-replied",
		"Mime-Version": "1.0",
	} {
		var got string
		switch k {
		case "Content-Type-value":
			got = ct
		case "report-type":
			got = params[k]
		default:
			got = h.Get(k)
		}
		if got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if h.Get("Date") == "" || h.Get("Message-Id") == "" {
		t.Error("notification lacks Date or Message-ID")
	}
	if len(parts) != 3 {
		t.Fatalf("got %d parts, want 3", len(parts))
	}
	if parts[0].contentType != "text/plain" || !strings.Contains(parts[0].body, "<b@y.test>: 550 5.1.1 no such user") {
		t.Errorf("text part %q %q", parts[0].contentType, parts[0].body)
	}
	if parts[1].contentType != "message/delivery-status" {
		t.Fatalf("second part is %q", parts[1].contentType)
	}
	groups := statusGroups(t, parts[1].body)
	if len(groups) != 3 {
		t.Fatalf("got %d delivery-status groups, want 3", len(groups))
	}
	want := []map[string]string{
		{"Reporting-MTA": "dns; mta.test", "Original-Envelope-Id": "ENV42"},
		{"Final-Recipient": "rfc822; b@y.test", "Original-Recipient": "rfc822;b@y.test", "Action": "failed",
			"Status": "5.1.1", "Diagnostic-Code": "smtp; 550 5.1.1 no such user"},
		{"Final-Recipient": "rfc822; c@y.test", "Action": "failed", "Status": "4.4.7",
			"Diagnostic-Code": "smtp; 451 4.4.1 connection refused"},
	}
	for i, fields := range want {
		for k, v := range fields {
			if got := groups[i].Get(k); got != v {
				t.Errorf("group %d %s = %q, want %q", i, k, got, v)
			}
		}
	}
	if groups[0].Get("Arrival-Date") == "" {
		t.Error("no Arrival-Date")
	}
	if parts[2].contentType != "text/rfc822-headers" || !strings.Contains(parts[2].body, "Subject: original") ||
		strings.Contains(parts[2].body, "secret body") {
		t.Errorf("headers part %q %q, want the original header only", parts[2].contentType, parts[2].body)
	}
}

func TestBounceRetFull(t *testing.T) {
	e := newAgent(t, delivery.WithResolvers("127.0.0.1:53"))
	msg := newMessage(original, "a@x.test", "b@y.test")
	msg.Envelope.Ret = "FULL"
	if err := bounce(t, e, msg, queue.Failure{Recipient: msg.Envelope.Recipients[0],
		Reply: sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no")}); err != nil {
		t.Fatal(err)
	}
	_, parts := parseDSN(t, e.dsn.msgs[0])
	if len(parts) != 3 || parts[2].contentType != "message/rfc822" || parts[2].body != original {
		t.Errorf("third part %q %q, want message/rfc822 with the whole original", parts[2].contentType, parts[2].body)
	}
}

func TestBounceSuppressed(t *testing.T) {
	fail := func(notify ...string) queue.Failure {
		return queue.Failure{Recipient: sluice.Recipient{Address: "b@y.test", Notify: notify},
			Reply: sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no")}
	}
	tests := []struct {
		name string
		from string
		f    queue.Failure
		want int
	}{
		{"null sender", "", fail(), 0},
		{"NOTIFY=NEVER", "a@x.test", fail("NEVER"), 0},
		{"NOTIFY=SUCCESS", "a@x.test", fail("SUCCESS"), 0},
		{"NOTIFY=FAILURE,DELAY", "a@x.test", fail("FAILURE", "DELAY"), 1},
		{"default", "a@x.test", fail(), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newAgent(t, delivery.WithResolvers("127.0.0.1:53"))
			if err := bounce(t, e, newMessage(original, tt.from, "b@y.test"), tt.f); err != nil {
				t.Fatal(err)
			}
			if got := len(e.dsn.envs); got != tt.want {
				t.Errorf("got %d notifications, want %d", got, tt.want)
			}
		})
	}
}

func TestBounceEnqueueErrorReturned(t *testing.T) {
	e := newAgent(t, delivery.WithResolvers("127.0.0.1:53"))
	e.dsn.err = errors.New("disk full")
	err := bounce(t, e, newMessage(original, "a@x.test", "b@y.test"),
		queue.Failure{Recipient: sluice.Recipient{Address: "b@y.test"}, Reply: sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no")})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("got %v, want the Enqueue error", err)
	}
}

func TestNotifyDelay(t *testing.T) {
	delayed := func(notify ...string) queue.Failure {
		return queue.Failure{Recipient: sluice.Recipient{Address: "b@y.test", Notify: notify}, Delayed: true,
			Reply: sluice.NewReply(451, sluice.EnhancedCode{4, 4, 1}, "connection refused")}
	}
	tests := []struct {
		name string
		f    queue.Failure
		want int
	}{
		{"default NOTIFY", delayed(), 1},
		{"NOTIFY=DELAY", delayed("DELAY"), 1},
		{"NOTIFY=FAILURE", delayed("FAILURE"), 0},
		{"NOTIFY=NEVER", delayed("NEVER"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newAgent(t, delivery.WithResolvers("127.0.0.1:53"))
			msg := newMessage(original, "a@x.test", "b@y.test")
			msg.Envelope.Ret = "FULL" // a delay quotes the header only
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := e.agent.NotifyDelay(ctx, msg, []queue.Failure{tt.f}); err != nil {
				t.Fatal(err)
			}
			if got := len(e.dsn.envs); got != tt.want {
				t.Fatalf("got %d notifications, want %d", got, tt.want)
			}
			if tt.want == 0 {
				return
			}
			h, parts := parseDSN(t, e.dsn.msgs[0])
			if got := h.Get("Subject"); !strings.Contains(got, "Delayed") {
				t.Errorf("Subject %q, want a delay notice", got)
			}
			if len(parts) != 3 || parts[1].contentType != "message/delivery-status" || parts[2].contentType != "text/rfc822-headers" {
				t.Fatalf("parts %+v, want text, delivery-status, headers", parts)
			}
			g := statusGroups(t, parts[1].body)[1]
			for k, want := range map[string]string{"Action": "delayed", "Status": "4.4.1", "X-Sluice-Category": "network"} {
				if got := g.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if strings.Contains(parts[2].body, "secret body") {
				t.Error("a delay notice quoted the body")
			}
		})
	}
}

func TestBounceCarriesCategory(t *testing.T) {
	e := newAgent(t, delivery.WithResolvers("127.0.0.1:53"))
	msg := newMessage(original, "a@x.test", "b@y.test")
	if err := bounce(t, e, msg, queue.Failure{Recipient: msg.Envelope.Recipients[0],
		Reply: sluice.NewReply(554, sluice.EnhancedCode{5, 7, 1}, "rejected: your IP is listed at zen.spamhaus.org")}); err != nil {
		t.Fatal(err)
	}
	_, parts := parseDSN(t, e.dsn.msgs[0])
	if got := statusGroups(t, parts[1].body)[1].Get("X-Sluice-Category"); got != "reputation" {
		t.Errorf("X-Sluice-Category = %q, want reputation", got)
	}
	if !strings.Contains(parts[0].body, "(reason: reputation)") {
		t.Errorf("text part %q does not name the reason", parts[0].body)
	}
}

func TestOwnNotificationNeverBouncedBack(t *testing.T) {
	e := newAgent(t, delivery.WithResolvers("127.0.0.1:53"))
	msg := newMessage(original, "a@x.test", "b@y.test")
	fail := queue.Failure{Recipient: msg.Envelope.Recipients[0], Reply: sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no")}
	if err := bounce(t, e, msg, fail); err != nil {
		t.Fatal(err)
	}
	// The notification itself fails: bouncing it must queue nothing.
	dsnEnv, dsnBody := e.dsn.envs[0], e.dsn.msgs[0]
	dsnMsg := queue.NewMessage(dsnEnv, int64(len(dsnBody)), func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(dsnBody)), nil
	})
	if err := bounce(t, e, dsnMsg, queue.Failure{Recipient: dsnEnv.Recipients[0], Reply: fail.Reply}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.agent.NotifyDelay(ctx, dsnMsg, []queue.Failure{{Recipient: dsnEnv.Recipients[0], Reply: fail.Reply, Delayed: true}}); err != nil {
		t.Fatal(err)
	}
	if got := len(e.dsn.envs); got != 1 {
		t.Errorf("got %d notifications, want 1: a notification about a notification loops", got)
	}
}

func TestCategorize(t *testing.T) {
	tests := []struct {
		reply *sluice.Reply
		want  delivery.Category
	}{
		{nil, delivery.CategoryNone},
		{sluice.NewReply(250, sluice.EnhancedCode{2, 0, 0}, "ok"), delivery.CategoryNone},
		{sluice.NewReply(354, sluice.EnhancedCode{}, "go on"), delivery.CategoryOther}, // out of step: deferred, not delivered
		{sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no such user"), delivery.CategoryBadMailbox},
		{sluice.NewReply(550, sluice.EnhancedCode{}, "User unknown in virtual mailbox table"), delivery.CategoryBadMailbox},
		{sluice.NewReply(556, sluice.EnhancedCode{5, 1, 10}, "domain does not accept mail (null MX)"), delivery.CategoryRouting},
		{sluice.NewReply(552, sluice.EnhancedCode{5, 2, 2}, "over the limit"), delivery.CategoryQuota},
		{sluice.NewReply(452, sluice.EnhancedCode{4, 2, 2}, "mailbox full"), delivery.CategoryQuota},
		{sluice.NewReply(550, sluice.EnhancedCode{5, 7, 1}, "message rejected by policy"), delivery.CategoryPolicy},
		{sluice.NewReply(554, sluice.EnhancedCode{5, 7, 1}, "Service unavailable; client host blocked using Spamhaus"), delivery.CategoryReputation},
		{sluice.NewReply(421, sluice.EnhancedCode{4, 7, 0}, "too many connections from your IP"), delivery.CategoryReputation},
		{sluice.NewReply(554, sluice.EnhancedCode{5, 7, 1}, "message looks like spam"), delivery.CategoryContent},
		{sluice.NewReply(552, sluice.EnhancedCode{5, 3, 4}, "message size exceeds fixed limit"), delivery.CategoryContent},
		{sluice.NewReply(451, sluice.EnhancedCode{4, 4, 1}, "connection refused"), delivery.CategoryNetwork},
		{sluice.NewReply(451, sluice.EnhancedCode{4, 4, 3}, "DNS lookup failed"), delivery.CategoryRouting},
		{sluice.NewReply(501, sluice.EnhancedCode{5, 5, 4}, "bad parameter"), delivery.CategoryProtocol},
		{sluice.NewReply(500, sluice.EnhancedCode{}, "what"), delivery.CategoryOther},
	}
	for _, tt := range tests {
		if got := delivery.Categorize(tt.reply); got != tt.want {
			t.Errorf("Categorize(%v) = %q, want %q", tt.reply, got, tt.want)
		}
	}
}
