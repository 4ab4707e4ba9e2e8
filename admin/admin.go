package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/maillog"
	"github.com/sluicemta/sluice/queue"
)

// Explainer tells what delivery would do with mail for a recipient;
// *delivery.Agent implements it.
type Explainer interface {
	Explain(ctx context.Context, rcpt, sender string) (*delivery.Explanation, error)
}

// FilterStatuser reports the state of filters; *filter.Chain implements
// it.
type FilterStatuser interface {
	Status() []filter.FilterStatus
}

// Searcher searches the delivery log; *maillog.Log implements it.
type Searcher interface {
	Search(ctx context.Context, q maillog.Query) ([]delivery.Record, error)
}

var (
	_ Explainer      = (*delivery.Agent)(nil)
	_ FilterStatuser = (*filter.Chain)(nil)
	_ Searcher       = (*maillog.Log)(nil)
)

// API is the admin HTTP API of a running sluice: the queue's operations,
// explanations and the delivery log, as JSON. Mount its Handler under
// "/api/" of an HTTP server that only operators reach.
type API struct {
	q   *queue.Queue
	cfg config
	mux *http.ServeMux
}

// New returns the API over q.
func New(q *queue.Queue, opts ...Option) (*API, error) {
	if q == nil {
		return nil, errors.New("admin: nil queue")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		return nil, errors.New("admin: nil logger")
	}
	a := &API{q: q, cfg: cfg, mux: http.NewServeMux()}
	a.routes()
	return a, nil
}

func (a *API) routes() {
	a.mux.HandleFunc("GET /api/v1/queue", a.list)
	a.mux.HandleFunc("GET /api/v1/queue/stats", a.stats)
	a.mux.HandleFunc("POST /api/v1/queue/flush", a.flush)
	a.mux.HandleFunc("GET /api/v1/queue/{id}", a.show)
	a.mux.HandleFunc("POST /api/v1/queue/{id}/{op}", a.operate)
	a.mux.HandleFunc("GET /api/v1/explain", a.explainRcpt)
	a.mux.HandleFunc("GET /api/v1/explain/{id}", a.explainID)
	a.mux.HandleFunc("GET /api/v1/log", a.searchLog)
	a.mux.HandleFunc("GET /api/v1/status", a.status)
}

// Handler returns the API's handler. Every request needs the bearer token
// of [WithToken] when one is set. Without a token, which suits only a
// listener on loopback, it serves only requests that no other web site
// can have made through the operator's browser (see [API.Protect]).
func (a *API) Handler() http.Handler { return a.Protect(a.mux) }

// Protect returns h behind the API's access check, for other endpoints of
// the same listener that must not be open to anyone the API is not, such
// as net/http/pprof's. With a token ([WithToken]) a request needs it as
// its bearer token. Without one, a request is refused when a browser says
// another site made it (an Origin that is not the request's own host, a
// Sec-Fetch-Site other than same-origin or none), or when its Host is a
// name other than localhost, which is what a page of another site that
// rebinds its DNS name to 127.0.0.1 would send: the web page of any site
// could otherwise reach a loopback API through the browser, and flush,
// bounce or delete mail.
func (a *API) Protect(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.token != "" && !a.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
			writeError(w, http.StatusUnauthorized, errors.New("a bearer token is required"))
			return
		}
		if a.cfg.token == "" {
			if why := crossSite(r); why != "" {
				writeError(w, http.StatusForbidden, errors.New("refused without a token: "+why))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// crossSite says why r may come from a page of another web site, or "".
func crossSite(r *http.Request) string {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return "the browser says the request is " + site
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return "the request comes from " + o
		}
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if _, err := netip.ParseAddr(host); err != nil && !strings.EqualFold(host, "localhost") {
		return "Host " + r.Host + " is neither an IP address nor localhost"
	}
	return ""
}

// authorized compares the bearer token in constant time, of its length
// too: both sides are hashed first.
func (a *API) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(a.cfg.token))
	return ok && subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(Error{err.Error()})
}

// fail answers an error of the queue or a bad request.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	var bad *badRequest
	switch {
	case errors.Is(err, queue.ErrNotFound):
		code = http.StatusNotFound
	case errors.As(err, &bad):
		code = http.StatusBadRequest
	case errors.Is(err, queue.ErrClosed):
		code = http.StatusServiceUnavailable
	}
	if code == http.StatusInternalServerError {
		a.cfg.logger.ErrorContext(r.Context(), "admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, code, err)
}

type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badf(format string, args ...any) error { return &badRequest{fmt.Sprintf(format, args...)} }

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o := queue.ListOptions{Domain: q.Get("domain"), Sender: q.Get("sender"), State: queue.State(q.Get("state")), After: q.Get("after")}
	var err error
	if o.OlderThan, err = durationParam(q.Get("older_than")); err == nil {
		o.NewerThan, err = durationParam(q.Get("newer_than"))
	}
	if err == nil {
		o.Limit, err = intParam(q.Get("limit"))
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	page, err := a.q.List(r.Context(), o)
	if err != nil {
		a.fail(w, r, badf("%v", err))
		return
	}
	writeJSON(w, page)
}

func (a *API) stats(w http.ResponseWriter, r *http.Request) { writeJSON(w, a.q.Stats()) }

func (a *API) show(w http.ResponseWriter, r *http.Request) {
	info, err := a.q.Show(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, info)
}

// OpResult is the answer to an operation on one message.
type OpResult struct {
	ID string `json:"id"`
	Op string `json:"op"`
}

func (a *API) operate(w http.ResponseWriter, r *http.Request) {
	ops := map[string]func(context.Context, string) error{
		"hold": a.q.Hold, "release": a.q.Release, "delete": a.q.Delete, "requeue": a.q.Requeue, "bounce": a.q.Bounce,
	}
	id, op := r.PathValue("id"), r.PathValue("op")
	f, ok := ops[op]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("unknown operation %q (want hold, release, delete, requeue or bounce)", op))
		return
	}
	if err := f(r.Context(), id); err != nil {
		a.fail(w, r, err)
		return
	}
	a.cfg.logger.InfoContext(r.Context(), "queue operation", "op", op, "queue_id", id, "client", r.RemoteAddr)
	writeJSON(w, OpResult{ID: id, Op: op})
}

// FlushResult is the answer to a flush.
type FlushResult struct {
	Flushed int `json:"flushed"`
}

func (a *API) flush(w http.ResponseWriter, r *http.Request) {
	n, err := a.q.Flush(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.cfg.logger.InfoContext(r.Context(), "queue flushed", "messages", n, "client", r.RemoteAddr)
	writeJSON(w, FlushResult{Flushed: n})
}

// Explained is a queued message with, for each recipient not yet done,
// what delivery would do now.
type Explained struct {
	Message    *queue.Info           `json:"message"`
	Recipients []*ExplainedRecipient `json:"recipients"`
	// Filters are the post-queue filters the next attempt runs first,
	// with their circuit breakers.
	Filters []filter.FilterStatus `json:"filters,omitempty"`
}

// ExplainedRecipient is one recipient of [Explained]: its queue state
// and the explanation of its next attempt.
type ExplainedRecipient struct {
	queue.RecipientInfo
	Next    time.Time             `json:"next,omitzero"`
	Explain *delivery.Explanation `json:"explain,omitempty"`
}

func (a *API) explainID(w http.ResponseWriter, r *http.Request) {
	if a.cfg.explainer == nil {
		writeError(w, http.StatusNotImplemented, errors.New("no delivery agent to explain with"))
		return
	}
	info, err := a.q.Show(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := &Explained{Message: info}
	if a.cfg.filters != nil {
		for _, f := range a.cfg.filters.Status() {
			if f.Stage == filter.StagePostQueue {
				out.Filters = append(out.Filters, f)
			}
		}
	}
	for _, rc := range info.Recipients {
		er := &ExplainedRecipient{RecipientInfo: rc}
		if rc.State != queue.StateDelivered && rc.State != queue.StateBounced {
			er.Next = info.Next
			if er.Explain, err = a.cfg.explainer.Explain(r.Context(), rc.Address, info.From); err != nil {
				a.fail(w, r, err)
				return
			}
		}
		out.Recipients = append(out.Recipients, er)
	}
	writeJSON(w, out)
}

func (a *API) explainRcpt(w http.ResponseWriter, r *http.Request) {
	if a.cfg.explainer == nil {
		writeError(w, http.StatusNotImplemented, errors.New("no delivery agent to explain with"))
		return
	}
	rcpt := r.URL.Query().Get("rcpt")
	if rcpt == "" {
		a.fail(w, r, badf("rcpt is required"))
		return
	}
	x, err := a.cfg.explainer.Explain(r.Context(), rcpt, r.URL.Query().Get("sender"))
	if err != nil {
		a.fail(w, r, badf("%v", err))
		return
	}
	writeJSON(w, x)
}

func (a *API) searchLog(w http.ResponseWriter, r *http.Request) {
	if a.cfg.log == nil {
		writeError(w, http.StatusNotImplemented, errors.New("no delivery log is kept (log.delivery_file)"))
		return
	}
	p := r.URL.Query()
	q := maillog.Query{Recipient: p.Get("rcpt"), Sender: p.Get("sender"), QueueID: p.Get("id"), Result: p.Get("result")}
	var err error
	if q.Since, err = timeParam(p.Get("since")); err == nil {
		if q.Until, err = timeParam(p.Get("until")); err == nil {
			q.Limit, err = intParam(p.Get("limit"))
		}
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	recs, err := a.cfg.log.Search(r.Context(), q)
	if err != nil {
		a.fail(w, r, badf("%v", err))
		return
	}
	if recs == nil {
		recs = []delivery.Record{}
	}
	writeJSON(w, recs)
}

func durationParam(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, badf("bad duration %q", s)
	}
	return d, nil
}

func intParam(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, badf("bad count %q", s)
	}
	return n, nil
}

// timeParam reads RFC 3339 time, or a duration meaning that long ago.
func timeParam(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, badf("bad time %q (want RFC 3339, or a duration ago such as 1h)", s)
}
