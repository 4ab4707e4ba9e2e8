package sluice

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Envelope is the SMTP envelope of one message: who sent it, to whom, and
// how it arrived. The body is never part of the envelope; packages pass it
// as a stream next to it.
//
// An Envelope is plain data and encodes to JSON (the queue stores it that
// way, with a checksum).
type Envelope struct {
	// ID is the queue id, assigned by the queue when the message is spooled.
	ID string `json:"id,omitempty"`
	// From is the reverse-path without angle brackets; "" is the null
	// sender (bounces and other notifications, RFC 5321 section 4.5.5).
	From string `json:"from"`
	// Recipients are the forward-paths, in the order they were given.
	Recipients []Recipient `json:"rcpts"`
	// Client describes the SMTP client that handed the message over.
	Client ClientInfo `json:"client"`
	// Received is when the message was accepted.
	Received time.Time `json:"received"`
	// SMTPUTF8 is set when the client used the SMTPUTF8 parameter
	// (RFC 6531); the next hop must support it too.
	SMTPUTF8 bool `json:"smtputf8,omitempty"`
	// Body is the BODY parameter of MAIL: "", "7BIT", "8BITMIME" or "BINARYMIME".
	Body string `json:"body,omitempty"`
	// EnvID is the RFC 3461 ENVID parameter, as given (xtext decoded).
	EnvID string `json:"envid,omitempty"`
	// Ret is the RFC 3461 RET parameter: "", "FULL" or "HDRS".
	Ret string `json:"ret,omitempty"`
}

// Recipient is one forward-path of an envelope with its RFC 3461 DSN
// parameters.
type Recipient struct {
	// Address is the mailbox without angle brackets.
	Address string `json:"addr"`
	// Notify is the NOTIFY parameter: empty (the default: failures), or
	// some of "SUCCESS", "FAILURE", "DELAY", or just "NEVER".
	Notify []string `json:"notify,omitempty"`
	// ORcpt is the ORCPT parameter as "addr-type;address", or "".
	ORcpt string `json:"orcpt,omitempty"`
}

// ClientInfo is what is known of the SMTP client of a session.
type ClientInfo struct {
	// Addr is the client's address and port (after PROXY protocol, the
	// real client's).
	Addr netip.AddrPort `json:"addr"`
	// Helo is the name the client gave in HELO, EHLO or LHLO.
	Helo string `json:"helo,omitempty"`
	// TLS is set when the session was encrypted.
	TLS bool `json:"tls,omitempty"`
	// AuthUser is the authenticated identity, or "" if none.
	AuthUser string `json:"auth,omitempty"`
}

// Validate checks that e can be queued: a valid (or null) sender, at least
// one recipient, and every recipient a valid mailbox. UTF-8 addresses are
// allowed only when e.SMTPUTF8 is set.
func (e *Envelope) Validate() error {
	if e.From != "" {
		if _, err := ParseMailbox(e.From, e.SMTPUTF8); err != nil {
			return fmt.Errorf("sluice: sender: %w", err)
		}
	}
	if len(e.Recipients) == 0 {
		return errors.New("sluice: envelope has no recipients")
	}
	for _, r := range e.Recipients {
		if _, err := ParseMailbox(r.Address, e.SMTPUTF8); err != nil {
			return fmt.Errorf("sluice: recipient: %w", err)
		}
	}
	return nil
}

// Clone returns a deep copy of e, so a caller may keep it while the
// original is changed.
func (e *Envelope) Clone() *Envelope {
	c := *e
	c.Recipients = make([]Recipient, len(e.Recipients))
	for i, r := range e.Recipients {
		r.Notify = append([]string(nil), r.Notify...)
		c.Recipients[i] = r
	}
	return &c
}

// NotifyOn reports whether the recipient asked for a DSN of the given kind
// ("SUCCESS", "FAILURE" or "DELAY"). Without a NOTIFY parameter, failures
// and delays are notified and successes are not (RFC 3461 section 4.1).
func (r Recipient) NotifyOn(kind string) bool {
	if len(r.Notify) == 0 {
		return !strings.EqualFold(kind, "SUCCESS")
	}
	for _, n := range r.Notify {
		if strings.EqualFold(n, kind) {
			return true
		}
	}
	return false
}
