package admin

import (
	"context"
	_ "embed"
	"net/http"
	"time"

	"github.com/sluicemta/sluice/queue"
)

//go:embed static/status.html
var statusPage []byte

// Component is the state of one part of the system shown on the status
// page: a readiness check, a filter's circuit breaker, a replica of a
// pool.
type Component struct {
	Kind   string `json:"kind"`  // "check", "breaker", "replica", ...
	Name   string `json:"name"`  // what it is called in the configuration
	State  string `json:"state"` // "ready", "failing", "open", "closed", "up", "down", ...
	Detail string `json:"detail,omitempty"`
}

// Status is the body of /api/v1/status: what the status page shows.
type Status struct {
	Time       time.Time   `json:"time"`
	Queue      queue.Stats `json:"queue"`
	Rates      []Minute    `json:"rates"`
	Components []Component `json:"components"`
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	st := Status{Time: time.Now(), Queue: a.q.Stats(), Rates: []Minute{}, Components: []Component{}}
	if a.cfg.rates != nil {
		st.Rates = a.cfg.rates.LastHour()
	}
	for _, f := range a.cfg.components {
		st.Components = append(st.Components, f(r.Context())...)
	}
	writeJSON(w, st)
}

// StatusPage returns the handler of the status page, a self-contained
// HTML page (no external assets) that draws the queue by destination,
// delivery and bounce charts over the last hour, the components' states
// and a delivery log search form, from the API. Mount it at "/status". The
// page itself holds no data, so it needs no token; with [WithToken], open
// it as /status#token=<token> and its scripts send the token to the API.
func (a *API) StatusPage() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
		w.Write(statusPage)
	})
}

// ComponentsFunc reports the states of some components, for the status
// page.
type ComponentsFunc func(ctx context.Context) []Component
