package health

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Webhook is a [Notifier] that POSTs each alert as JSON (an [Alert]
// object, Content-Type application/json) to a URL. A delivery that fails
// with a network error, a timeout, 408, 429 or a 5xx status is retried
// with exponential backoff, a bounded number of times; any 2xx status is
// success; other statuses fail at once. Every attempt carries the same
// alert ID, also in the Idempotency-Key header, so a receiver can drop a
// duplicate left by an attempt whose answer was lost.
type Webhook struct {
	url   string
	shown string // url without its path and query, for errors
	cfg   webhookConfig
}

var _ Notifier = (*Webhook)(nil)

// NewWebhook returns a Webhook posting to rawURL, an http or https URL.
func NewWebhook(rawURL string, opts ...WebhookOption) (*Webhook, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("health: webhook URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("health: webhook URL %s://%s/…: want http(s)://host/...", u.Scheme, u.Host)
	}
	cfg := defaultWebhookConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// Webhook URLs often carry a secret in their path or query (a chat
	// service's incoming hook): errors and logs name only the host.
	return &Webhook{url: u.String(), shown: u.Scheme + "://" + u.Host + "/…", cfg: cfg}, nil
}

// errPermanent marks a failure that a retry would not mend.
var errPermanent = errors.New("permanent")

// Notify posts a, retrying as described on [Webhook] until it succeeds,
// the attempts run out or ctx is done.
func (wh *Webhook) Notify(ctx context.Context, a Alert) error {
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("health: webhook: %w", err)
	}
	backoff := wh.cfg.backoff
	for attempt := 1; ; attempt++ {
		err = wh.post(ctx, a.ID, body)
		if err == nil || errors.Is(err, errPermanent) || attempt >= wh.cfg.attempts {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("health: webhook: gave up after %d attempts: %w (last: %w)", attempt, ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, wh.cfg.maxBackoff)
	}
	if err != nil {
		return fmt.Errorf("health: webhook: %w", err)
	}
	return nil
}

// post makes one attempt.
func (wh *Webhook) post(ctx context.Context, id string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, wh.cfg.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, wh.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %w", errPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", id)
	for k, v := range wh.cfg.header {
		req.Header[k] = append([]string(nil), v...)
	}
	resp, err := wh.cfg.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // its text holds the whole URL
			err = ue.Err
		}
		return fmt.Errorf("POST %s: %w", wh.shown, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return fmt.Errorf("POST %s: %s", wh.shown, resp.Status)
	}
	return fmt.Errorf("%w: POST %s: %s", errPermanent, wh.shown, resp.Status)
}

// WebhookOption configures a [Webhook] in [NewWebhook].
type WebhookOption func(*webhookConfig)

type webhookConfig struct {
	client     *http.Client
	attempts   int
	backoff    time.Duration
	maxBackoff time.Duration
	timeout    time.Duration
	header     http.Header
}

// defaultWebhookConfig holds every default of the Webhook, in one place.
func defaultWebhookConfig() webhookConfig {
	return webhookConfig{
		client:     &http.Client{},
		attempts:   5,
		backoff:    time.Second,
		maxBackoff: 30 * time.Second,
		timeout:    10 * time.Second,
		header:     make(http.Header),
	}
}

func (c *webhookConfig) validate() error {
	var errs []error
	if c.client == nil {
		errs = append(errs, errors.New("webhook client is nil"))
	}
	if c.attempts < 1 {
		errs = append(errs, fmt.Errorf("webhook attempts %d: must be at least 1", c.attempts))
	}
	if c.backoff <= 0 || c.maxBackoff < c.backoff {
		errs = append(errs, fmt.Errorf("webhook backoff %v up to %v: must be positive and ordered", c.backoff, c.maxBackoff))
	}
	if c.timeout <= 0 {
		errs = append(errs, fmt.Errorf("webhook timeout %v: must be positive", c.timeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	return nil
}

// WithWebhookClient sets the HTTP client (its transport, TLS settings,
// proxy).
// Default: a new http.Client with the default transport.
func WithWebhookClient(c *http.Client) WebhookOption {
	return func(cfg *webhookConfig) { cfg.client = c }
}

// WithWebhookAttempts sets how many times an alert is posted at most.
// Default: 5.
func WithWebhookAttempts(n int) WebhookOption {
	return func(cfg *webhookConfig) { cfg.attempts = n }
}

// WithWebhookBackoff sets the wait before the first retry, doubled for
// each next one up to max.
// Default: 1s, up to 30s.
func WithWebhookBackoff(first, max time.Duration) WebhookOption {
	return func(cfg *webhookConfig) { cfg.backoff, cfg.maxBackoff = first, max }
}

// WithWebhookTimeout bounds each attempt.
// Default: 10s.
func WithWebhookTimeout(d time.Duration) WebhookOption {
	return func(cfg *webhookConfig) { cfg.timeout = d }
}

// WithWebhookHeader adds a header field to every request, such as an
// Authorization token.
// Default: none besides Content-Type and Idempotency-Key.
func WithWebhookHeader(name, value string) WebhookOption {
	return func(cfg *webhookConfig) { cfg.header.Add(name, value) }
}
