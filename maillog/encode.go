package maillog

import (
	"strconv"
	"time"

	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/internal/jsonenc"
)

// appendRecord appends r as one line of JSON, byte for byte what
// encoding/json makes of it (TestEncodeAsEncodingJSON), without its
// reflection: a busy relay records thousands of deliveries a second.
// A delay that is not a finite number is written as 0.
func appendRecord(b []byte, r *delivery.Record) []byte {
	b = append(b, `{"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","queue_id":`...)
	b = jsonenc.AppendString(b, r.QueueID)
	b = append(b, `,"from":`...)
	b = jsonenc.AppendString(b, r.From)
	b = append(b, `,"to":`...)
	b = jsonenc.AppendString(b, r.To)
	b = append(b, `,"route":`...)
	b = jsonenc.AppendString(b, r.Route)
	b = append(b, `,"relay":`...)
	b = jsonenc.AppendString(b, r.Relay)
	b = append(b, `,"ip":`...)
	b = jsonenc.AppendString(b, r.IP)
	b = append(b, `,"source_ip":`...)
	b = jsonenc.AppendString(b, r.SourceIP)
	b = append(b, `,"tls_version":`...)
	b = jsonenc.AppendString(b, r.TLS)
	b = append(b, `,"reply":`...)
	b = jsonenc.AppendString(b, r.Reply)
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(r.Code), 10)
	b = append(b, `,"enhanced":`...)
	b = jsonenc.AppendString(b, r.Enhanced)
	b = append(b, `,"text":`...)
	b = jsonenc.AppendString(b, r.Text)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(r.Attempt), 10)
	b = append(b, `,"result":`...)
	b = jsonenc.AppendString(b, r.Result)
	b = append(b, `,"category":`...)
	b = jsonenc.AppendString(b, string(r.Category))
	b = append(b, `,"delay":`...)
	b = jsonenc.AppendFloat(b, r.Delay)
	b = append(b, `,"duration":`...)
	b = jsonenc.AppendFloat(b, r.Duration)
	return append(b, '}', '\n')
}
