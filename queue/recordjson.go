package queue

import (
	"strconv"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/internal/jsonenc"
)

// The envelope and state records are JSON, and are written once or more
// for every message. encoding/json finds its way through the structs by
// reflection, which cost about 2.5% of sluice's CPU end to end at 4 KiB
// (docs/BENCHMARKS.md, fix 25); these encoders write the same bytes
// directly, as maillog does for the delivery log.
// TestRecordJSONMatchesEncodingJSON fills every field of the structs,
// found by reflection, and compares the two byte for byte, so a field
// added to a struct but not here fails the test. Reading stays with
// encoding/json.

// appendEnvelopeJSON appends json.Marshal(se) to dst.
func appendEnvelopeJSON(dst []byte, se *storedEnvelope) ([]byte, error) {
	dst = append(dst, `{"env":`...)
	if se.Env == nil {
		dst = append(dst, "null"...)
	} else {
		var err error
		if dst, err = appendEnvJSON(dst, se.Env); err != nil {
			return nil, err
		}
	}
	dst = append(dst, `,"size":`...)
	dst = strconv.AppendInt(dst, se.Size, 10)
	dst = append(dst, `,"chunks":`...)
	dst = strconv.AppendInt(dst, int64(se.Chunks), 10)
	dst = append(dst, `,"crc":`...)
	dst = strconv.AppendUint(dst, uint64(se.BodyCRC), 10)
	return append(dst, '}'), nil
}

func appendEnvJSON(dst []byte, e *sluice.Envelope) ([]byte, error) {
	dst = append(dst, '{')
	if e.ID != "" {
		dst = append(dst, `"id":`...)
		dst = jsonenc.AppendString(dst, e.ID)
		dst = append(dst, ',')
	}
	dst = append(dst, `"from":`...)
	dst = jsonenc.AppendString(dst, e.From)
	dst = append(dst, `,"rcpts":`...)
	dst = appendList(dst, e.Recipients, appendRecipientJSON)
	c := &e.Client
	dst = append(dst, `,"client":{"addr":`...)
	var scratch [64]byte
	addr, err := c.Addr.AppendText(scratch[:0])
	if err != nil {
		return nil, err
	}
	dst = jsonenc.AppendString(dst, string(addr))
	if c.Helo != "" {
		dst = append(dst, `,"helo":`...)
		dst = jsonenc.AppendString(dst, c.Helo)
	}
	if c.TLS {
		dst = append(dst, `,"tls":true`...)
	}
	if c.AuthUser != "" {
		dst = append(dst, `,"auth":`...)
		dst = jsonenc.AppendString(dst, c.AuthUser)
	}
	dst = append(dst, `},"received":"`...)
	if dst, err = e.Received.AppendText(dst); err != nil {
		return nil, err
	}
	dst = append(dst, '"')
	if e.SMTPUTF8 {
		dst = append(dst, `,"smtputf8":true`...)
	}
	for _, f := range [...]struct{ key, v string }{
		{`,"body":`, e.Body}, {`,"envid":`, e.EnvID}, {`,"ret":`, e.Ret},
	} {
		if f.v != "" {
			dst = append(dst, f.key...)
			dst = jsonenc.AppendString(dst, f.v)
		}
	}
	return append(dst, '}'), nil
}

// appendStateJSON appends json.Marshal(s) to dst.
func appendStateJSON(dst []byte, s *msgState) []byte {
	dst = append(dst, `{"n":`...)
	dst = strconv.AppendInt(dst, int64(s.Attempts), 10)
	dst = append(dst, `,"next":`...)
	dst = strconv.AppendInt(dst, s.Next, 10)
	if s.Last != 0 {
		dst = append(dst, `,"last":`...)
		dst = strconv.AppendInt(dst, s.Last, 10)
	}
	if s.Held {
		dst = append(dst, `,"held":true`...)
	}
	if s.Released {
		dst = append(dst, `,"released":true`...)
	}
	if s.Bounce {
		dst = append(dst, `,"bounce":true`...)
	}
	dst = append(dst, `,"rcpts":`...)
	dst = appendList(dst, s.Rcpts, appendRcptStateJSON)
	return append(dst, '}')
}

func appendRecipientJSON(dst []byte, r sluice.Recipient) []byte {
	dst = append(dst, `{"addr":`...)
	dst = jsonenc.AppendString(dst, r.Address)
	if len(r.Notify) > 0 {
		dst = append(dst, `,"notify":`...)
		dst = appendList(dst, r.Notify, jsonenc.AppendString)
	}
	if r.ORcpt != "" {
		dst = append(dst, `,"orcpt":`...)
		dst = jsonenc.AppendString(dst, r.ORcpt)
	}
	return append(dst, '}')
}

func appendRcptStateJSON(dst []byte, r rcptState) []byte {
	dst = append(dst, `{"s":`...)
	dst = jsonenc.AppendString(dst, r.Status)
	if r.Attempts != 0 {
		dst = append(dst, `,"n":`...)
		dst = strconv.AppendInt(dst, int64(r.Attempts), 10)
	}
	if r.Reply != "" {
		dst = append(dst, `,"r":`...)
		dst = jsonenc.AppendString(dst, r.Reply)
	}
	if r.Warned {
		dst = append(dst, `,"w":true`...)
	}
	return append(dst, '}')
}

// appendList appends s as encoding/json writes a slice: null if it is
// nil, else an array of its elements, each appended by elem.
func appendList[T any](dst []byte, s []T, elem func([]byte, T) []byte) []byte {
	if s == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, v := range s {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = elem(dst, v)
	}
	return append(dst, ']')
}
