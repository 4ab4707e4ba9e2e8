package queue

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/sluicemta/sluice"
)

func encodeTestMsg(t testing.TB, body string) []byte {
	head, err := encodeMsgHeader(&sluice.Envelope{
		ID: "00000000000000000000", From: "a@example.org",
		Recipients: []sluice.Recipient{{Address: "b@example.com"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sum := newCRC()
	sum.Write([]byte(body))
	return append(append(head, body...), encodeMsgTrailer(int64(len(body)), sum.Sum32())...)
}

// readRecord decodes a message file image and reads its whole body.
func readRecord(b []byte) (*msgLayout, []byte, error) {
	r := bytes.NewReader(b)
	l, err := decodeMsg(r, int64(len(b)))
	if err != nil {
		return nil, nil, err
	}
	cr := newBodyReader(io.NewSectionReader(r, l.bodyOff, l.bodyLen), l, func(error) {})
	body, err := io.ReadAll(cr)
	return l, body, err
}

func TestRecordRoundTrip(t *testing.T) {
	for _, body := range []string{"", "x", "Subject: a\r\n\r\nbody\r\n", string(bytes.Repeat([]byte("0123456789"), 10000))} {
		l, got, err := readRecord(encodeTestMsg(t, body))
		if err != nil {
			t.Fatalf("body of %d bytes: %v", len(body), err)
		}
		if string(got) != body || l.env.Recipients[0].Address != "b@example.com" {
			t.Errorf("round trip of %d bytes: got %d bytes, rcpt %v", len(body), len(got), l.env.Recipients)
		}
	}
}

func TestTruncatedRecordIsCorrupt(t *testing.T) {
	b := encodeTestMsg(t, "Subject: a\r\n\r\nbody\r\n")
	for n := 0; n < len(b); n++ {
		if _, _, err := readRecord(b[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("record cut to %d of %d bytes: err = %v, want ErrCorrupt", n, len(b), err)
		}
	}
}

// FuzzRecordDamage flips a burst of up to four bytes anywhere in a valid
// message file. CRC-32C detects every burst of 32 bits or less, so the
// property is exact: the damaged file is rejected as corrupt, or reads back
// as exactly the original envelope and body (never as a different valid
// record).
func FuzzRecordDamage(f *testing.F) {
	f.Add("Subject: hi\r\n\r\nhello\r\n", uint16(0), []byte{1})
	f.Add("", uint16(20), []byte{0xff, 0xff})
	f.Add("body", uint16(60), []byte{0x80, 0, 0, 1})
	f.Fuzz(func(t *testing.T, body string, pos uint16, burst []byte) {
		if len(burst) == 0 || len(burst) > 4 {
			return
		}
		orig := encodeTestMsg(t, body)
		b := bytes.Clone(orig)
		p := int(pos) % len(b)
		for i, x := range burst {
			if p+i < len(b) {
				b[p+i] ^= x
			}
		}
		l, got, err := readRecord(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("damage at %d: error %v does not wrap ErrCorrupt", p, err)
			}
			return
		}
		if !bytes.Equal(b, orig) {
			t.Fatalf("damage at %d accepted: envelope %+v body %q", p, l.env, got)
		}
	})
}

func TestStateRecordDamageIsDetected(t *testing.T) {
	st := initialState(2, 42)
	st.Rcpts[1].Status = stateDelivered
	b, err := encodeState(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeState(b, 2); err != nil {
		t.Fatalf("valid state rejected: %v", err)
	}
	if _, err := decodeState(b, 3); !errors.Is(err, ErrCorrupt) {
		t.Errorf("state for the wrong recipient count: err = %v, want ErrCorrupt", err)
	}
	for i := range b {
		d := bytes.Clone(b)
		d[i] ^= 0x01
		if _, err := decodeState(d, 2); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bit flip at %d: err = %v, want ErrCorrupt", i, err)
		}
	}
}
