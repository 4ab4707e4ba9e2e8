package maillog

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/sluicemta/sluice/delivery"
)

func fuzzRecord(s1, s2 string, n int, f float64, ns int64) *delivery.Record {
	return &delivery.Record{
		Time: time.Unix(0, ns).UTC(), QueueID: s1, From: s2, To: s1 + s2, Route: s2, Relay: s1,
		IP: s2 + s1, SourceIP: s1, TLS: s2, Reply: s1 + "\n" + s2, Code: n, Enhanced: s2, Text: s1,
		Attempt: -n, Result: s2, Category: delivery.Category(s1), Delay: f, Duration: -f / 3,
	}
}

// TestEncodeAsEncodingJSON: appendRecord writes what json.Marshal writes
// for every field of delivery.Record; a field added to Record and not to
// appendRecord fails here.
func TestEncodeAsEncodingJSON(t *testing.T) {
	if n := reflect.TypeFor[delivery.Record]().NumField(); n != 18 {
		t.Fatalf("delivery.Record has %d fields; appendRecord writes 18", n)
	}
	for _, r := range []*delivery.Record{
		{},
		fuzzRecord("06H0BU7564U5DJ4D7S3G", "a@example.org", 250, 0.003, 1764400000123456789),
		fuzzRecord("<&>\"\\\x00\x1f\x7f", "é\u2028\u2029\xff\xfe", 550, 1e-7, 0),
		fuzzRecord("\b\f\n\r\t", "🙂", 421, 1e21, -1),
		fuzzRecord("", "", 0, 123456789.125, 1),
		{Time: time.Date(2026, 11, 29, 18, 0, 0, 5000, time.FixedZone("", 5*3600+1800)), Delay: 2.5},
	} {
		checkEncode(t, r)
	}
}

func checkEncode(t *testing.T, r *delivery.Record) {
	t.Helper()
	want, err := json.Marshal(r)
	if err != nil {
		return // a time encoding/json refuses (a year past 9999): not compared
	}
	want = append(want, '\n')
	if got := appendRecord(nil, r); string(got) != string(want) {
		t.Fatalf("appendRecord\n%s\nencoding/json\n%s", got, want)
	}
}

func FuzzEncodeAsEncodingJSON(f *testing.F) {
	f.Add("06H0BU7564U5DJ4D7S3G", "a@example.org", 250, 0.003, int64(1764400000123456789))
	f.Add("<&>", "\xff\u2028", -1, 1e-9, int64(0))
	f.Fuzz(func(t *testing.T, s1, s2 string, n int, fl float64, ns int64) {
		if math.IsNaN(fl) || math.IsInf(fl, 0) {
			return // encoding/json refuses them; appendRecord writes 0
		}
		checkEncode(t, fuzzRecord(s1, s2, n, fl, ns))
	})
}
