package smtp

import (
	gosmtp "github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice"
)

// The replies of the acceptor, in one place.
var (
	replyBadSender    = sluice.NewReply(553, sluice.EnhancedCode{5, 1, 7}, "bad sender address syntax")
	replyBadRecipient = sluice.NewReply(553, sluice.EnhancedCode{5, 1, 3}, "bad recipient address syntax")
	replyNoSender     = sluice.NewReply(503, sluice.EnhancedCode{5, 5, 1}, "MAIL first")
	replyNestedMail   = sluice.NewReply(503, sluice.EnhancedCode{5, 5, 1}, "nested MAIL command: a transaction is in progress (RSET first)")
	replyTooLarge     = sluice.NewReply(552, sluice.EnhancedCode{5, 3, 4}, "message size exceeds fixed maximum message size")
	replyTempFailure  = sluice.NewReply(451, sluice.EnhancedCode{4, 3, 0}, "temporary failure, please try again later")
	replyNoSpace      = sluice.NewReply(452, sluice.EnhancedCode{4, 3, 1}, "insufficient system storage, please try again later")
	replyShutdown     = sluice.NewReply(421, sluice.EnhancedCode{4, 3, 2}, "service shutting down, please try again later")
	replyReadFailed   = sluice.NewReply(421, sluice.EnhancedCode{4, 4, 2}, "error reading message, closing connection")
	replyPanic        = sluice.NewReply(421, sluice.EnhancedCode{4, 3, 0}, "internal error, closing connection")

	// Admission.
	replyTooManyConns  = sluice.NewReply(421, sluice.EnhancedCode{4, 7, 0}, "too many connections, try again later")
	replyTooManyFromIP = sluice.NewReply(421, sluice.EnhancedCode{4, 7, 0}, "too many connections from your address, try again later")
	replyConnRate      = sluice.NewReply(421, sluice.EnhancedCode{4, 7, 0}, "too many connections from your address recently, try again later")
	replyMsgRate       = sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1}, "too many messages from your address recently, try again later")
	replyGateSession   = sluice.NewReply(421, sluice.EnhancedCode{4, 3, 2}, "system not accepting network messages, try again later")
	replyGateMail      = sluice.NewReply(451, sluice.EnhancedCode{4, 3, 1}, "mail system full, try again later")

	// Session limits.
	replyTooManyCommands = sluice.NewReply(421, sluice.EnhancedCode{4, 7, 0}, "too many commands without a mail transaction, closing connection")
	replyTimeout         = sluice.NewReply(421, sluice.EnhancedCode{4, 4, 2}, "timeout, closing connection")
	replyTooManyErrors   = sluice.NewReply(421, sluice.EnhancedCode{4, 7, 0}, "too many errors, closing connection")

	// TLS and AUTH.
	replyTLSRequired   = sluice.NewReply(530, sluice.EnhancedCode{5, 7, 0}, "must issue a STARTTLS command first")
	replyAuthRequired  = sluice.NewReply(530, sluice.EnhancedCode{5, 7, 0}, "authentication required")
	replyAuthFailed    = sluice.NewReply(535, sluice.EnhancedCode{5, 7, 8}, "authentication credentials invalid")
	replyAuthTemp      = sluice.NewReply(454, sluice.EnhancedCode{4, 7, 0}, "temporary authentication failure, try again later")
	replyAuthThrottled = sluice.NewReply(454, sluice.EnhancedCode{4, 7, 0}, "too many failed authentication attempts, try again later")
)

func replyRelayDenied(addr string) *sluice.Reply {
	return sluice.NewReply(554, sluice.EnhancedCode{5, 7, 1}, "<%s>: relay access denied", addr)
}

func replyQueued(id string) *sluice.Reply {
	return sluice.NewReply(250, sluice.EnhancedCode{2, 0, 0}, "queued as %s", id)
}

// toSMTPError converts a sluice reply to the error go-smtp writes to the
// client as is. go-smtp reads it with a type assertion, so session methods
// must return the result unwrapped. A 250 reply is not a failure: go-smtp
// writes it as the DATA reply and does nothing else with it.
func toSMTPError(r *sluice.Reply) *gosmtp.SMTPError {
	e := &gosmtp.SMTPError{Code: r.Code, Message: r.Message}
	if r.Enhanced != (sluice.EnhancedCode{}) {
		e.EnhancedCode = gosmtp.EnhancedCode(r.Enhanced)
	} // else EnhancedCodeNotSet: go-smtp sends X.0.0
	return e
}
