package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// latencies is what the Go client measured: the acceptance latency of each
// message, from MAIL FROM to the reply to the final ".".
type latencies struct {
	p50, p99 time.Duration
}

// sendAll sends count messages of size payload bytes to target over
// sessions concurrent SMTP sessions, one message per session transaction,
// as smtp-source -d does (a session stays open for many messages), and
// returns the latency percentiles. It speaks plain SMTP with
// net/textproto, so the client's own cost is small and the same for every
// contender. With pipelining it sends MAIL, RCPT and DATA as one group and
// then reads their three replies, as an MTA does to a server that offers
// PIPELINING (RFC 2920); every contender here offers it.
func sendAll(ctx context.Context, target string, sessions, count, size int, pipelining bool) (latencies, error) {
	body := message(size)
	var (
		next  atomic.Int64
		mu    sync.Mutex // guards lat and firstErr
		lat   = make([]time.Duration, 0, count)
		first error
		wg    sync.WaitGroup
	)
	for range sessions {
		wg.Go(func() {
			mine, err := session(ctx, target, body, pipelining, func() bool { return next.Add(1) <= int64(count) })
			mu.Lock()
			lat = append(lat, mine...)
			if err != nil && first == nil {
				first = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if first != nil {
		return latencies{}, first
	}
	if len(lat) != count {
		return latencies{}, fmt.Errorf("%d of %d messages accepted", len(lat), count)
	}
	slices.Sort(lat)
	return latencies{p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}, nil
}

// session sends messages while more() says so, over one connection.
func session(ctx context.Context, target, body string, pipelining bool, more func() bool) ([]time.Duration, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	tp := textproto.NewConn(c)
	tp.R = bufio.NewReaderSize(c, 4096)
	expect := func(code int) error {
		_, _, err := tp.ReadResponse(code)
		return err
	}
	cmd := func(code int, format string, args ...any) error {
		if err := tp.PrintfLine(format, args...); err != nil {
			return err
		}
		return expect(code)
	}
	if err := expect(220); err != nil {
		return nil, err
	}
	if err := cmd(250, "EHLO client.test"); err != nil {
		return nil, err
	}
	var lat []time.Duration
	envelope := func() error {
		if err := cmd(250, "MAIL FROM:<sender@example.org>"); err != nil {
			return err
		}
		if err := cmd(250, "RCPT TO:<rcpt@example.com>"); err != nil {
			return err
		}
		return cmd(354, "DATA")
	}
	if pipelining {
		envelope = func() error {
			tp.W.WriteString("MAIL FROM:<sender@example.org>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n")
			if err := tp.W.Flush(); err != nil {
				return err
			}
			return errors.Join(expect(250), expect(250), expect(354))
		}
	}
	for more() {
		start := time.Now()
		if err := envelope(); err != nil {
			return lat, err
		}
		if _, err := tp.W.WriteString(body); err != nil {
			return lat, err
		}
		if err := cmd(250, "."); err != nil {
			return lat, err
		}
		lat = append(lat, time.Since(start))
	}
	cmd(221, "QUIT")
	return lat, nil
}

// message returns a message of about size bytes, CRLF line endings, ready
// for DATA (no line starts with a dot).
func message(size int) string {
	var b strings.Builder
	b.WriteString("From: <sender@example.org>\r\nTo: <rcpt@example.com>\r\nSubject: relay benchmark\r\n\r\n")
	line := strings.Repeat("abcdefghij", 7) + "\r\n" // 72 octets
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.String()
}
