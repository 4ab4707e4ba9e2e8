package sluice_test

import (
	"errors"
	"fmt"

	"github.com/sluicemta/sluice"
)

func ExampleParseMailbox() {
	m, err := sluice.ParseMailbox("Bob.Smith@Example.COM", false)
	fmt.Println(m.Local, m.Domain, err)
	_, err = sluice.ParseMailbox("bob..smith@example.com", false)
	fmt.Println(errors.Is(err, sluice.ErrInvalidAddress))
	// Output:
	// Bob.Smith Example.COM <nil>
	// true
}

func ExampleClassify() {
	err := fmt.Errorf("delivery: rcpt: %w", sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no such user"))
	r, _ := sluice.ReplyOf(err)
	fmt.Println(sluice.Classify(err), r)
	// Output: bounced 550 5.1.1 no such user
}
