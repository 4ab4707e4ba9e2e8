package admin_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluicemta/sluice/admin"
)

// Without a token (a loopback listener), the API serves only requests that
// no page of another web site can have made through the operator's
// browser: a cross-site POST would flush, bounce or delete mail.
func TestNoTokenRefusesCrossSiteRequests(t *testing.T) {
	d := newDaemon(t)
	host := strings.TrimPrefix(d.srv.URL, "http://") // 127.0.0.1:port
	for _, tc := range []struct {
		name    string
		host    string
		headers map[string]string
		want    int
	}{
		{"the CLI (no browser headers)", "", nil, 200},
		{"localhost", "localhost:8025", nil, 200},
		{"the status page's own fetch", "", map[string]string{"Origin": "http://" + host, "Sec-Fetch-Site": "same-origin"}, 200},
		{"typed into the address bar", "", map[string]string{"Sec-Fetch-Site": "none"}, 200},
		{"a cross-site form", "", map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, 403},
		{"a cross-site form, older browser", "", map[string]string{"Origin": "http://evil.example"}, 403},
		{"a same-site page on another port", "", map[string]string{"Sec-Fetch-Site": "same-site"}, 403},
		{"a page that rebound its name to 127.0.0.1", "evil.example:8025", map[string]string{"Origin": "http://evil.example:8025", "Sec-Fetch-Site": "same-origin"}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest("POST", d.srv.URL+"/api/v1/queue/flush", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := d.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("POST flush: %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

// With a token, the token decides, and Protect puts other handlers of the
// listener (pprof in sluice serve) behind the same check.
func TestProtect(t *testing.T) {
	d := newDaemon(t)
	api, err := admin.New(d.q, admin.WithToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	h := api.Protect(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("profile")) }))
	for _, tc := range []struct {
		auth string
		want int
	}{{"", 401}, {"Bearer s3cre", 401}, {"Bearer s3cret", 200}} {
		req, _ := http.NewRequest("GET", "http://127.0.0.1/debug/pprof/", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("Authorization %q: %d, want %d", tc.auth, rec.Code, tc.want)
		}
	}
}
