package maillog

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/sluicemta/sluice/delivery"
)

// appendRecord appends r as one line of JSON, byte for byte what
// encoding/json makes of it (TestEncodeAsEncodingJSON), without its
// reflection: a busy relay records thousands of deliveries a second.
// A delay that is not a finite number is written as 0.
func appendRecord(b []byte, r *delivery.Record) []byte {
	b = append(b, `{"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","queue_id":`...)
	b = appendString(b, r.QueueID)
	b = append(b, `,"from":`...)
	b = appendString(b, r.From)
	b = append(b, `,"to":`...)
	b = appendString(b, r.To)
	b = append(b, `,"route":`...)
	b = appendString(b, r.Route)
	b = append(b, `,"relay":`...)
	b = appendString(b, r.Relay)
	b = append(b, `,"ip":`...)
	b = appendString(b, r.IP)
	b = append(b, `,"source_ip":`...)
	b = appendString(b, r.SourceIP)
	b = append(b, `,"tls_version":`...)
	b = appendString(b, r.TLS)
	b = append(b, `,"reply":`...)
	b = appendString(b, r.Reply)
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(r.Code), 10)
	b = append(b, `,"enhanced":`...)
	b = appendString(b, r.Enhanced)
	b = append(b, `,"text":`...)
	b = appendString(b, r.Text)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(r.Attempt), 10)
	b = append(b, `,"result":`...)
	b = appendString(b, r.Result)
	b = append(b, `,"category":`...)
	b = appendString(b, string(r.Category))
	b = append(b, `,"delay":`...)
	b = appendFloat(b, r.Delay)
	b = append(b, `,"duration":`...)
	b = appendFloat(b, r.Duration)
	return append(b, '}', '\n')
}

const hex = "0123456789abcdef"

// appendString appends s quoted as encoding/json quotes it: <, > and &
// escaped too, invalid UTF-8 as U+FFFD, and U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendFloat appends f as encoding/json writes a float64.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		f = 0
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // e-09 to e-9, as encoding/json
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
