package smtptest_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/smtp/smtptest"
)

func Example() {
	sink, err := smtptest.NewSink(smtptest.WithRcptFunc(func(from, to string) error {
		if strings.HasPrefix(to, "nobody@") {
			return sluice.NewReply(550, sluice.EnhancedCode{5, 1, 1}, "no such user")
		}
		return nil
	}))
	if err != nil {
		panic(err)
	}
	defer sink.Close()

	// The code under test sends mail to sink.Addr().
	send := func(to string) error {
		c, err := smtp.Dial(sink.Addr())
		if err != nil {
			return err
		}
		defer c.Close()
		c.CommandTimeout = 5 * time.Second
		return c.SendMail("alice@example.org", []string{to}, strings.NewReader("Subject: hello\r\n\r\nhi\r\n"))
	}
	fmt.Println("refused:", send("nobody@example.com"))
	fmt.Println("sent:", send("bob@example.com"))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sink.WaitFor(ctx, 1); err != nil {
		panic(err)
	}
	m := sink.Messages()[0]
	fmt.Printf("%s -> %v: %q\n", m.From, m.To, m.Data)
	// Output:
	// refused: SMTP error 550: no such user
	// sent: <nil>
	// alice@example.org -> [bob@example.com]: "Subject: hello\r\n\r\nhi\r\n"
}
