package delivery

import (
	"net"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/queue"
)

// logResult writes the delivery log record of one recipient and attempt
// (seed 002: a searchable log of sender, recipient, queue id, relay IP,
// status and error).
func (a *Agent) logResult(msg *queue.Message, st *rcptState, outcome sluice.Outcome, took time.Duration) {
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
	a.log.Info("delivery",
		"queue_id", env.ID,
		"from", env.From,
		"to", st.rcpt.Address,
		"route", st.route,
		"relay", st.relay,
		"ip", st.ip,
		"source_ip", sourceIP,
		"tls", st.tls != "",
		"tls_version", st.tls,
		"reply", r.Error(),
		"code", r.Code,
		"enhanced", r.Enhanced.String(),
		"text", r.Message,
		"attempt", msg.Attempt,
		"result", outcome.String(),
		"category", string(Categorize(r)),
		// Seconds, as Postfix's delay=: a Duration would log as nanoseconds in JSON.
		"delay", delay.Seconds(),
		"duration", took.Seconds(),
	)
}
