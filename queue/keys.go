package queue

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"sync"
	"time"
)

// The store's keyspace. Every key starts with a one-byte prefix naming
// what it holds; ids are fixed-length, so prefixes never overlap.
//
//	m<id>                 envelope record (sender, recipients, body size and checksum)
//	s<id>                 state record (per-recipient status, attempts, next attempt)
//	b<id><n uint32>       body chunk n (64 KiB each but the last)
//	d<lane><t uint64><id> due index: lane f (first attempt), r (retry), h (held);
//	                      t is the next attempt in unix nanoseconds
//	a<domain>\x00<id>     recipient-domain index, oldest first
//	t<id>                 a body written in several batches, not yet complete
const (
	pfxEnvelope = 'm'
	pfxState    = 's'
	pfxBody     = 'b'
	pfxDue      = 'd'
	pfxDomain   = 'a'
	pfxPartial  = 't'
)

// lane is a part of the due index.
type lane byte

const (
	laneFresh lane = 'f' // never attempted
	laneRetry lane = 'r' // deferred at least once
	laneHeld  lane = 'h' // held by the operator; never due
)

func (l lane) String() string {
	switch l {
	case laneFresh:
		return "fresh"
	case laneRetry:
		return "retry"
	case laneHeld:
		return "held"
	}
	return "unknown"
}

const idLen = 20

var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

// newID returns a queue id: 20 characters of base32hex, sortable by
// creation time (48 bits of milliseconds) and unique by 48 random bits.
func newID(now time.Time) string {
	b := newIDBytes(now)
	return idEncoding.EncodeToString(b[:])
}

func newIDBytes(now time.Time) [12]byte {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:])
	return b
}

// idGen makes queue ids that increase strictly within a process, so that
// listing in id order is listing in order of arrival, even within one
// millisecond.
type idGen struct {
	mu   sync.Mutex // guards last
	last [12]byte
}

func (g *idGen) next(now time.Time) string {
	b := newIDBytes(now)
	g.mu.Lock()
	defer g.mu.Unlock()
	if bytes.Compare(b[:], g.last[:]) <= 0 {
		b = g.last
		for i := 11; i >= 0; i-- { // add one
			if b[i]++; b[i] != 0 {
				break
			}
		}
	}
	g.last = b
	return idEncoding.EncodeToString(b[:])
}

// idFloor returns the smallest id that newID could return at t, so that
// ids compare with times.
func idFloor(t time.Time) string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(max(t.UnixMilli(), 0))<<16)
	return idEncoding.EncodeToString(b[:])
}

// idTime returns the time encoded in a valid id.
func idTime(id string) time.Time {
	var b [15]byte // 20 base32 characters decode to 12.5 bytes
	n, _ := idEncoding.Decode(b[:], []byte(id))
	if n < 6 {
		return time.Time{}
	}
	var ms [8]byte
	copy(ms[2:], b[:6])
	return time.UnixMilli(int64(binary.BigEndian.Uint64(ms[:])))
}

func validID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'V') {
			return false
		}
	}
	return true
}

func idKey(pfx byte, id string) []byte {
	k := make([]byte, 1+len(id))
	k[0] = pfx
	copy(k[1:], id)
	return k
}

func envKey(id string) []byte     { return idKey(pfxEnvelope, id) }
func stateKey(id string) []byte   { return idKey(pfxState, id) }
func partialKey(id string) []byte { return idKey(pfxPartial, id) }

func chunkKey(id string, n int) []byte {
	return binary.BigEndian.AppendUint32(idKey(pfxBody, id), uint32(n))
}

// bodyRange returns the bounds of id's body chunks.
func bodyRange(id string) (lower, upper []byte) {
	p := idKey(pfxBody, id)
	return p, prefixEnd(p)
}

func dueKey(l lane, next int64, id string) []byte {
	k := make([]byte, 0, 2+8+len(id))
	k = append(k, pfxDue, byte(l))
	k = binary.BigEndian.AppendUint64(k, uint64(max(next, 0)))
	return append(k, id...)
}

// stateDueKey returns the due index key that belongs to a message in state st.
func stateDueKey(id string, st *msgState) []byte { return dueKey(st.lane(), st.Next, id) }

func (s *msgState) lane() lane {
	switch {
	case s.Held:
		return laneHeld
	case s.Attempts == 0:
		return laneFresh
	}
	return laneRetry
}

// parseDueKey splits a due index key.
func parseDueKey(k []byte) (l lane, next int64, id string, ok bool) {
	if len(k) != 2+8+idLen || k[0] != pfxDue {
		return 0, 0, "", false
	}
	id = string(k[10:])
	return lane(k[1]), int64(binary.BigEndian.Uint64(k[2:10])), id, validID(id)
}

func laneRange(l lane) (lower, upper []byte) {
	p := []byte{pfxDue, byte(l)}
	return p, prefixEnd(p)
}

func domainKey(domain, id string) []byte {
	k := make([]byte, 0, 2+len(domain)+len(id))
	k = append(k, pfxDomain)
	k = append(k, domain...)
	k = append(k, 0)
	return append(k, id...)
}

// parseDomainKey splits a domain index key.
func parseDomainKey(k []byte) (domain, id string, ok bool) {
	if len(k) < 2+idLen || k[0] != pfxDomain || k[len(k)-idLen-1] != 0 {
		return "", "", false
	}
	id = string(k[len(k)-idLen:])
	return string(k[1 : len(k)-idLen-1]), id, validID(id)
}

func domainRange(domain string) (lower, upper []byte) {
	p := append(append([]byte{pfxDomain}, domain...), 0)
	return p, prefixEnd(p)
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}
