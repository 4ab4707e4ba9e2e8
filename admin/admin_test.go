package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/admin"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/maillog"
	"github.com/sluicemta/sluice/queue"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

// daemon is a queue delivering through an agent to a sink that defers
// every recipient of "later.test", with the delivery log kept, behind the
// admin API.
type daemon struct {
	q    *queue.Queue
	sink *smtptest.Sink
	log  *maillog.Log
	srv  *httptest.Server
}

func newDaemon(t *testing.T, opts ...admin.Option) *daemon {
	t.Helper()
	sink, err := smtptest.NewSink(smtptest.WithRcptFunc(func(_, to string) error {
		if strings.HasSuffix(to, "@later.test") {
			return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "come back later"}
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	dir := t.TempDir()
	q, err := queue.New(filepath.Join(dir, "spool"), queue.WithRetry(time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	l, err := maillog.Open(filepath.Join(dir, "delivery.log"))
	if err != nil {
		t.Fatal(err)
	}
	agent, err := delivery.New(q, delivery.WithSmarthost(sink.Addr()), delivery.WithHostname("mta.test"), delivery.WithRecorder(l))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- q.Serve(agent) }()
	api, err := admin.New(q, append([]admin.Option{admin.WithExplainer(agent), admin.WithDeliveryLog(l)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := q.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-served; !errors.Is(err, queue.ErrClosed) {
			t.Errorf("Serve returned %v", err)
		}
		agent.Close()
		l.Close()
	})
	return &daemon{q: q, sink: sink, log: l, srv: srv}
}

func (d *daemon) enqueue(t *testing.T, from string, to ...string) string {
	t.Helper()
	env := &sluice.Envelope{From: from}
	for _, a := range to {
		env.Recipients = append(env.Recipients, sluice.Recipient{Address: a})
	}
	id, err := d.q.Enqueue(context.Background(), env, strings.NewReader("Subject: t\r\n\r\nhi\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// call does a request and decodes the JSON answer into out (if not nil),
// returning the status code.
func (d *daemon) call(t *testing.T, method, path, token string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, d.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := d.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, body)
		}
	}
	return resp.StatusCode
}

// waitDeferred waits until id has had an attempt.
func (d *daemon) waitDeferred(t *testing.T, id string) *queue.Info {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		info, err := d.q.Show(context.Background(), id)
		if err == nil && info.State == queue.StateDeferred {
			return info
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s was not deferred within 10s", id)
	return nil
}

func TestQueueOperations(t *testing.T) {
	d := newDaemon(t)
	id := d.enqueue(t, "a@shop.test", "x@later.test", "y@now.test")
	d.waitDeferred(t, id)

	var page queue.Page
	if code := d.call(t, "GET", "/api/v1/queue?domain=later.test", "", &page); code != 200 || len(page.Messages) != 1 || page.Messages[0].ID != id {
		t.Fatalf("list: %d %+v", code, page)
	}
	if code := d.call(t, "GET", "/api/v1/queue?domain=other.test", "", &page); code != 200 || len(page.Messages) != 0 {
		t.Errorf("list of another domain: %d %+v", code, page)
	}
	var st queue.Stats
	if code := d.call(t, "GET", "/api/v1/queue/stats", "", &st); code != 200 || st.Deferred != 1 {
		t.Errorf("stats: %d %+v", code, st)
	}
	var info queue.Info
	if code := d.call(t, "GET", "/api/v1/queue/"+id, "", &info); code != 200 || len(info.Recipients) != 2 ||
		info.Recipients[0].State != queue.StateDeferred || info.Recipients[1].State != queue.StateDelivered ||
		!strings.Contains(info.Recipients[0].LastReply, "come back later") {
		t.Errorf("show: %d %+v", code, info)
	}
	for _, s := range []struct {
		op   string
		held bool
	}{{"hold", true}, {"release", false}, {"hold", true}} {
		var res admin.OpResult
		if code := d.call(t, "POST", "/api/v1/queue/"+id+"/"+s.op, "", &res); code != 200 || res.ID != id || res.Op != s.op {
			t.Fatalf("%s: %d %+v", s.op, code, res)
		}
		// A message in flight (released, so due at once) takes the
		// operation when its attempt ends.
		deadline := time.Now().Add(10 * time.Second)
		for {
			var state queue.State
			info, err := d.q.Show(context.Background(), id)
			if err == nil {
				state = info.State
			}
			if err == nil && (state == queue.StateHeld) == s.held && state != queue.StateInFlight {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s: state %v (%v), want held %v", s.op, state, err, s.held)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	var fr admin.FlushResult
	if code := d.call(t, "POST", "/api/v1/queue/flush", "", &fr); code != 200 || fr.Flushed != 0 {
		t.Errorf("flush with the only message held: %d %+v, want 0 flushed", code, fr)
	}
	if code := d.call(t, "POST", "/api/v1/queue/"+id+"/delete", "", nil); code != 200 {
		t.Errorf("delete: %d", code)
	}
	if code := d.call(t, "GET", "/api/v1/queue/"+id, "", nil); code != 404 {
		t.Errorf("show after delete: %d, want 404", code)
	}
	if code := d.call(t, "POST", "/api/v1/queue/"+id+"/hold", "", nil); code != 404 {
		t.Errorf("hold of a deleted message: %d, want 404", code)
	}
	if code := d.call(t, "POST", "/api/v1/queue/"+id+"/explode", "", nil); code != 404 {
		t.Errorf("unknown operation: %d, want 404", code)
	}
	if code := d.call(t, "GET", "/api/v1/queue?older_than=yesterday", "", nil); code != 400 {
		t.Errorf("bad duration: %d, want 400", code)
	}
}

func TestExplainAndLog(t *testing.T) {
	d := newDaemon(t)
	id := d.enqueue(t, "a@shop.test", "x@later.test", "y@now.test")
	d.waitDeferred(t, id)

	var ex admin.Explained
	if code := d.call(t, "GET", "/api/v1/explain/"+id, "", &ex); code != 200 || len(ex.Recipients) != 2 {
		t.Fatalf("explain: %d %+v", code, ex)
	}
	x := ex.Recipients[0].Explain
	if x == nil || !strings.HasPrefix(x.Route, "pool:") || len(x.Hops) != 1 || x.Hops[0].Address != d.sink.Addr() || ex.Recipients[0].Next.IsZero() {
		t.Errorf("explain of the deferred recipient: %+v / %+v", ex.Recipients[0], x)
	}
	if ex.Recipients[1].Explain != nil {
		t.Errorf("explain of the delivered recipient: %+v, want none", ex.Recipients[1].Explain)
	}
	var one delivery.Explanation
	if code := d.call(t, "GET", "/api/v1/explain?rcpt=z@other.test&sender=a@shop.test", "", &one); code != 200 || len(one.Hops) != 1 {
		t.Errorf("explain --rcpt: %d %+v", code, one)
	}
	if code := d.call(t, "GET", "/api/v1/explain?rcpt=bad", "", nil); code != 400 {
		t.Errorf("explain of a bad address: %d, want 400", code)
	}

	var recs []delivery.Record
	if code := d.call(t, "GET", "/api/v1/log?rcpt=x@later.test", "", &recs); code != 200 || len(recs) != 1 ||
		recs[0].QueueID != id || recs[0].Result != "deferred" || recs[0].Code != 451 {
		t.Errorf("log search by recipient: %d %+v", code, recs)
	}
	if code := d.call(t, "GET", "/api/v1/log?id="+id+"&result=delivered&since=1h", "", &recs); code != 200 || len(recs) != 1 || recs[0].To != "y@now.test" {
		t.Errorf("log search by id and result: %d %+v", code, recs)
	}
	if code := d.call(t, "GET", "/api/v1/log?until="+time.Now().Add(-time.Hour).Format(time.RFC3339), "", &recs); code != 200 || len(recs) != 0 {
		t.Errorf("log search before the attempts: %d %+v", code, recs)
	}
	if code := d.call(t, "GET", "/api/v1/log?since=soon", "", nil); code != 400 {
		t.Errorf("bad time: %d, want 400", code)
	}
}

func TestToken(t *testing.T) {
	d := newDaemon(t, admin.WithToken("s3cret"))
	for _, tc := range []struct {
		token string
		want  int
	}{{"", 401}, {"wrong", 401}, {"s3cret", 200}} {
		if code := d.call(t, "GET", "/api/v1/queue/stats", tc.token, nil); code != tc.want {
			t.Errorf("token %q: %d, want %d", tc.token, code, tc.want)
		}
	}
}

func TestStatus(t *testing.T) {
	rates := admin.NewRates(nil)
	d := newDaemon(t, admin.WithRates(rates), admin.WithComponents(func(context.Context) []admin.Component {
		return []admin.Component{{Kind: "breaker", Name: "spamd", State: "open", Detail: "5 timeouts in 1m"}}
	}))
	id := d.enqueue(t, "a@shop.test", "x@later.test")
	d.waitDeferred(t, id)
	rates.Record(context.Background(), &delivery.Record{Result: "bounced"})
	var st admin.Status
	if code := d.call(t, "GET", "/api/v1/status", "", &st); code != 200 {
		t.Fatalf("status: %d", code)
	}
	if st.Queue.Deferred != 1 || len(st.Queue.Domains) != 1 || st.Queue.Domains[0].Domain != "later.test" {
		t.Errorf("queue: %+v", st.Queue)
	}
	if len(st.Rates) != 60 || st.Rates[59].Bounced != 1 {
		t.Errorf("rates: %d minutes, this one %+v; want 60 with 1 bounce now", len(st.Rates), st.Rates[len(st.Rates)-1])
	}
	if len(st.Components) != 1 || st.Components[0].State != "open" {
		t.Errorf("components: %+v", st.Components)
	}
	page := httptest.NewRecorder()
	api, _ := admin.New(d.q)
	api.StatusPage().ServeHTTP(page, httptest.NewRequest("GET", "/status", nil))
	body := page.Body.String()
	if page.Code != 200 || !strings.Contains(body, `<svg id="rate-chart"`) || strings.Contains(body, `src="http`) || strings.Contains(body, `href="http`) {
		t.Errorf("status page: %d, %d bytes, want the page with no external assets", page.Code, len(body))
	}
}
