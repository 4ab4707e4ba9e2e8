package health_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"

	"github.com/sluicemta/sluice/health"
)

func Example() {
	h, err := health.New()
	if err != nil {
		panic(err)
	}
	spoolOK := true
	h.AddReadiness("queue", health.CheckerFunc(func(context.Context) error {
		if !spoolOK {
			return fmt.Errorf("spool not writable")
		}
		return nil
	}))
	// In a program: h.AddReadiness("smtp", health.SMTPProbe("127.0.0.1:25", 2*time.Second))
	// and serve h.Handler() on an http.Server.
	srv := httptest.NewServer(h.Handler())
	defer srv.Close()

	show := func() {
		resp, err := srv.Client().Get(srv.URL + "/readyz")
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d %s", resp.StatusCode, body)
	}
	show()
	spoolOK = false
	show()
	spoolOK = true
	h.SetDraining(true) // on SIGTERM, before the listeners close
	show()
	// Output:
	// 200 {"status":"ready","accepting":true,"delivering":true}
	// 503 {"status":"not ready","accepting":false,"delivering":true,"failing":{"queue":"spool not writable"}}
	// 503 {"status":"draining","accepting":false,"delivering":false}
}

func ExamplePool() {
	// A real program probes with the backend's protocol, for example
	// health.SpamdPing(); this one reports every replica healthy.
	healthy := func(context.Context, string) error { return nil }
	p, err := health.NewPool("spamd", []string{"10.0.0.1:783", "10.0.0.2:783"}, healthy,
		health.WithStrategy(health.OrderedFailover), health.WithEjectAfter(1))
	if err != nil {
		panic(err)
	}
	defer p.Close()

	addr, _ := p.Pick()
	fmt.Println("first:", addr)
	// The caller dials addr and reports the outcome: this one failed.
	p.Done(addr, fmt.Errorf("connection refused"))

	addr, _ = p.Pick()
	fmt.Println("then:", addr)
	p.Done(addr, nil)
	for _, e := range p.Endpoints() {
		fmt.Println(e.Addr, "up:", e.Up)
	}
	// Output:
	// first: 10.0.0.1:783
	// then: 10.0.0.2:783
	// 10.0.0.1:783 up: false
	// 10.0.0.2:783 up: true
}
