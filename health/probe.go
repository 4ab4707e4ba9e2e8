package health

import (
	"context"
	"fmt"
	"net"
	"net/textproto"
	"time"
)

// SMTPProbe returns a Checker that opens an SMTP session with the server at
// addr ("host:port") and reports it healthy only if the server greets with
// 220, answers EHLO with 250 and takes QUIT, all within timeout (or the
// check's context deadline, if sooner). A port that accepts connections but
// never greets is unhealthy: that is the failure a TCP probe misses.
func SMTPProbe(addr string, timeout time.Duration) Checker {
	return CheckerFunc(func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := probeSMTP(ctx, addr); err != nil {
			return fmt.Errorf("health: smtp probe %s: %w", addr, err)
		}
		return nil
	})
}

func probeSMTP(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return err
		}
	}
	// Closing the connection unblocks a read if ctx is cancelled before
	// its deadline (the caller gave up).
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if err := command(tp, "EHLO sluice-health-probe", 250); err != nil {
		return err
	}
	return command(tp, "QUIT", 221)
}

func command(tp *textproto.Conn, cmd string, want int) error {
	if err := tp.PrintfLine("%s", cmd); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if _, _, err := tp.ReadResponse(want); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return nil
}
