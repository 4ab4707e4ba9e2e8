//go:build interop

package interop

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A message relayed swaks -> sluice -> smtp-sink arrives with its header
// and body intact: only trace fields (Received) are added. The same message
// sent straight from swaks to a second smtp-sink is the reference, so the
// comparison covers exactly what sluice changed, not swaks's or smtp-sink's
// own habits (swaks ends DATA with an extra CRLF, dumps use LF).
func TestSwaksBodyIntact(t *testing.T) {
	t.Parallel()
	swaksBin := tool(t, "swaks")
	viaSluice, direct := startSink(t), startSink(t)
	srv := startSluice(t, t.TempDir(), "--smarthost", viaSluice.addr)

	var body strings.Builder
	body.WriteString("First line.\n.a line that starts with a dot\n..and one with two\n.\n\nAfter an empty line.\n")
	for i := range 2000 {
		fmt.Fprintf(&body, "line %04d %s\n", i, strings.Repeat("abcdefghij", 1+i%90))
	}
	body.WriteString("last line, then the end\n")
	msg := "From: Sender <sender@example.org>\nTo: rcpt@example.net\nSubject: body intact\n" +
		"Message-ID: <body-intact@example.org>\nMIME-Version: 1.0\nContent-Type: text/plain\n\n" + body.String()
	file := messageFile(t, msg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, server := range []string{srv.smtpAddr, direct.addr} {
		if ok, out := swaks(ctx, swaksBin, server, "sender@example.org", "rcpt@example.net", file); !ok {
			t.Fatalf("swaks to %s not acknowledged:\n%s", server, out)
		}
	}
	var got, want string
	complete := func(s *sink, dst *string) bool {
		d := s.dumps(t)
		// A dump is complete once it has the body's last line.
		if len(d) == 1 && strings.Contains(d[0], "last line, then the end\n") {
			*dst = d[0]
			return true
		}
		return false
	}
	if !poll(30*time.Second, func() bool { return complete(viaSluice, &got) && complete(direct, &want) }) {
		t.Fatalf("message not delivered within 30s: sink has %d, reference %d", viaSluice.count(t), direct.count(t))
	}
	gotHeader, gotBody := splitDump(got)
	wantHeader, wantBody := splitDump(want)
	if gotBody != wantBody {
		t.Errorf("body changed in transit: got %d bytes, want %d\nfirst difference at byte %d",
			len(gotBody), len(wantBody), firstDiff(gotBody, wantBody))
	}
	if !strings.HasPrefix(wantBody, body.String()) {
		t.Errorf("reference body does not start with the body sent")
	}
	gotKept, gotReceived := withoutReceived(gotHeader)
	wantKept, wantReceived := withoutReceived(wantHeader)
	if strings.Join(gotKept, "\n") != strings.Join(wantKept, "\n") {
		t.Errorf("header fields other than Received changed:\n got %q\nwant %q", gotKept, wantKept)
	}
	if gotReceived != wantReceived+1 {
		t.Errorf("got %d Received fields, want %d (the sink's and sluice's)", gotReceived, wantReceived+1)
	}
}

// swaks --pipeline sends MAIL, the RCPTs and DATA as one group (RFC 2920),
// as MTAs do: sluice answers the whole group, in order, and the message
// arrives once.
func TestSwaksPipelining(t *testing.T) {
	t.Parallel()
	swaksBin := tool(t, "swaks")
	snk := startSink(t)
	srv := startSluice(t, t.TempDir(), "--smarthost", snk.addr)
	file := messageFile(t, "From: <a@example.org>\nTo: <b@example.net>\nSubject: pipelined\n\nA pipelined message.\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	acked, transcript := swaks(ctx, swaksBin, srv.smtpAddr, "a@example.org",
		"b@example.net,c@example.net,not-an-address", file, "--pipeline")
	if !strings.Contains(transcript, "PIPELINING") || !acked {
		t.Fatalf("pipelined message not acknowledged:\n%s", transcript)
	}
	// Both good recipients accepted, the bad one refused, each in order.
	var replies []string
	for _, l := range strings.Split(transcript, "\n") {
		if strings.HasPrefix(l, "<-") || strings.HasPrefix(l, "<**") { // a reply; "<**" an error reply
			replies = append(replies, strings.TrimSpace(strings.TrimLeft(l, "<-~* ")))
		}
	}
	want := []string{"250", "250", "250", "5", "354", "250"} // EHLO's last line is skipped below
	var got []string
	for _, r := range replies {
		if strings.HasPrefix(r, "220") || strings.HasPrefix(r, "221") || strings.HasPrefix(r, "250-") {
			continue
		}
		got = append(got, r)
	}
	if len(got) != len(want)+1 {
		t.Fatalf("replies %q, want EHLO's and then %q", got, want)
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i+1], w) {
			t.Fatalf("reply %d is %q, want %s...; all: %q", i+1, got[i+1], w, got)
		}
	}
	if !poll(30*time.Second, func() bool { return snk.count(t) == 1 }) {
		t.Fatalf("the sink has %d messages, want 1", snk.count(t))
	}
}

func firstDiff(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// 500 messages from smtp-source in 20 parallel sessions all reach the sink.
func TestSMTPSourceLoad(t *testing.T) {
	t.Parallel()
	source := tool(t, "smtp-source")
	snk := startSink(t)
	srv := startSluice(t, t.TempDir(), "--smarthost", snk.addr)

	const n = 500
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, source, "-s", "20", "-m", fmt.Sprint(n),
		"-f", "from@example.com", "-t", "to@example.net", srv.smtpAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	accepted := time.Since(start)
	if !poll(60*time.Second, func() bool { return snk.count(t) >= n }) {
		t.Fatalf("after 60s the sink has %d of %d messages", snk.count(t), n)
	}
	if got := snk.count(t); got != n {
		t.Errorf("sink has %d messages, want %d (duplicates without a crash)", got, n)
	}
	t.Logf("%d messages: accepted in %v, all delivered after %v", n, accepted.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// sluice send -> sluice serve -> smtp-sink.
func TestSendRelays(t *testing.T) {
	t.Parallel()
	snk := startSink(t)
	srv := startSluice(t, t.TempDir(), "--smarthost", snk.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, "send", "--server", srv.smtpAddr, "--from", "me@example.org",
		"--to", "you@example.com", "--subject", "sent by sluice send", "--body", "-")
	cmd.Stdin = strings.NewReader("hello from sluice send\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sluice send: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "250 ") {
		t.Errorf("sluice send printed %q, want the 250 reply", out)
	}
	var dumps []string
	if !poll(30*time.Second, func() bool {
		dumps = snk.dumps(t)
		return len(dumps) == 1 && strings.Contains(dumps[0], "hello from sluice send\n")
	}) {
		t.Fatalf("sink has %d messages after 30s, want 1", len(dumps))
	}
	if s := headerValue(dumps[0], "Subject"); s != "sent by sluice send" {
		t.Errorf("Subject = %q", s)
	}
}

// Mail acknowledged by sluice survives kill -9. The first process relays to
// a next hop that answers 421 to everything (a smarthost that is down), so
// every message stays queued; it is SIGKILLed while clients are still
// sending. The second process, on the same spool, relays to smtp-sink:
// every message that got "250" must arrive. The restart names a different
// smarthost rather than starting smtp-sink on the old port, because the
// sink's port is chosen by the kernel; it also shows that routes are looked
// up at each attempt, not stored with the message.
func TestKill9LosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	swaksBin := tool(t, "swaks")
	tool(t, "smtp-sink")
	spool := t.TempDir()
	down := tempFailServer(t)
	first := startSluice(t, spool, "--smarthost", down)

	const n = 50
	dir := t.TempDir()
	var (
		mu    sync.Mutex // guards acked
		acked []string   // subjects of acknowledged messages
		wg    sync.WaitGroup
		sent  = make(chan struct{}, n)
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for w := range 5 {
		wg.Go(func() {
			for i := w; i < n; i += 5 {
				subject := fmt.Sprintf("kill9-%03d", i)
				file := filepath.Join(dir, subject+".eml")
				msg := fmt.Sprintf("From: a@example.org\nTo: b@example.net\nSubject: %s\nMessage-ID: <%s@example.org>\n\nbody of %s\n", subject, subject, subject)
				if err := os.WriteFile(file, []byte(msg), 0o600); err != nil {
					t.Error(err)
					return
				}
				ok, _ := swaks(ctx, swaksBin, first.smtpAddr, "a@example.org", "b@example.net", file)
				if ok {
					mu.Lock()
					acked = append(acked, subject)
					mu.Unlock()
				}
				sent <- struct{}{}
			}
		})
	}
	// Kill while the clients are still busy: after 30 transactions.
	for range 30 {
		select {
		case <-sent:
		case <-ctx.Done():
			t.Fatal("30 transactions did not finish within 60s")
		}
	}
	first.kill(t)
	wg.Wait()
	mu.Lock()
	want := append([]string(nil), acked...)
	mu.Unlock()
	if len(want) < 30 {
		t.Fatalf("only %d messages acknowledged before the kill, want at least 30", len(want))
	}

	snk := startSink(t)
	startSluice(t, spool, "--smarthost", snk.addr)
	counts := make(map[string]int)
	missing := func() []string {
		clear(counts)
		for _, d := range snk.dumps(t) {
			counts[headerValue(d, "Subject")]++
		}
		var m []string
		for _, s := range want {
			if counts[s] == 0 {
				m = append(m, s)
			}
		}
		return m
	}
	if !poll(60*time.Second, func() bool { return len(missing()) == 0 }) {
		t.Fatalf("%d of %d acknowledged messages lost after kill -9: %v", len(missing()), len(want), missing())
	}
	dups := 0
	for s, c := range counts {
		if c > 1 {
			dups += c - 1
			t.Logf("duplicate: %s delivered %d times", s, c)
		}
	}
	t.Logf("%d messages acknowledged before kill -9, all delivered after restart; %d duplicates", len(want), dups)
}

// tempFailServer is a next hop that is down: it answers every connection
// with 421 and closes it.
func tempFailServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("421 4.3.2 down for the test\r\n"))
			c.Close()
		}
	})
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().String()
}
