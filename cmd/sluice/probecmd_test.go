package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/filter/spamd/spamdtest"
	"github.com/sluicemta/sluice/internal/blackhole"
)

func TestProbeCommand(t *testing.T) {
	sink := newSink(t)
	spamd, err := spamdtest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spamd.Close() })
	dead := blackhole.Start(t, "127.0.0.1:0")
	tests := []struct {
		name   string
		args   []string
		code   int
		prefix string
	}{
		{"smtp ok", []string{"probe", sink.Addr()}, probeOK, "SMTP OK - " + sink.Addr() + " answered in "},
		{"open port, no greeting", []string{"probe", "--timeout", "300ms", dead}, probeCritical, "SMTP CRITICAL - " + dead + ": "},
		{"a TCP check calls it healthy", []string{"probe", "--proto", "tcp", dead}, probeOK, "TCP OK - "},
		{"spamd ping", []string{"probe", "--proto", "spamd", spamd.Addr()}, probeOK, "SPAMD OK - "},
		{"spamd protocol against an SMTP server", []string{"probe", "--proto", "spamd", "--timeout", "1s", sink.Addr()}, probeCritical, "SPAMD CRITICAL - "},
		{"slower than the warning", []string{"probe", "--warning", "1ns", sink.Addr()}, probeWarning, "SMTP WARNING - "},
		{"unknown protocol", []string{"probe", "--proto", "gopher", sink.Addr()}, probeUnknown, ""},
		{"no address", []string{"probe"}, probeUnknown, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			code, stdout, stderr := runCmd(t, "", tc.args...)
			if code != tc.code || !strings.HasPrefix(stdout, tc.prefix) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", code, stdout, stderr, tc.code, tc.prefix)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("took %v", took)
			}
		})
	}
	code, stdout, _ := runCmd(t, "", "probe", "--json", "--timeout", "300ms", dead)
	var res probeResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != probeCritical || res.Status != "CRITICAL" || res.Error == "" {
		t.Errorf("--json: exit %d, %q (%v)", code, stdout, err)
	}
}
