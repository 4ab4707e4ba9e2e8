package queue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
)

// fillAll sets every field reachable from v to a value that is not its
// zero value and that differs from the others (strings "s1", "s2", ...;
// numbers 1, 2, ...; slices of two), so that a field the hand-written
// encoders leave out shows in the comparison with encoding/json.
func fillAll(t *testing.T, v reflect.Value, n *int) {
	*n++
	switch v.Interface().(type) {
	case time.Time:
		v.Set(reflect.ValueOf(time.Date(2026, 11, 30, 5, 6, 7, *n, time.FixedZone("", 3600))))
		return
	case netip.AddrPort:
		v.Set(reflect.ValueOf(netip.MustParseAddrPort(fmt.Sprintf("[fe80::%d%%eth0]:%d", *n, *n))))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", *n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint32:
		v.SetUint(uint64(*n))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillAll(t, v.Elem(), n)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fillAll(t, v.Index(i), n)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				t.Fatalf("%s.%s: unexported field, not handled by fillAll", v.Type(), v.Type().Field(i).Name)
			}
			fillAll(t, v.Field(i), n)
		}
	default:
		t.Fatalf("fillAll: %s: kind %s not handled; teach fillAll and the encoders about it", v.Type(), v.Kind())
	}
}

func checkEnvelopeJSON(t *testing.T, name string, se *storedEnvelope) {
	t.Helper()
	want, wantErr := json.Marshal(se)
	got, err := appendEnvelopeJSON(nil, se)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%s: error %v, encoding/json's %v", name, err, wantErr)
	}
	if wantErr == nil && !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got %s\nwant %s", name, got, want)
	}
}

func checkStateJSON(t *testing.T, name string, s *msgState) {
	t.Helper()
	want, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := appendStateJSON(nil, s); !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got %s\nwant %s", name, got, want)
	}
}

// tricky are strings encoding/json escapes, each in its own way.
var tricky = []string{
	"", `"quoted"`, `back\slash`, "<a>&b", "a<b", "a>b", "a&b", "tab\tnew\nline\r", "\x00\x01\x1f\x7f",
	"\b\f", "caf\u00e9", "\u2028\u2029", "bad \xff\xfe utf-8", "\xe2\x82", "日本@例え.jp",
}

func TestRecordJSONMatchesEncodingJSON(t *testing.T) {
	var n int
	var full storedEnvelope
	fillAll(t, reflect.ValueOf(&full).Elem(), &n)
	checkEnvelopeJSON(t, "every field set", &full)

	var st msgState
	fillAll(t, reflect.ValueOf(&st).Elem(), &n)
	checkStateJSON(t, "every state field set", &st)

	checkEnvelopeJSON(t, "no envelope", &storedEnvelope{})
	checkEnvelopeJSON(t, "zero envelope", &storedEnvelope{Env: &sluice.Envelope{}})
	checkEnvelopeJSON(t, "empty recipients", &storedEnvelope{Env: &sluice.Envelope{
		Recipients: []sluice.Recipient{{Address: "a@b", Notify: []string{}}},
	}})
	checkStateJSON(t, "zero state", &msgState{})
	checkStateJSON(t, "initial state", initialState(3, 1764479167000000000))
	checkStateJSON(t, "negative", &msgState{Attempts: -1, Next: -5, Last: -1 << 63, Rcpts: []rcptState{}})

	for i, s := range tricky {
		e := full.Env.Clone()
		e.ID, e.From, e.Client.Helo, e.Recipients[0].Notify[1], e.Ret = s, s, s, s, s
		checkEnvelopeJSON(t, fmt.Sprintf("tricky string %d", i), &storedEnvelope{Env: e, Size: -1})
		checkStateJSON(t, fmt.Sprintf("tricky string %d", i), &msgState{Rcpts: []rcptState{{Status: s, Reply: s}}})
	}
	for _, a := range []string{"192.0.2.1:25", "[::ffff:192.0.2.1]:0", "[2001:db8::1]:65535", "[fe80::1%<zone>&\"x]:1"} {
		e := full.Env.Clone()
		e.Client.Addr = netip.MustParseAddrPort(a)
		checkEnvelopeJSON(t, a, &storedEnvelope{Env: e})
	}
	for _, tm := range []time.Time{
		{}, time.Unix(0, 0).UTC(), time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", -(9*3600+30*60))),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), // encoding/json refuses it too
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 24*3600)),
	} {
		e := full.Env.Clone()
		e.Received = tm
		checkEnvelopeJSON(t, tm.String(), &storedEnvelope{Env: e})
	}
}

func FuzzRecordJSON(f *testing.F) {
	for _, s := range tricky {
		f.Add(s, s, s, true, int64(len(s)))
	}
	f.Fuzz(func(t *testing.T, from, rcpt, helo string, tls bool, n int64) {
		se := &storedEnvelope{Env: &sluice.Envelope{
			ID: helo, From: from, Recipients: []sluice.Recipient{{Address: rcpt, ORcpt: from}},
			Client:   sluice.ClientInfo{Helo: helo, TLS: tls, AuthUser: rcpt},
			Received: time.Unix(0, n).UTC(), SMTPUTF8: tls, Body: rcpt,
		}, Size: n, Chunks: int(n), BodyCRC: uint32(n)}
		checkEnvelopeJSON(t, "fuzzed", se)
		checkStateJSON(t, "fuzzed", &msgState{Attempts: int(n), Next: n, Last: -n, Held: tls, Rcpts: []rcptState{{Status: from, Attempts: int(n), Reply: rcpt, Warned: !tls}}})
	})
}

// BenchmarkEnvelopeJSON compares the hand-written envelope encoder with
// encoding/json on a typical relayed message's envelope.
func BenchmarkEnvelopeJSON(b *testing.B) {
	se := &storedEnvelope{Env: &sluice.Envelope{
		ID: "06H0BU7564U5DJ4D7S3G", From: "sender@example.org",
		Recipients: []sluice.Recipient{{Address: "rcpt@example.net"}},
		Client: sluice.ClientInfo{
			Addr: netip.MustParseAddrPort("192.0.2.7:41234"), Helo: "client.example.org",
		},
		Received: time.Now(), Body: "8BITMIME",
	}, Size: 4096, Chunks: 1, BodyCRC: 0xdeadbeef}
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(se); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		for b.Loop() {
			if _, err := appendEnvelopeJSON(make([]byte, 0, 512), se); err != nil {
				b.Fatal(err)
			}
		}
	})
}
