// Command relay is the smallest useful sluice program: an SMTP listener
// that queues mail durably and relays it to one smarthost. Copy it as the
// starting point of your own gateway.
//
//	go run ./examples/relay -listen 127.0.0.1:2525 -spool /tmp/relay-spool -smarthost 127.0.0.1:25
//
// Only clients on loopback may relay (the acceptor's default trusted
// networks); anyone else gets "554 5.7.1 relay access denied".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/queue"
	"github.com/sluicemta/sluice/smtp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2525", "SMTP listen address")
	spool := flag.String("spool", "relay-spool", "spool directory")
	smarthost := flag.String("smarthost", "", "relay all mail to this host:port (required)")
	flag.Parse()
	if *smarthost == "" {
		fmt.Fprintln(os.Stderr, "relay: -smarthost is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, l, *spool, *smarthost, log); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}

// run serves SMTP on l, queueing into spool and relaying to smarthost,
// until ctx is cancelled; then it drains and returns.
func run(ctx context.Context, l net.Listener, spool, smarthost string, log *slog.Logger) error {
	q, err := queue.New(spool, queue.WithLogger(log))
	if err != nil {
		return err
	}
	agent, err := delivery.New(q, delivery.WithSmarthost(smarthost), delivery.WithLogger(log))
	if err != nil {
		q.Close()
		return err
	}
	srv, err := smtp.New(q, smtp.WithLogger(log))
	if err != nil {
		q.Close()
		return err
	}
	go q.Serve(agent)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.Info("relay listening", "addr", l.Addr().String(), "smarthost", smarthost)

	select {
	case <-ctx.Done():
	case err := <-served:
		q.Close()
		return err
	}
	// Stop taking mail first, then let deliveries in flight finish. Mail
	// still queued stays in the spool for the next start.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	if serr := <-served; !errors.Is(serr, smtp.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return errors.Join(err, q.Shutdown(shutdownCtx))
}
