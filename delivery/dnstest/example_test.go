package dnstest_test

import (
	"fmt"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemta/sluice/delivery/dnstest"
)

func Example() {
	srv, err := dnstest.NewServer(
		"example.com. 300 IN MX 10 mx.example.com.",
		"mx.example.com. 300 IN A 127.0.0.1",
	)
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	c := &dns.Client{Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("example.com.", dns.TypeMX)
	r, _, err := c.Exchange(m, srv.Addr())
	if err != nil {
		panic(err)
	}
	for _, rr := range r.Answer {
		mx := rr.(*dns.MX)
		fmt.Println(mx.Preference, mx.Mx)
	}

	srv.SetRcode("example.com", dns.RcodeServerFailure)
	r, _, err = c.Exchange(m, srv.Addr())
	if err != nil {
		panic(err)
	}
	fmt.Println(dns.RcodeToString[r.Rcode])
	// Output:
	// 10 mx.example.com.
	// SERVFAIL
}
