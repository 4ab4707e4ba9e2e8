package spamd_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/spamd"
	"github.com/sluicemta/sluice/filter/spamd/spamdtest"
	"github.com/sluicemta/sluice/health"
)

func Example() {
	// Two spamd replicas; in production these are "10.0.0.1:783" or
	// "unix:/run/spamd.sock". Here they are loopback test servers.
	a, _ := spamdtest.NewServer()
	defer a.Close()
	b, _ := spamdtest.NewServer()
	defer b.Close()

	pool, err := health.NewPool("spamd", []string{a.Addr(), b.Addr()}, health.SpamdPing())
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	spam, err := spamd.New(pool, spamd.WithCommand(spamd.Symbols))
	if err != nil {
		panic(err)
	}
	chain, err := filter.New(filter.WithFilter("spamd", spam,
		filter.Timeout(10*time.Second), filter.OnError(filter.PolicyAccept)))
	if err != nil {
		panic(err)
	}

	body := "Subject: test\r\n\r\n" + spamdtest.GTUBE // no final newline: the filter adds it
	v := chain.Run(context.Background(), &filter.Message{Body: strings.NewReader(body), Size: int64(len(body))})
	fmt.Println(v.Action, v.Reply)
	for _, h := range v.Headers {
		fmt.Printf("%s: %s\n", h.Name, h.Value)
	}
	// Output:
	// reject 550 5.7.1 message rejected as spam (score 1000.0, required 5.0)
	// X-Spam-Flag: YES
	// X-Spam-Score: 1000.0
	// X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE
}
