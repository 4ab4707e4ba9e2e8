package dkim_test

import (
	"context"
	"crypto/ed25519"
	"strings"
	"testing"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/sluicemta/sluice/filter/dkim"
)

// FuzzSign: whatever the message, signing does not panic, and every
// signature it makes verifies on the message as a receiver stores it.
func FuzzSign(f *testing.F) {
	for _, s := range []string{
		testMessage,
		"From: a@example.com\r\n\r\n",
		"From: a@example.com\r\nFrom: b@example.com\r\nSubject: x\r\n\r\nbody",
		"From: =?utf-8?q?J=C3=B6rg?= <j@sub.example.com>\r\nSubject:\r\n folded\r\n\r\n\r\n\r\n",
		"From: a@example.com\n\nbare LF\n",
		"From: \"a@example.org\" <a@example.com>\r\n\r\nx",
		"Subject: no from\r\n\r\nx",
	} {
		f.Add(s)
	}
	key := dkim.Key{Domain: "example.com", Selector: "fz", Signer: ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))}
	record, err := key.Record()
	if err != nil {
		f.Fatal(err)
	}
	lookup := func(name string) ([]string, error) { return []string{record}, nil }
	s, err := dkim.New([]dkim.Key{key}, dkim.WithSignIf(dkim.Always))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		if len(msg) > 1<<16 {
			return
		}
		v, err := s.Check(context.Background(), authedMessage(msg))
		if err != nil || len(v.Headers) == 0 {
			return
		}
		vs, err := msgauth.VerifyWithOptions(strings.NewReader(store(v.Headers, msg)), &msgauth.VerifyOptions{LookupTXT: lookup})
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if len(vs) != 1 || vs[0].Err != nil {
			t.Fatalf("signed message does not verify: %+v\n%q", vs, store(v.Headers, msg))
		}
	})
}
