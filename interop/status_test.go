//go:build interop

package interop

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// The status page, loaded in headless Chromium from a running daemon that
// has mail queued, delivered and bounced: the queue table, both charts
// and the readiness row are drawn from live data, a screenshot is saved,
// and the search form's query returns the attempts for a recipient
// (seed 002's troubleshooting page).
func TestStatusPageInChromium(t *testing.T) {
	t.Parallel()
	chromium := tool(t, "chromium")
	swaksBin := tool(t, "swaks")
	down, reject, snk := tempFailServer(t), rejectRcptServer(t), startSink(t)
	srv := startSluiceWith(t, t.TempDir(), `
[[delivery.pool]]
name = "down"
hosts = ["`+down+`"]

[[delivery.pool]]
name = "reject"
hosts = ["`+reject+`"]

[[delivery.pool]]
name = "sink"
hosts = ["`+snk.addr+`"]

[[delivery.route]]
domain = "later.test"
pool = "down"

[[delivery.route]]
domain = "gone.test"
pool = "reject"

[[delivery.route]]
domain = "*"
pool = "sink"
`)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for i, to := range []string{"b@later.test", "c@later.test", "d@now.test", "e@gone.test"} {
		file := messageFile(t, "From: a@example.org\nTo: "+to+"\nSubject: status "+string(rune('a'+i))+"\n\nbody\n")
		if ok, out := swaks(ctx, swaksBin, srv.smtpAddr, "a@example.org", to, file); !ok {
			t.Fatalf("swaks to %s not acknowledged:\n%s", to, out)
		}
	}
	// Wait for an attempt of each: deferred, delivered, bounced.
	if !poll(30*time.Second, func() bool {
		var seen []string
		for _, l := range srv.log.snapshot() {
			for _, r := range []string{`"result":"deferred"`, `"result":"delivered"`, `"result":"bounced"`} {
				if strings.Contains(l, `"msg":"delivery"`) && strings.Contains(l, r) && !slicesContains(seen, r) {
					seen = append(seen, r)
				}
			}
		}
		return len(seen) == 3
	}) {
		t.Fatal("no deferred, delivered and bounced attempts within 30s")
	}

	dir := t.TempDir()
	browse := func(url string, extra ...string) string {
		t.Helper()
		args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + filepath.Join(dir, "profile"),
			"--virtual-time-budget=10000"}, extra...)
		cmd := exec.CommandContext(ctx, chromium, append(args, url)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium %s: %v\n%s", url, err, stderr.String())
		}
		return string(out)
	}
	base := "http://" + srv.httpAddr + "/status"
	dom := browse(base, "--dump-dom")
	checks := []struct{ what, re string }{
		{"queue table row for later.test with 2 messages", `<tr class="dest"><td>later\.test</td><td class="num">2</td>`},
		{"the totals line", `<div id="totals" class="muted">pending \d+ · deferred \d+ · held 0 · in flight \d+</div>`},
		{"a delivery bar", `<svg id="rate-chart"[^>]*>.*<rect class="bar bar-delivered"`},
		{"a soft bounce bar", `<svg id="bounce-chart"[^>]*>.*<rect class="bar bar-deferred"`},
		{"a hard bounce bar", `<svg id="bounce-chart"[^>]*>.*<rect class="bar bar-bounced"`},
		{"the readiness row", `<tr class="component"><td>readiness</td><td>sluice</td><td class="state-ready">ready</td>`},
		{"no error shown", `<div id="error"></div>`},
	}
	for _, c := range checks {
		if !regexp.MustCompile(c.re).MatchString(dom) {
			t.Errorf("status page has no %s (%s); DOM:\n%s", c.what, c.re, dom)
		}
	}

	shot := filepath.Join(dir, "status.png")
	browse(base, "--screenshot="+shot, "--window-size=1280,1100")
	if keep := os.Getenv("SLUICE_SCREENSHOT"); keep != "" {
		defer func() { b, _ := os.ReadFile(shot); os.WriteFile(keep, b, 0o644) }()
	}
	if b, err := os.ReadFile(shot); err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
		t.Errorf("screenshot %s: %d bytes, %v", shot, len(b), err)
	} else {
		t.Logf("screenshot: %s (%d bytes)", shot, len(b))
	}

	// The search form is a GET to the page itself.
	dom = browse(base+"?rcpt=b%40later.test&since=1h&result=", "--dump-dom")
	rows := regexp.MustCompile(`<tr class="attempt">.*?</tr>`).FindAllString(dom, -1)
	if len(rows) == 0 {
		t.Fatalf("search for b@later.test returned no attempts; DOM:\n%s", dom)
	}
	with421 := 0
	for _, r := range rows {
		if !strings.Contains(r, "<td>b@later.test</td>") || !strings.Contains(r, `<td class="result-deferred">deferred</td>`) {
			t.Errorf("attempt row %s, want b@later.test deferred", r)
		}
		if strings.Contains(r, "421 4.3.2 down for the test") {
			with421++
		}
	}
	if with421 == 0 {
		t.Errorf("no attempt row shows the next hop's 421 reply: %v", rows)
	}
	if !strings.Contains(dom, `attempts for b@later.test, newest first`) {
		t.Errorf("no search summary in the DOM")
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// rejectRcptServer is a next hop that refuses every recipient with 550.
func rejectRcptServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				r := bufio.NewReader(c)
				c.Write([]byte("220 reject.test ESMTP\r\n"))
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.ToUpper(strings.TrimSpace(line))
					switch {
					case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
						c.Write([]byte("250 reject.test\r\n"))
					case strings.HasPrefix(cmd, "RCPT"):
						c.Write([]byte("550 5.1.1 no such user here\r\n"))
					case strings.HasPrefix(cmd, "QUIT"):
						c.Write([]byte("221 bye\r\n"))
						return
					default:
						c.Write([]byte("250 ok\r\n"))
					}
				}
			})
		}
	})
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().String()
}
