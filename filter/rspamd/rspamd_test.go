package rspamd_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/rspamd"
	"github.com/sluicemta/sluice/health"
	"github.com/sluicemta/sluice/internal/blackhole"
)

const gtubeBody = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

const clean = "From: a@example.org\r\nTo: b@example.org\r\nSubject: lunch\r\n\r\nLunch tomorrow?\r\n"

func message(body string) *filter.Message {
	return &filter.Message{
		Envelope: &sluice.Envelope{
			ID:         "Q1",
			From:       "a@example.org",
			Recipients: []sluice.Recipient{{Address: "b@example.org"}, {Address: "c@example.org"}},
			Client:     sluice.ClientInfo{Addr: netip.MustParseAddrPort("192.0.2.7:4567"), Helo: "client.example.org", AuthUser: "alice"},
		},
		Body: strings.NewReader(body),
		Size: int64(len(body)),
	}
}

func newPool(t *testing.T, addrs []string, opts ...health.PoolOption) *health.Pool {
	t.Helper()
	p, err := health.NewPool("rspamd", addrs, health.RspamdPing(), append([]health.PoolOption{health.WithFirstCheck(false)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newFilter(t *testing.T, p rspamd.Pool, opts ...rspamd.Option) *rspamd.Filter {
	t.Helper()
	f, err := rspamd.New(p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func headerMap(hs []filter.Header) map[string]string {
	m := make(map[string]string, len(hs))
	for _, h := range hs {
		m[h.Name] = h.Value
	}
	return m
}

func replyText(r *sluice.Reply) string {
	if r == nil {
		return ""
	}
	return r.Error()
}

// fakeRspamd is a loopback HTTP server answering /ping like rspamd and
// /checkv2 with a fixed answer, recording the last request.
type fakeRspamd struct {
	srv *httptest.Server

	mu     sync.Mutex // guards header and body
	header http.Header
	body   string
}

func newFake(t *testing.T, status int, answer string) *fakeRspamd {
	f := &fakeRspamd{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "pong\r\n") })
	mux.HandleFunc("POST /checkv2", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.header, f.body = r.Header.Clone(), string(b)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeRspamd) addr() string { return f.srv.Listener.Addr().String() }

// Answers in the shape rspamd's protocol documentation gives.
const (
	answerAddHeader = `{"is_skipped":false,"score":7.5,"required_score":15.0,"action":"add header",
		"symbols":{"BAYES_SPAM":{"name":"BAYES_SPAM","score":5.1},"R_DKIM_NA":{"name":"R_DKIM_NA","score":0}},
		"messages":{},"milter":{"add_headers":{
			"X-Spamd-Result":{"value":"default: False [7.50 / 15.00]","order":0},
			"X-Rspamd-Server":"scanner1",
			"X-Spamd-Bar":[{"value":"+++++++","order":0}]},
		"remove_headers":{"X-Spam":1}}}`
	answerReject  = `{"is_skipped":false,"score":16.2,"required_score":15.0,"action":"reject","symbols":{},"messages":{"smtp_message":"Spam message rejected\r\n(policy)"}}`
	answerSkipped = `{"is_skipped":true,"score":0,"required_score":null,"action":"no action","symbols":{},"messages":{}}`
)

func TestCheckDocumentedAnswers(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		answer  string
		action  filter.Action
		reply   string
		headers []filter.Header
		err     string
	}{
		{"add header with milter headers in all three shapes", 200, answerAddHeader, filter.Accept, "", []filter.Header{
			{Name: "X-Spam-Action", Value: "add header"}, {Name: "X-Spam-Score", Value: "7.50"}, {Name: "X-Spam", Value: "Yes"},
			{Name: "X-Rspamd-Server", Value: "scanner1"}, {Name: "X-Spamd-Bar", Value: "+++++++"},
			{Name: "X-Spamd-Result", Value: "default: False [7.50 / 15.00]"}}, ""},
		{"reject with rspamd's message made one line", 200, answerReject, filter.Reject, "550 5.7.1 Spam message rejected (policy)", []filter.Header{
			{Name: "X-Spam-Action", Value: "reject"}, {Name: "X-Spam-Score", Value: "16.20"}}, ""},
		{"skipped", 200, answerSkipped, filter.Accept, "", []filter.Header{
			{Name: "X-Spam-Action", Value: "no action"}, {Name: "X-Spam-Score", Value: "0.00"}}, ""},
		{"server error", 500, `{"error":"internal"}`, 0, "", nil, "500 Internal Server Error"},
		{"not JSON", 200, `pong`, 0, "", nil, "not rspamd's JSON"},
		{"no action field", 200, `{"score":1}`, 0, "", nil, "no action"},
		{"unknown action", 200, `{"action":"explode","score":1}`, 0, "", nil, `unknown action "explode"`},
		{"bad add_headers", 200, `{"action":"no action","milter":{"add_headers":{"X":5}}}`, 0, "", nil, "add_headers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t, tc.status, tc.answer)
			f := newFilter(t, newPool(t, []string{fake.addr()}))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			v, err := f.Check(ctx, message(clean))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Action != tc.action || replyText(v.Reply) != tc.reply {
				t.Errorf("got %v %q, want %v %q", v.Action, replyText(v.Reply), tc.action, tc.reply)
			}
			if len(v.Headers) != len(tc.headers) {
				t.Fatalf("headers %v, want %v", v.Headers, tc.headers)
			}
			for i := range tc.headers {
				if v.Headers[i] != tc.headers[i] {
					t.Errorf("header %d = %v, want %v", i, v.Headers[i], tc.headers[i])
				}
			}
		})
	}
}

func TestRequestCarriesEnvelope(t *testing.T) {
	fake := newFake(t, 200, answerSkipped)
	f := newFilter(t, newPool(t, []string{fake.addr()}), rspamd.WithPassword("s3cret"))
	if _, err := f.Check(context.Background(), message(clean)); err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	want := map[string][]string{
		"From": {"a@example.org"}, "Rcpt": {"b@example.org", "c@example.org"}, "Ip": {"192.0.2.7"},
		"Helo": {"client.example.org"}, "User": {"alice"}, "Queue-Id": {"Q1"}, "Password": {"s3cret"},
	}
	for name, values := range want {
		if got := fake.header.Values(name); strings.Join(got, ",") != strings.Join(values, ",") {
			t.Errorf("request header %s = %v, want %v", name, got, values)
		}
	}
	if fake.body != clean {
		t.Errorf("body %q, want the message", fake.body)
	}
}

// TestHungReplicaDeadline: an rspamd that accepts and never answers costs
// the context's deadline and no more, and the replica is ejected.
func TestHungReplicaDeadline(t *testing.T) {
	hung := blackhole.Start(t, "127.0.0.1:0")
	pool := newPool(t, []string{hung}, health.WithEjectAfter(1), health.WithProbeOptions(health.WithProbeInterval(time.Hour), health.WithFall(100)))
	f := newFilter(t, pool)
	const timeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	_, err := f.Check(ctx, message(clean))
	if d := time.Since(start); d > timeout+150*time.Millisecond {
		t.Errorf("Check took %v with a %v deadline", d, timeout)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
	if pool.Endpoints()[0].Up {
		t.Error("hung replica still up")
	}
}

// TestDeadReplica: a refused connection is retried on the next replica at
// once, and the dead one is ejected.
func TestDeadReplica(t *testing.T) {
	fake := newFake(t, 200, answerReject)
	dead := closedPort(t)
	pool := newPool(t, []string{dead, fake.addr()}, health.WithStrategy(health.OrderedFailover),
		health.WithProbeOptions(health.WithProbeInterval(time.Hour), health.WithFall(100)))
	f := newFilter(t, pool)
	for i := range 5 {
		v, err := f.Check(context.Background(), message(clean))
		if err != nil || v.Action != filter.Reject {
			t.Fatalf("check %d: %v %v, want a reject from the healthy replica", i, v.Action, err)
		}
	}
	if pool.Endpoints()[0].Up {
		t.Error("dead replica still up")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	pool := newPool(t, []string{"127.0.0.1:1"}, health.WithProbeOptions(health.WithProbeInterval(time.Hour)))
	for _, opt := range []rspamd.Option{rspamd.WithPassword("a\nb"), rspamd.WithPassword("a\x01b"), rspamd.WithMaxSize(0), rspamd.WithTimeout(0), rspamd.WithAttempts(0)} {
		if _, err := rspamd.New(pool, opt); err == nil || !strings.HasPrefix(err.Error(), "rspamd: ") {
			t.Errorf("New with a bad option: err = %v", err)
		}
	}
	if _, err := rspamd.New(nil); err == nil {
		t.Error("New(nil): no error")
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
