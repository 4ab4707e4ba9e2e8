package delivery

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRoutesLookup(t *testing.T) {
	pools := []Pool{{Name: "p", Hosts: []PoolHost{{Addr: "192.0.2.1:25"}}}}
	rt, err := NewRoutes(pools, []Route{
		{Domain: "example.com", Sender: "vip.test", Pool: "p"},
		{Domain: "example.com", TLS: TLSRequired},
		{Domain: ".example.com", Egress: Egress{SourceIP: netip.MustParseAddr("192.0.2.9")}},
		{Domain: "Comcast.NET", Pool: "p"},
		{Domain: "*", Sender: ".bulk.test", Fallback: "p"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rcpt, sender string
		want         int // index of the route, -1 for none
	}{
		{"example.com", "vip.test", 0},
		{"example.com", "other.test", 1},
		{"EXAMPLE.com", "", 1},
		{"mail.example.com", "", 2},
		{"notexample.com", "", -1},
		{"comcast.net", "x.test", 3},
		{"anything.test", "a.bulk.test", 4},
		{"anything.test", "bulk.test", -1},
		{"anything.test", "", -1},
	}
	for _, tt := range tests {
		got := rt.lookup(tt.rcpt, tt.sender)
		want := (*Route)(nil)
		if tt.want >= 0 {
			want = &rt.routes[tt.want]
		}
		if got != want {
			t.Errorf("lookup(%q, %q) = %+v, want route %d", tt.rcpt, tt.sender, got, tt.want)
		}
	}
	if (*Routes)(nil).lookup("a.test", "") != nil {
		t.Error("a nil table routed something")
	}
}

func TestNewRoutesValidates(t *testing.T) {
	ok := Pool{Name: "p", Hosts: []PoolHost{{Addr: "192.0.2.1:25"}}}
	tests := []struct {
		name  string
		pools []Pool
		route Route
		want  string
	}{
		{"unknown pool", []Pool{ok}, Route{Domain: "*", Pool: "q"}, `unknown pool "q"`},
		{"unknown fallback", []Pool{ok}, Route{Domain: "*", Fallback: "q"}, `unknown pool "q"`},
		{"bad pattern", []Pool{ok}, Route{Domain: "exa mple.com"}, "bad pattern"},
		{"bad sender pattern", []Pool{ok}, Route{Domain: "*", Sender: "..x"}, "bad pattern"},
		{"bad HELO", []Pool{ok}, Route{Domain: "*", Egress: Egress{Helo: "a b"}}, "bad HELO"},
		{"pool without hosts", []Pool{{Name: "e"}}, Route{Domain: "*"}, "no hosts"},
		{"pool host without port", []Pool{{Name: "e", Hosts: []PoolHost{{Addr: "relay.test"}}}}, Route{Domain: "*"}, "missing port"},
		{"AUTH without TLS", []Pool{{Name: "e", Hosts: ok.Hosts, Username: "u", TLS: TLSNone}}, Route{Domain: "*"}, "AUTH needs TLS"},
		{"duplicate pool", []Pool{ok, ok}, Route{Domain: "*"}, "duplicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRoutes(tt.pools, []Route{tt.route})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
