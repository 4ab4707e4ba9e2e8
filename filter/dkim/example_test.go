package dkim_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/dkim"
)

func Example() {
	// A key as "openssl genpkey -algorithm ed25519" writes it; real keys
	// are read with dkim.LoadKey.
	seed := []byte("an example seed of 32 bytes!!!!!")
	der, _ := x509.MarshalPKCS8PrivateKey(ed25519.NewKeyFromSeed(seed))
	key, err := dkim.ParseKey("example.com", "2026", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		fmt.Println(err)
		return
	}
	// What to publish in DNS.
	record, _ := key.Record()
	fmt.Println(key.RecordName(), "TXT", record)

	signer, err := dkim.New([]dkim.Key{key})
	if err != nil {
		fmt.Println(err)
		return
	}
	chain, err := filter.New(filter.WithFilter("dkim", signer))
	if err != nil {
		fmt.Println(err)
		return
	}
	msg := "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHello.\r\n"
	v := chain.Run(context.Background(), &filter.Message{
		Envelope: &sluice.Envelope{
			From:       "alice@example.com",
			Recipients: []sluice.Recipient{{Address: "bob@example.net"}},
			Client:     sluice.ClientInfo{AuthUser: "alice"}, // signed: authenticated
		},
		Body: strings.NewReader(msg),
		Size: int64(len(msg)),
	})
	for _, h := range v.Headers {
		fmt.Println(h.Name)
		for _, tag := range strings.Split(h.Value, ";") {
			if k, _, _ := strings.Cut(strings.TrimSpace(tag), "="); k == "a" || k == "d" || k == "s" || k == "h" {
				fmt.Println(" ", strings.TrimSpace(tag))
			}
		}
	}
	// Output:
	// 2026._domainkey.example.com. TXT v=DKIM1; k=ed25519; p=tJ9MV3YO91vi2s0mkUBYwYHDg5HnQrKjRmCI/7Aolp4=
	// DKIM-Signature
	//   a=ed25519-sha256
	//   d=example.com
	//   h=From:From:Reply-To:Subject:Subject:Date:To:To:Cc:Message-ID:MIME-Version:Content-Type:List-Unsubscribe:List-Unsubscribe-Post
	//   s=2026
}
