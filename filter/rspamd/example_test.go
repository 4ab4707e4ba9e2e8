package rspamd_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/rspamd"
	"github.com/sluicemta/sluice/health"
)

func Example() {
	// A stand-in for an rspamd normal worker ("127.0.0.1:11333" or
	// "unix:/run/rspamd/normal.sock" in production).
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ping" {
			io.WriteString(w, "pong\r\n")
			return
		}
		io.WriteString(w, `{"is_skipped":false,"score":7.5,"required_score":15.0,"action":"add header",`+
			`"symbols":{"BAYES_SPAM":{"name":"BAYES_SPAM","score":5.1}},"messages":{},`+
			`"milter":{"add_headers":{"X-Spamd-Bar":"+++++++"}}}`)
	}))
	defer srv.Close()

	pool, err := health.NewPool("rspamd", []string{srv.Listener.Addr().String()}, health.RspamdPing())
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	f, err := rspamd.New(pool)
	if err != nil {
		panic(err)
	}
	body := "Subject: hello\r\n\r\nhi\r\n"
	v, err := f.Check(context.Background(), &filter.Message{Body: strings.NewReader(body), Size: int64(len(body))})
	if err != nil {
		panic(err)
	}
	fmt.Println(v.Action)
	for _, h := range v.Headers {
		fmt.Printf("%s: %s\n", h.Name, h.Value)
	}
	// Output:
	// accept
	// X-Spam-Action: add header
	// X-Spam-Score: 7.50
	// X-Spam: Yes
	// X-Spamd-Bar: +++++++
}
