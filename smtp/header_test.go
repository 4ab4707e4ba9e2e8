package smtp

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
)

func TestReceivedHeader(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 30, 45, 0, time.FixedZone("", -5*3600))
	one := []sluice.Recipient{{Address: "bob@example.com"}}
	two := []sluice.Recipient{{Address: "bob@example.com"}, {Address: "carol@example.com"}}
	v4 := netip.MustParseAddrPort("192.0.2.7:40000")
	tests := []struct {
		name string
		env  sluice.Envelope
		want string
	}{
		{"one recipient", sluice.Envelope{Recipients: one, Client: sluice.ClientInfo{Addr: v4, Helo: "client.example.org"}},
			"Received: from client.example.org ([192.0.2.7]) by mx.test (sluice) with\r\n" +
				"\tESMTP for <bob@example.com>; Sun, 01 Mar 2026 12:30:45 -0500\r\n"},
		{"two recipients are not disclosed, TLS", sluice.Envelope{Recipients: two, Client: sluice.ClientInfo{Addr: v4, Helo: "c", TLS: true}},
			"Received: from c ([192.0.2.7]) by mx.test (sluice) with ESMTPS; Sun, 01 Mar\r\n" +
				"\t2026 12:30:45 -0500\r\n"},
		{"IPv6 and a hostile HELO", sluice.Envelope{Recipients: two,
			Client: sluice.ClientInfo{Addr: netip.MustParseAddrPort("[2001:db8::1]:25"), Helo: "evil\r\nBcc:\x00x"}},
			"Received: from evil??Bcc:?x ([IPv6:2001:db8::1]) by mx.test (sluice) with\r\n" +
				"\tESMTP; Sun, 01 Mar 2026 12:30:45 -0500\r\n"},
		{"unknown client", sluice.Envelope{Recipients: two},
			"Received: from unknown (unknown) by mx.test (sluice) with ESMTP; Sun, 01 Mar\r\n" +
				"\t2026 12:30:45 -0500\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := receivedHeader(&tt.env, "mx.test", now)
			if got != tt.want {
				t.Errorf("receivedHeader =\n%q\nwant\n%q", got, tt.want)
			}
			for _, line := range strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n") {
				if len(line) > maxLine {
					t.Errorf("line %q longer than %d", line, maxLine)
				}
			}
		})
	}
}

func TestFormatHeader(t *testing.T) {
	tests := []struct {
		name, value string
		want        string
		ok          bool
	}{
		{"X-Spam", "yes", "X-Spam: yes\r\n", true},
		{"X-Spam", "a\r\nInjected: 1", "X-Spam: a Injected: 1\r\n", true},
		{"X-Long", strings.Repeat("word ", 20),
			"X-Long: word word word word word word word word word word word word word word\r\n\tword word word word word word\r\n", true},
		{"Bad Name", "x", "", false},
		{"Bad:Name", "x", "", false},
		{"", "x", "", false},
	}
	for _, tt := range tests {
		got, ok := formatHeader(tt.name, tt.value)
		if got != tt.want || ok != tt.ok {
			t.Errorf("formatHeader(%q, %q) = %q, %v; want %q, %v", tt.name, tt.value, got, ok, tt.want, tt.ok)
		}
	}
}

func TestToSMTPError(t *testing.T) {
	tests := []struct {
		in   *sluice.Reply
		want gosmtp.SMTPError
	}{
		{sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no such user"),
			gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user"}},
		{sluice.NewReply(451, sluice.EnhancedCode{}, "later"),
			gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCodeNotSet, Message: "later"}},
		{replyQueued("ABC"),
			gosmtp.SMTPError{Code: 250, EnhancedCode: gosmtp.EnhancedCode{2, 0, 0}, Message: "queued as ABC"}},
	}
	for _, tt := range tests {
		if got := toSMTPError(tt.in); *got != tt.want {
			t.Errorf("toSMTPError(%v) = %+v, want %+v", tt.in, *got, tt.want)
		}
	}
}
