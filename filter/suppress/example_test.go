package suppress_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/suppress"
)

func Example() {
	dir, _ := os.MkdirTemp("", "suppress")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "suppress.txt")
	os.WriteFile(path, []byte("example.org bounce bob@example.com\n"), 0o600)

	store, err := suppress.OpenFile(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	f, _ := suppress.New(store)
	// At RCPT: refused in the SMTP dialogue. At the post-queue stage: a
	// verdict per recipient, which delivery turns into a DSN.
	chain, _ := filter.New(
		filter.WithFilter("suppress-rcpt", f, filter.AtStage(filter.StageRcpt)),
		filter.WithFilter("suppress-post", f, filter.AtStage(filter.StagePostQueue)),
	)
	env := &sluice.Envelope{From: "news@example.org", Recipients: []sluice.Recipient{{Address: "bob@example.com"}}}
	v := chain.RunStage(context.Background(), filter.StageRcpt, &filter.Message{Envelope: env})
	fmt.Println(v.Action, v.Reply)

	env.Recipients = append(env.Recipients, sluice.Recipient{Address: "carol@example.com"})
	v = chain.RunStage(context.Background(), filter.StagePostQueue, &filter.Message{Envelope: env})
	for _, r := range v.Recipients {
		fmt.Println(r.Address, r.Action)
	}
	// Output:
	// reject 550 5.7.1 bob@example.com is on the bounce list of this sending account
	// bob@example.com reject
}
