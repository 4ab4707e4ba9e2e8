package queue

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/sluicemta/sluice"
)

// ErrCorrupt is wrapped by every error caused by a record that fails its
// checksum or structure checks.
var ErrCorrupt = errors.New("queue: corrupt record")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Every value in the store is a record:
//
//	kind byte | crc uint32 (big-endian) | payload
//
// where crc is the CRC-32C of the key, the kind byte and the payload. The
// key is inside the checksum so a value found under another key (a
// misdirected write, a damaged key) is rejected too, not read as a
// different valid record.
const recordHeaderLen = 5

// Record kinds.
const (
	kindEnvelope byte = 'E'
	kindState    byte = 'S'
	kindChunk    byte = 'B'
	kindIndex    byte = 'I'
)

// sealRecord returns the record of payload stored under key.
func sealRecord(key []byte, kind byte, payload []byte) []byte {
	return appendRecord(nil, key, kind, payload)
}

// appendRecord appends the record of payload stored under key to dst, so
// a caller can reuse one buffer for many records.
func appendRecord(dst, key []byte, kind byte, payload []byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, recordHeaderLen)...)
	dst = append(dst, payload...)
	sealInPlace(dst[n:], key, kind)
	return dst
}

// sealInPlace makes v, whose payload is already in place after
// recordHeaderLen bytes, the record of that payload stored under key, and
// returns it.
func sealInPlace(v, key []byte, kind byte) []byte {
	v[0] = kind
	binary.BigEndian.PutUint32(v[1:], recordSum(key, v))
	return v
}

func recordSum(key, v []byte) uint32 {
	sum := crc32.Update(0, castagnoli, key)
	sum = crc32.Update(sum, castagnoli, v[:1])
	return crc32.Update(sum, castagnoli, v[recordHeaderLen:])
}

// openRecord verifies the record v found under key and returns its payload,
// which aliases v.
func openRecord(key []byte, kind byte, v []byte) ([]byte, error) {
	if len(v) < recordHeaderLen {
		return nil, fmt.Errorf("%w: record %q of %d bytes is too short", ErrCorrupt, key, len(v))
	}
	if v[0] != kind {
		return nil, fmt.Errorf("%w: record %q has kind %q, want %q", ErrCorrupt, key, v[0], kind)
	}
	if got, want := recordSum(key, v), binary.BigEndian.Uint32(v[1:]); got != want {
		return nil, fmt.Errorf("%w: record %q checksum %08x, want %08x", ErrCorrupt, key, got, want)
	}
	return v[recordHeaderLen:], nil
}

// storedEnvelope is the payload of an envelope record: the envelope and
// what is needed to read and verify the body, which is stored in chunks.
type storedEnvelope struct {
	Env     *sluice.Envelope `json:"env"`
	Size    int64            `json:"size"`
	Chunks  int              `json:"chunks"`
	BodyCRC uint32           `json:"crc"`
}

// bodyChunks returns the number of body chunks of se, or -1 if the record
// cannot say (a body with a size but no chunk count).
func (se *storedEnvelope) bodyChunks() int {
	if se == nil || (se.Chunks == 0 && se.Size > 0) {
		return -1
	}
	return se.Chunks
}

// chunkSize is the size of every body chunk but the last.
const chunkSize = 64 << 10

func encodeEnvelope(key []byte, se *storedEnvelope) ([]byte, error) {
	v, err := appendEnvelopeJSON(make([]byte, recordHeaderLen, 512), se)
	if err != nil {
		return nil, fmt.Errorf("queue: encode envelope: %w", err)
	}
	return sealInPlace(v, key, kindEnvelope), nil
}

func decodeEnvelope(key, v []byte) (*storedEnvelope, error) {
	js, err := openRecord(key, kindEnvelope, v)
	if err != nil {
		return nil, err
	}
	se := new(storedEnvelope)
	if err := json.Unmarshal(js, se); err != nil {
		return nil, fmt.Errorf("%w: envelope %q: %v", ErrCorrupt, key, err)
	}
	if se.Env == nil {
		return nil, fmt.Errorf("%w: envelope %q is empty", ErrCorrupt, key)
	}
	if err := se.Env.Validate(); err != nil {
		return nil, fmt.Errorf("%w: envelope %q: %v", ErrCorrupt, key, err)
	}
	if want := chunksFor(se.Size); se.Size < 0 || se.Chunks != want {
		return nil, fmt.Errorf("%w: envelope %q: %d chunks for %d bytes, want %d", ErrCorrupt, key, se.Chunks, se.Size, want)
	}
	return se, nil
}

func chunksFor(size int64) int { return int((size + chunkSize - 1) / chunkSize) }

// Recipient statuses, as stored. In flight and held are not stored per
// recipient: in flight lives in memory only (a crash makes it due again),
// held is a property of the message.
const (
	statePending   = "pending"
	stateDeferred  = "deferred"
	stateDelivered = "delivered"
	stateBounced   = "bounced"
)

// rcptState is the delivery state of one recipient.
type rcptState struct {
	Status   string `json:"s"`
	Attempts int    `json:"n,omitempty"`
	Reply    string `json:"r,omitempty"` // last reply, as text
	Warned   bool   `json:"w,omitempty"` // a delay warning was sent
}

// msgState is what changes about a message after it is queued. Its due
// index key is derived from it (see dueKey), so the two are always written
// together.
type msgState struct {
	Attempts int   `json:"n"`
	Next     int64 `json:"next"` // unix nanoseconds of the next attempt
	Last     int64 `json:"last,omitempty"`
	Held     bool  `json:"held,omitempty"`
	// Released is set once an operator released the message from hold
	// (Queue.Release, or Queue.Requeue of a held message).
	Released bool `json:"released,omitempty"`
	// Bounce asks the next attempt to return every undelivered
	// recipient to the sender instead of trying it (Queue.Bounce).
	Bounce bool        `json:"bounce,omitempty"`
	Rcpts  []rcptState `json:"rcpts"`
}

func (s *msgState) final(i int) bool {
	return s.Rcpts[i].Status == stateDelivered || s.Rcpts[i].Status == stateBounced
}

func (s *msgState) clone() *msgState {
	c := *s
	c.Rcpts = append([]rcptState(nil), s.Rcpts...)
	return &c
}

func initialState(n int, next int64) *msgState {
	s := &msgState{Next: next, Rcpts: make([]rcptState, n)}
	for i := range s.Rcpts {
		s.Rcpts[i].Status = statePending
	}
	return s
}

func encodeState(key []byte, s *msgState) []byte {
	return sealInPlace(appendStateJSON(make([]byte, recordHeaderLen, 128), s), key, kindState)
}

// decodeState verifies and decodes the state record of a message with n
// recipients.
func decodeState(key, v []byte, n int) (*msgState, error) {
	js, err := openRecord(key, kindState, v)
	if err != nil {
		return nil, err
	}
	s := new(msgState)
	if err := json.Unmarshal(js, s); err != nil {
		return nil, fmt.Errorf("%w: state %q: %v", ErrCorrupt, key, err)
	}
	if len(s.Rcpts) != n {
		return nil, fmt.Errorf("%w: state %q has %d recipients, envelope %d", ErrCorrupt, key, len(s.Rcpts), n)
	}
	for _, r := range s.Rcpts {
		switch r.Status {
		case statePending, stateDeferred, stateDelivered, stateBounced:
		default:
			return nil, fmt.Errorf("%w: state %q: unknown recipient status %q", ErrCorrupt, key, r.Status)
		}
	}
	return s, nil
}
