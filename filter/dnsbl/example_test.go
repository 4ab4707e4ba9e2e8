package dnsbl_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/sluicemta/sluice/delivery/dnstest"
	"github.com/sluicemta/sluice/filter/dnsbl"
)

func Example() {
	// A DNS server on loopback stands in for the lists; in a program the
	// resolver is a recursive resolver such as "127.0.0.1:53".
	lists, err := dnstest.NewServer(
		"2.2.0.192.bl.example. 300 IN A 127.0.0.2",
		"2.2.0.192.wl.example. 300 IN A 127.0.10.3",
		"3.2.0.192.bl.example. 300 IN A 127.0.0.4",
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lists.Close()

	sbl, _ := dnsbl.ParseRange("127.0.0.2-127.0.0.3")
	xbl, _ := dnsbl.ParseRange("127.0.0.4-127.0.0.7")
	wl, _ := dnsbl.ParseRange("127.0.10.0/24")
	c, err := dnsbl.New(lists.Addr(), []dnsbl.Zone{
		{Name: "bl.example", Weight: 5, Codes: []dnsbl.Range{sbl}},
		{Name: "bl.example", Weight: 2, Codes: []dnsbl.Range{xbl}},
		{Name: "wl.example", Weight: -4, Codes: []dnsbl.Range{wl}},
	}, dnsbl.WithRejectScore(2))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ip := range []string{"192.0.2.2", "192.0.2.3", "192.0.2.4"} {
		r := c.Lookup(context.Background(), netip.MustParseAddr(ip))
		fmt.Println(ip, r.Score, r.Zones())
	}
	// Output:
	// 192.0.2.2 1 [bl.example wl.example]
	// 192.0.2.3 2 [bl.example]
	// 192.0.2.4 0 []
}
