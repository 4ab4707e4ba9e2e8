package queue

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
)

func TestRecordRoundTrip(t *testing.T) {
	key := envKey("06H0BU7564U5DJ4D7S3G")
	for _, payload := range []string{"", "x", "Subject: a\r\n\r\nbody\r\n"} {
		got, err := openRecord(key, kindChunk, sealRecord(key, kindChunk, []byte(payload)))
		if err != nil || string(got) != payload {
			t.Errorf("round trip of %q: got %q, %v", payload, got, err)
		}
	}
}

// TestRecordIsBoundToItsKey: a valid value found under another key (a
// misdirected write) or read as another kind is rejected.
func TestRecordIsBoundToItsKey(t *testing.T) {
	a, b := chunkKey("06H0BU7564U5DJ4D7S3G", 0), chunkKey("06H0BU7564U5DJ4D7S3G", 1)
	v := sealRecord(a, kindChunk, []byte("chunk zero"))
	if _, err := openRecord(b, kindChunk, v); !errors.Is(err, ErrCorrupt) {
		t.Errorf("record of %q read under %q: err = %v, want ErrCorrupt", a, b, err)
	}
	if _, err := openRecord(a, kindState, v); !errors.Is(err, ErrCorrupt) {
		t.Errorf("chunk record read as a state: err = %v, want ErrCorrupt", err)
	}
	for n := range len(v) {
		if _, err := openRecord(a, kindChunk, v[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("record cut to %d of %d bytes: err = %v, want ErrCorrupt", n, len(v), err)
		}
	}
}

func TestEnvelopeRecordChecksStructure(t *testing.T) {
	key := envKey("06H0BU7564U5DJ4D7S3G")
	env := &sluice.Envelope{From: "a@example.org", Recipients: []sluice.Recipient{{Address: "b@example.com"}}, Received: time.Now()}
	v, err := encodeEnvelope(key, &storedEnvelope{Env: env, Size: chunkSize + 1, Chunks: 2})
	if err != nil {
		t.Fatal(err)
	}
	if se, err := decodeEnvelope(key, v); err != nil || se.Env.Recipients[0].Address != "b@example.com" {
		t.Fatalf("valid envelope: %+v, %v", se, err)
	}
	// A checksummed record that contradicts itself is still rejected.
	v, _ = encodeEnvelope(key, &storedEnvelope{Env: env, Size: chunkSize + 1, Chunks: 1})
	if _, err := decodeEnvelope(key, v); !errors.Is(err, ErrCorrupt) {
		t.Errorf("envelope with a wrong chunk count: err = %v, want ErrCorrupt", err)
	}
	v, _ = encodeEnvelope(key, &storedEnvelope{Env: &sluice.Envelope{From: "a@example.org"}})
	if _, err := decodeEnvelope(key, v); !errors.Is(err, ErrCorrupt) {
		t.Errorf("envelope without recipients: err = %v, want ErrCorrupt", err)
	}
}

func TestStateRecordDamageIsDetected(t *testing.T) {
	key := stateKey("06H0BU7564U5DJ4D7S3G")
	st := initialState(2, 42)
	st.Rcpts[1].Status = stateDelivered
	b := encodeState(key, st)
	if _, err := decodeState(key, b, 2); err != nil {
		t.Fatalf("valid state rejected: %v", err)
	}
	if _, err := decodeState(key, b, 3); !errors.Is(err, ErrCorrupt) {
		t.Errorf("state for the wrong recipient count: err = %v, want ErrCorrupt", err)
	}
	for i := range b {
		d := bytes.Clone(b)
		d[i] ^= 0x01
		if _, err := decodeState(key, d, 2); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bit flip at %d: err = %v, want ErrCorrupt", i, err)
		}
	}
}

func TestKeysRoundTrip(t *testing.T) {
	id := newID(time.Now())
	l, next, got, ok := parseDueKey(dueKey(laneRetry, 1234567890, id))
	if !ok || l != laneRetry || next != 1234567890 || got != id {
		t.Errorf("parseDueKey = %c %d %q %v", l, next, got, ok)
	}
	d, got, ok := parseDomainKey(domainKey("example.com", id))
	if !ok || d != "example.com" || got != id {
		t.Errorf("parseDomainKey = %q %q %v", d, got, ok)
	}
	at := time.UnixMilli(1_700_000_000_123)
	if got := idTime(newID(at)); !got.Equal(at) {
		t.Errorf("idTime(newID(%v)) = %v", at, got)
	}
	if a, b := idFloor(at), newID(at); a > b || idFloor(at.Add(time.Millisecond)) <= b {
		t.Errorf("idFloor does not bound ids: %s, %s", a, b)
	}
}

// FuzzRecordDamage flips a burst of up to four bytes anywhere in a sealed
// record, or in its key. CRC-32C detects every burst of 32 bits or less,
// so the property is exact: the damaged record is rejected as corrupt, or
// it was not damaged at all (never read as a different valid record).
func FuzzRecordDamage(f *testing.F) {
	f.Add([]byte("Subject: hi\r\n\r\nhello\r\n"), uint16(0), []byte{1}, false)
	f.Add([]byte{}, uint16(2), []byte{0xff, 0xff}, false)
	f.Add([]byte("body"), uint16(3), []byte{0x80, 0, 0, 1}, true)
	f.Fuzz(func(t *testing.T, payload []byte, pos uint16, burst []byte, inKey bool) {
		if len(burst) == 0 || len(burst) > 4 {
			return
		}
		key := chunkKey("06H0BU7564U5DJ4D7S3G", 7)
		v := sealRecord(key, kindChunk, payload)
		k2, v2 := bytes.Clone(key), bytes.Clone(v)
		target := v2
		if inKey {
			target = k2
		}
		p := int(pos) % len(target)
		for i, x := range burst {
			if p+i < len(target) {
				target[p+i] ^= x
			}
		}
		got, err := openRecord(k2, kindChunk, v2)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("damage at %d: error %v does not wrap ErrCorrupt", p, err)
			}
			return
		}
		if !bytes.Equal(k2, key) || !bytes.Equal(v2, v) || !bytes.Equal(got, payload) {
			t.Fatalf("damage at %d accepted: payload %q", p, got)
		}
	})
}
