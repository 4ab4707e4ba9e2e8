package jsonenc

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
)

// strs are strings encoding/json escapes, each in its own way.
var strs = []string{
	"", "plain", `"quoted"`, `back\slash`, "<a>&b", "a<b", "a>b", "a&b",
	"tab\tnew\nline\r", "\x00\x01\x1f\x7f", "\b\f", "caf\u00e9", "\u2028\u2029",
	"bad \xff\xfe utf-8", "\xe2\x82", "日本@例え.jp", "\U0001F600",
}

func checkString(t *testing.T, s string) {
	t.Helper()
	want, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := AppendString([]byte("x"), s); !bytes.Equal(got[1:], want) || got[0] != 'x' {
		t.Errorf("AppendString(%q) = %s, want x%s", s, got, want)
	}
}

func checkFloat(t *testing.T, f float64) {
	t.Helper()
	want, err := json.Marshal(f)
	if err != nil {
		want = []byte("0") // not finite: written as 0
	}
	if got := AppendFloat(nil, f); !bytes.Equal(got, want) {
		t.Errorf("AppendFloat(%v) = %s, want %s", f, got, want)
	}
}

func TestAppendAsEncodingJSON(t *testing.T) {
	for _, s := range strs {
		checkString(t, s)
	}
	for _, f := range []float64{0, 1, -1.5, 0.001, 1e-7, 1.234e-9, 1e20, 1e21, 123456789.125,
		math.MaxFloat64, math.SmallestNonzeroFloat64, math.Inf(1), math.NaN()} {
		checkFloat(t, f)
	}
}

func FuzzAppendAsEncodingJSON(f *testing.F) {
	for _, s := range strs {
		f.Add(s, 1.5)
	}
	f.Fuzz(func(t *testing.T, s string, x float64) {
		checkString(t, s)
		checkFloat(t, x)
	})
}
