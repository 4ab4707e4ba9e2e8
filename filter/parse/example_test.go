package parse_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/parse"
)

func Example() {
	p, err := parse.New(parse.WithMaxHeaderFields(100))
	if err != nil {
		fmt.Println(err)
		return
	}
	chain, _ := filter.New(filter.WithFilter("parse", p))
	for _, body := range []string{
		"From: a@example.org\r\nSubject: fine\r\n\r\nhello\r\n",
		"From: a@example.org\r\nnot a header line\r\n\r\nhello\r\n",
	} {
		m := &filter.Message{
			Envelope: &sluice.Envelope{From: "a@example.org", Recipients: []sluice.Recipient{{Address: "b@example.com"}}},
			Body:     strings.NewReader(body),
			Size:     int64(len(body)),
		}
		v := chain.Run(context.Background(), m)
		fmt.Println(v.Action, v.Reply)
	}
	// Output:
	// accept <nil>
	// reject 550 5.6.0 message could not be parsed: header: message: malformed MIME header line: not a header line
}
