package admin

import "log/slog"

// Option configures an [API].
type Option func(*config)

type config struct {
	filters    FilterStatuser
	explainer  Explainer
	log        Searcher
	rates      *Rates
	components []ComponentsFunc
	token      string
	logger     *slog.Logger
}

func defaultConfig() config {
	return config{logger: slog.New(slog.DiscardHandler)}
}

// WithExplainer serves /api/v1/explain with e, usually the
// *delivery.Agent.
// Default: nil (explain answers 501).
func WithExplainer(e Explainer) Option { return func(c *config) { c.explainer = e } }

// WithDeliveryLog serves /api/v1/log from s, usually a *maillog.Log.
// Default: nil (the log search answers 501).
func WithDeliveryLog(s Searcher) Option { return func(c *config) { c.log = s } }

// WithToken requires "Authorization: Bearer <token>" on every request.
// Set one whenever the API is reachable from beyond loopback.
// Default: "" (no authentication).
func WithToken(token string) Option { return func(c *config) { c.token = token } }

// WithLogger sets the logger for operations (each one is logged) and
// internal errors.
// Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithRates serves the per-minute delivery counts of r on the status page.
// Default: nil (no charts data).
func WithRates(r *Rates) Option { return func(c *config) { c.rates = r } }

// WithComponents adds a source of component states (readiness checks,
// circuit breakers, pool replicas) to the status page.
// Default: none.
func WithComponents(f ComponentsFunc) Option {
	return func(c *config) { c.components = append(c.components, f) }
}

// WithFilters shows the filters' circuit breakers in explain (the
// post-queue ones decide whether a queued message is scanned or held by
// a failure policy), usually the *filter.Chain the agent runs.
// Default: nil.
func WithFilters(f FilterStatuser) Option { return func(c *config) { c.filters = f } }
