// Package sluice is the shared vocabulary of the sluice mail transfer agent:
// the envelope of a message ([Envelope], [Recipient]), what is known of the
// client that handed it over ([ClientInfo]), SMTP replies carried as errors
// ([Reply]), and address syntax ([ParseMailbox]).
//
// The package has no behaviour beyond validation and formatting, and imports
// nothing but the standard library, so every other package of the module
// (smtp, queue, filter, delivery, health) can share these types without
// depending on each other.
//
// Standards implemented here:
//   - RFC 5321 section 4.1.2: Mailbox, Local-part, Domain and address-literal
//     syntax, with the size limits of section 4.5.3.1.
//   - RFC 6531 section 3.3: the SMTPUTF8 extensions of that syntax
//     (UTF-8 in atext, qtextSMTP and sub-domains).
//   - RFC 3463 / RFC 2034: enhanced status codes in [Reply].
//   - RFC 3461: the DSN parameters carried in [Envelope] and [Recipient].
//
// Deviations: source routes (A-d-l) in paths are accepted and discarded, as
// RFC 5321 section 4.1.1.3 asks of receivers; General-address-literal forms
// other than IPv6 are rejected as unroutable.
package sluice
