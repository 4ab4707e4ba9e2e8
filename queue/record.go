package queue

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/sluicemta/sluice"
)

// ErrCorrupt is wrapped by every error caused by a record that fails its
// checksum or structure checks.
var ErrCorrupt = errors.New("queue: corrupt record")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Message file layout (all integers big-endian):
//
//	"SLQ1" | envLen uint32 | envCRC uint32 | envelope JSON (envLen bytes)
//	body bytes
//	bodyLen uint64 | bodyCRC uint32 | "SLQE"
const (
	msgMagic     = "SLQ1"
	msgEndMagic  = "SLQE"
	msgHeaderLen = 12
	msgTrailLen  = 16
	maxEnvLen    = 1 << 24 // an envelope of 16 MiB is a broken file, not a message
)

// State file layout: "SLS1" | len uint32 | crc uint32 | state JSON.
const (
	stateMagic     = "SLS1"
	stateHeaderLen = 12
	maxStateLen    = 1 << 24
)

func newCRC() hash.Hash32 { return crc32.New(castagnoli) }

// encodeMsgHeader returns the header and envelope record of a message file.
func encodeMsgHeader(env *sluice.Envelope) ([]byte, error) {
	js, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("queue: encode envelope: %w", err)
	}
	b := make([]byte, msgHeaderLen, msgHeaderLen+len(js))
	copy(b, msgMagic)
	binary.BigEndian.PutUint32(b[4:], uint32(len(js)))
	binary.BigEndian.PutUint32(b[8:], crc32.Checksum(js, castagnoli))
	return append(b, js...), nil
}

func encodeMsgTrailer(bodyLen int64, bodyCRC uint32) []byte {
	b := make([]byte, msgTrailLen)
	binary.BigEndian.PutUint64(b, uint64(bodyLen))
	binary.BigEndian.PutUint32(b[8:], bodyCRC)
	copy(b[12:], msgEndMagic)
	return b
}

// msgLayout is what decodeMsg learns of a message file without reading
// its body.
type msgLayout struct {
	env     *sluice.Envelope
	bodyOff int64
	bodyLen int64
	bodyCRC uint32
}

// decodeMsg reads and verifies the header, envelope and trailer of a
// message file of the given size. The body checksum is verified later,
// while the body is streamed (see crcReader).
func decodeMsg(r io.ReaderAt, size int64) (*msgLayout, error) {
	if size < msgHeaderLen+msgTrailLen {
		return nil, fmt.Errorf("%w: file of %d bytes is too short", ErrCorrupt, size)
	}
	var h [msgHeaderLen]byte
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return nil, fmt.Errorf("queue: read header: %w", err)
	}
	if string(h[:4]) != msgMagic {
		return nil, fmt.Errorf("%w: bad magic %q", ErrCorrupt, h[:4])
	}
	envLen := int64(binary.BigEndian.Uint32(h[4:]))
	if envLen > maxEnvLen || msgHeaderLen+envLen+msgTrailLen > size {
		return nil, fmt.Errorf("%w: envelope length %d does not fit a file of %d bytes", ErrCorrupt, envLen, size)
	}
	js := make([]byte, envLen)
	if _, err := r.ReadAt(js, msgHeaderLen); err != nil {
		return nil, fmt.Errorf("queue: read envelope: %w", err)
	}
	if got, want := crc32.Checksum(js, castagnoli), binary.BigEndian.Uint32(h[8:]); got != want {
		return nil, fmt.Errorf("%w: envelope checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	var t [msgTrailLen]byte
	if _, err := r.ReadAt(t[:], size-msgTrailLen); err != nil {
		return nil, fmt.Errorf("queue: read trailer: %w", err)
	}
	if string(t[12:]) != msgEndMagic {
		return nil, fmt.Errorf("%w: bad trailer magic %q", ErrCorrupt, t[12:])
	}
	l := &msgLayout{bodyOff: msgHeaderLen + envLen, bodyCRC: binary.BigEndian.Uint32(t[8:])}
	l.bodyLen = int64(binary.BigEndian.Uint64(t[:8]))
	if l.bodyLen != size-msgTrailLen-l.bodyOff {
		return nil, fmt.Errorf("%w: body length %d, file holds %d", ErrCorrupt, l.bodyLen, size-msgTrailLen-l.bodyOff)
	}
	env := new(sluice.Envelope)
	if err := json.Unmarshal(js, env); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrCorrupt, err)
	}
	if err := env.Validate(); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrCorrupt, err)
	}
	l.env = env
	return l, nil
}

// newBodyReader returns a reader of the body of l, read from src (which
// must start at the body), that verifies the body checksum as it goes and
// calls onCorrupt once if it fails.
func newBodyReader(src io.Reader, l *msgLayout, onCorrupt func(error)) io.Reader {
	r := &crcReader{r: src, left: l.bodyLen, want: l.bodyCRC, sum: newCRC(), corrupt: onCorrupt}
	if l.bodyLen == 0 {
		// Read never reaches the end-of-body check for an empty body.
		r.err = io.EOF
		if l.bodyCRC != 0 {
			r.err = fmt.Errorf("%w: empty body with checksum %08x", ErrCorrupt, l.bodyCRC)
			onCorrupt(r.err)
		}
	}
	return r
}

// crcReader passes a body through while summing it, and at the end of the
// body compares the sum with the stored one: a mismatch is an error, not
// io.EOF, so a damaged body never reads as complete.
type crcReader struct {
	r       io.Reader
	left    int64
	want    uint32
	sum     hash.Hash32
	corrupt func(error) // called once on a mismatch
	err     error
}

func (c *crcReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.sum.Write(p[:n])
	c.left -= int64(n)
	switch {
	case c.left == 0:
		if got := c.sum.Sum32(); got != c.want {
			c.err = fmt.Errorf("%w: body checksum %08x, want %08x", ErrCorrupt, got, c.want)
			c.corrupt(c.err)
		} else {
			c.err = io.EOF
		}
		return n, c.err
	case err == io.EOF:
		c.err = fmt.Errorf("%w: body ends %d bytes early", ErrCorrupt, c.left)
		c.corrupt(c.err)
		return n, c.err
	}
	return n, err
}

// recipient states, as stored.
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
}

// msgState is what changes about a message after it is queued.
type msgState struct {
	Attempts int         `json:"n"`
	Next     int64       `json:"next"` // unix nanoseconds of the next attempt
	Rcpts    []rcptState `json:"rcpts"`
}

func (s *msgState) final(i int) bool {
	return s.Rcpts[i].Status == stateDelivered || s.Rcpts[i].Status == stateBounced
}

func encodeState(s *msgState) ([]byte, error) {
	js, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("queue: encode state: %w", err)
	}
	b := make([]byte, stateHeaderLen, stateHeaderLen+len(js))
	copy(b, stateMagic)
	binary.BigEndian.PutUint32(b[4:], uint32(len(js)))
	binary.BigEndian.PutUint32(b[8:], crc32.Checksum(js, castagnoli))
	return append(b, js...), nil
}

// decodeState verifies and decodes a state record for a message with n
// recipients.
func decodeState(b []byte, n int) (*msgState, error) {
	if len(b) < stateHeaderLen || string(b[:4]) != stateMagic {
		return nil, fmt.Errorf("%w: bad state header", ErrCorrupt)
	}
	l := int(binary.BigEndian.Uint32(b[4:]))
	if l > maxStateLen || stateHeaderLen+l != len(b) {
		return nil, fmt.Errorf("%w: state length %d, record holds %d", ErrCorrupt, l, len(b)-stateHeaderLen)
	}
	js := b[stateHeaderLen:]
	if got, want := crc32.Checksum(js, castagnoli), binary.BigEndian.Uint32(b[8:]); got != want {
		return nil, fmt.Errorf("%w: state checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	s := new(msgState)
	if err := json.Unmarshal(js, s); err != nil {
		return nil, fmt.Errorf("%w: state: %v", ErrCorrupt, err)
	}
	if len(s.Rcpts) != n {
		return nil, fmt.Errorf("%w: state has %d recipients, envelope %d", ErrCorrupt, len(s.Rcpts), n)
	}
	for _, r := range s.Rcpts {
		switch r.Status {
		case statePending, stateDeferred, stateDelivered, stateBounced:
		default:
			return nil, fmt.Errorf("%w: unknown recipient status %q", ErrCorrupt, r.Status)
		}
	}
	return s, nil
}

func initialState(n int, next int64) *msgState {
	s := &msgState{Next: next, Rcpts: make([]rcptState, n)}
	for i := range s.Rcpts {
		s.Rcpts[i].Status = statePending
	}
	return s
}
