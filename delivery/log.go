package delivery

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// Record is the delivery log record of one recipient and attempt (seed
// 002: a searchable log of sender, recipient, queue id, relay IP, status
// and error). The agent logs it as the "delivery" message of its logger
// and hands it to its [Recorder], if any. The JSON names are those of the
// log.
type Record struct {
	Time     time.Time `json:"time"`
	QueueID  string    `json:"queue_id"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Route    string    `json:"route"`     // "mx" or "pool:NAME"
	Relay    string    `json:"relay"`     // next hop host name, "" if none was reached
	IP       string    `json:"ip"`        // next hop address, host:port
	SourceIP string    `json:"source_ip"` // our address of the session
	TLS      string    `json:"tls_version"`
	Reply    string    `json:"reply"` // the whole reply, "250 2.0.0 ok"
	Code     int       `json:"code"`
	Enhanced string    `json:"enhanced"`
	Text     string    `json:"text"`
	Attempt  int       `json:"attempt"`
	Result   string    `json:"result"` // "delivered", "deferred" or "bounced"
	Category Category  `json:"category"`
	// Delay is the time since the message was received, in seconds, as
	// Postfix's delay=; Duration is the attempt's.
	Delay    float64 `json:"delay"`
	Duration float64 `json:"duration"`
}

// Recorder keeps delivery log records, for example in a searchable file
// ([github.com/sluicemta/sluice/maillog]). Record is called once per
// recipient and attempt, from many goroutines at once; it must not block
// for long.
type Recorder interface {
	Record(ctx context.Context, r *Record)
}

// logResult writes the delivery log record of one recipient and attempt.
func (a *Agent) logResult(ctx context.Context, msg *queue.Message, st *rcptState, outcome sluice.Outcome, took time.Duration) {
	env := msg.Envelope
	var delay time.Duration
	if !env.Received.IsZero() {
		delay = time.Since(env.Received).Round(time.Millisecond)
	}
	sourceIP := ""
	if st.source != "" {
		sourceIP, _, _ = net.SplitHostPort(st.source)
	}
	r := st.reply
	rec := &Record{
		Time: a.cfg.now(), QueueID: env.ID, From: env.From, To: st.rcpt.Address,
		Route: st.route, Relay: st.relay, IP: st.ip, SourceIP: sourceIP, TLS: st.tls,
		Reply: r.Error(), Code: r.Code, Enhanced: r.Enhanced.String(), Text: r.Message,
		Attempt: msg.Attempt, Result: outcome.String(), Category: Categorize(r),
		Delay: delay.Seconds(), Duration: took.Seconds(),
	}
	if a.log.Enabled(ctx, slog.LevelInfo) {
		a.log.LogAttrs(ctx, slog.LevelInfo, "delivery",
			slog.String("queue_id", rec.QueueID),
			slog.String("from", rec.From),
			slog.String("to", rec.To),
			slog.String("route", rec.Route),
			slog.String("relay", rec.Relay),
			slog.String("ip", rec.IP),
			slog.String("source_ip", rec.SourceIP),
			slog.Bool("tls", rec.TLS != ""),
			slog.String("tls_version", rec.TLS),
			slog.String("reply", rec.Reply),
			slog.Int("code", rec.Code),
			slog.String("enhanced", rec.Enhanced),
			slog.String("text", rec.Text),
			slog.Int("attempt", rec.Attempt),
			slog.String("result", rec.Result),
			slog.String("category", string(rec.Category)),
			// Seconds, as Postfix's delay=: a Duration would log as nanoseconds in JSON.
			slog.Float64("delay", rec.Delay),
			slog.Float64("duration", rec.Duration),
		)
	}
	if a.cfg.recorder != nil {
		a.cfg.recorder.Record(ctx, rec)
	}
}
