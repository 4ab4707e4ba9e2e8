package smtp_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sluicemta/sluice/delivery/dnstest"
	"github.com/sluicemta/sluice/smtp"
)

// TestDNSBLScreening: clients, placed by a PROXY header, are scored by the
// blocklists that list them; a score at the threshold gets 554 5.7.1
// instead of the greeting, below it the greeting, and a dead blocklist
// lets everyone through.
func TestDNSBLScreening(t *testing.T) {
	dns, err := dnstest.NewServer(
		"2.2.0.192.bl.test. 300 IN A 127.0.0.2", // 192.0.2.2: on both lists
		"2.2.0.192.bl2.test. 300 IN A 127.0.0.4",
		"3.2.0.192.bl.test. 300 IN A 127.0.0.2",       // 192.0.2.3: on one list
		"4.2.0.192.bl.test. 300 IN A 127.255.255.254", // an error code, not a listing
		"bl.test. 300 IN SOA ns.bl.test. host.bl.test. 1 3600 600 86400 300",
		"bl2.test. 300 IN SOA ns.bl2.test. host.bl2.test. 1 3600 600 86400 300",
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	_, addr := startServer(t, &recorder{},
		smtp.WithProxyNetworks(netip.MustParsePrefix("127.0.0.0/8")),
		smtp.WithTrustedNetworks(netip.MustParsePrefix("192.0.2.100/32")),
		smtp.WithDNSBL(dns.Addr(), 2, smtp.DNSBL{Zone: "bl.test", Weight: 1}, smtp.DNSBL{Zone: "bl2.test", Weight: 1}))
	from := func(src string) *client {
		c := dial(t, addr)
		c.send("PROXY TCP4 " + src + " 127.0.0.1 40000 25")
		return c
	}
	from("192.0.2.2").expect("554 5.7.1 Service unavailable; client [192.0.2.2] blocked using bl.test, bl2.test")
	from("192.0.2.3").expect("220 ") // score 1, below the threshold
	from("192.0.2.4").expect("220 ") // 127.255.255.254 is not a listing
	from("192.0.2.9").expect("220 ") // NXDOMAIN
	before := dns.Queries()
	from("192.0.2.2").expect("554 5.7.1") // from the cache
	if n := dns.Queries() - before; n != 0 {
		t.Errorf("%d DNS queries for a client screened a moment ago, want 0 (cached)", n)
	}

	dns.Hang("5.2.0.192.bl.test.") // a dead list: the lookup times out
	_, addr2 := startServer(t, &recorder{},
		smtp.WithProxyNetworks(netip.MustParsePrefix("127.0.0.0/8")),
		smtp.WithDNSBL(dns.Addr(), 1, smtp.DNSBL{Zone: "bl.test", Weight: 1}),
		smtp.WithDNSBLTimeout(200*time.Millisecond))
	c := dial(t, addr2)
	c.send("PROXY TCP4 192.0.2.5 127.0.0.1 40000 25")
	within(t, 2*time.Second, func() { c.expect("220 ") })
}

func TestDNSBLOptionsAreChecked(t *testing.T) {
	for _, opt := range []smtp.Option{
		smtp.WithDNSBL("127.0.0.1", 1, smtp.DNSBL{Zone: "bl.test", Weight: 1}),
		smtp.WithDNSBL("127.0.0.1:53", 0, smtp.DNSBL{Zone: "bl.test", Weight: 1}),
		smtp.WithDNSBL("127.0.0.1:53", 1, smtp.DNSBL{Zone: "bl_test", Weight: 1}),
		smtp.WithDNSBL("127.0.0.1:53", 1, smtp.DNSBL{Zone: "bl.test", Weight: 0}),
		smtp.WithDNSBLTimeout(0),
	} {
		if _, err := smtp.New(&recorder{}, opt); err == nil {
			t.Error("New accepted an invalid DNSBL option")
		}
	}
}
