package fdcount

import (
	"os"
	"testing"
)

// TestOpen: opening files raises the count by as many.
func TestOpen(t *testing.T) {
	before, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	after, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	if after != before+5 {
		t.Errorf("%d open after opening 5 more than %d", after, before)
	}
}
