package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sluicemta/sluice/admin"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/queue"
)

// apiClient speaks to the admin API of a running "sluice serve".
type apiClient struct {
	base  string // "http://host:port"
	token string
	hc    *http.Client
}

// apiFlags are the flags of the commands that talk to the daemon.
type apiFlags struct {
	api, tokenFile string
}

// newAPIClient returns a client for the daemon at the --api address, else
// the configuration's http.listen, else the default; the token comes from
// --token-file, else the configuration's http.token_file, else
// $SLUICE_ADMIN_TOKEN.
func newAPIClient(f *apiFlags, config string) (*apiClient, error) {
	addr, token := defaultHTTP, os.Getenv("SLUICE_ADMIN_TOKEN")
	if config != "" {
		s, err := loadConfig(config)
		if err != nil {
			return nil, err
		}
		if s.httpListen != "" {
			addr = s.httpListen
		}
		if s.adminToken != "" {
			token = s.adminToken
		}
	}
	if f.api != "" {
		addr = f.api
	}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, err
		}
		// The first line, without blanks, as sluice serve reads it.
		token, _, _ = strings.Cut(string(b), "\n")
		token = strings.TrimSpace(token)
	}
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &apiClient{base: strings.TrimSuffix(base, "/"), token: token, hc: &http.Client{Timeout: 2 * time.Minute}}, nil
}

// errDaemon wraps a failure to reach the daemon, with a hint.
type errDaemon struct{ err error }

func (e *errDaemon) Error() string {
	return fmt.Sprintf("cannot reach the daemon's admin API (%v); is sluice serve running? For a stopped daemon use --spool DIR", e.err)
}

func (c *apiClient) call(ctx context.Context, method, path string, query url.Values, out any) error {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return &errDaemon{err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e admin.Error
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		if resp.StatusCode == http.StatusNotFound {
			return fmt.Errorf("%w: %s", queue.ErrNotFound, e.Error)
		}
		return fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

// queueOps is what the queue subcommands need: the spool opened directly
// (*spoolOps) or the running daemon (*apiClient).
type queueOps interface {
	List(ctx context.Context, o queue.ListOptions) (*queue.Page, error)
	Show(ctx context.Context, id string) (*queue.Info, error)
	Stats(ctx context.Context) (queue.Stats, error)
	Hold(ctx context.Context, id string) error
	Release(ctx context.Context, id string) error
	Delete(ctx context.Context, id string) error
	Requeue(ctx context.Context, id string) error
	Bounce(ctx context.Context, id string) error
	Flush(ctx context.Context) (int, error)
}

var (
	_ queueOps = spoolOps{}
	_ queueOps = (*apiClient)(nil)
)

// spoolOps is a queue opened directly, for a stopped daemon.
type spoolOps struct{ *queue.Queue }

func (s spoolOps) Stats(context.Context) (queue.Stats, error) { return s.Queue.Stats(), nil }

func (c *apiClient) List(ctx context.Context, o queue.ListOptions) (*queue.Page, error) {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("domain", o.Domain)
	set("sender", o.Sender)
	set("state", string(o.State))
	set("after", o.After)
	if o.OlderThan > 0 {
		q.Set("older_than", o.OlderThan.String())
	}
	if o.NewerThan > 0 {
		q.Set("newer_than", o.NewerThan.String())
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	var p queue.Page
	return &p, c.call(ctx, "GET", "/api/v1/queue", q, &p)
}

func (c *apiClient) Show(ctx context.Context, id string) (*queue.Info, error) {
	var info queue.Info
	if err := c.call(ctx, "GET", "/api/v1/queue/"+url.PathEscape(id), nil, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

func (c *apiClient) Stats(ctx context.Context) (queue.Stats, error) {
	var st queue.Stats
	return st, c.call(ctx, "GET", "/api/v1/queue/stats", nil, &st)
}

func (c *apiClient) op(ctx context.Context, id, op string) error {
	return c.call(ctx, "POST", "/api/v1/queue/"+url.PathEscape(id)+"/"+op, nil, nil)
}

func (c *apiClient) Hold(ctx context.Context, id string) error    { return c.op(ctx, id, "hold") }
func (c *apiClient) Release(ctx context.Context, id string) error { return c.op(ctx, id, "release") }
func (c *apiClient) Delete(ctx context.Context, id string) error  { return c.op(ctx, id, "delete") }
func (c *apiClient) Requeue(ctx context.Context, id string) error { return c.op(ctx, id, "requeue") }
func (c *apiClient) Bounce(ctx context.Context, id string) error  { return c.op(ctx, id, "bounce") }

func (c *apiClient) Flush(ctx context.Context) (int, error) {
	var r admin.FlushResult
	err := c.call(ctx, "POST", "/api/v1/queue/flush", nil, &r)
	return r.Flushed, err
}

func (c *apiClient) explainID(ctx context.Context, id string) (*admin.Explained, error) {
	var x admin.Explained
	return &x, c.call(ctx, "GET", "/api/v1/explain/"+url.PathEscape(id), nil, &x)
}

func (c *apiClient) explainRcpt(ctx context.Context, rcpt, sender string) (*delivery.Explanation, error) {
	var x delivery.Explanation
	return &x, c.call(ctx, "GET", "/api/v1/explain", url.Values{"rcpt": {rcpt}, "sender": {sender}}, &x)
}

func (c *apiClient) searchLog(ctx context.Context, q url.Values) ([]delivery.Record, error) {
	var recs []delivery.Record
	return recs, c.call(ctx, "GET", "/api/v1/log", q, &recs)
}
