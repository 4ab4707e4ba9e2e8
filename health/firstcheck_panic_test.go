package health

import (
	"context"
	"testing"
)

// NewPool's first check turns a ProbeFunc that panics into a failed check,
// as a Probe does; the panic, on a goroutine of its own, ended the process.
func TestFirstCheckThatPanicsFails(t *testing.T) {
	check := func(context.Context, string) error { panic("boom") }
	p, err := NewPool("x", []string{"a:1"}, check)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Endpoints()[0].Up {
		t.Error("endpoint whose check panicked is up")
	}
}
