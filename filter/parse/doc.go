// Package parse is a filter that refuses messages whose structure cannot
// be parsed: a header that is not RFC 5322 fields, a multipart body
// (RFC 2046) whose boundaries do not close, a part whose transfer
// encoding (RFC 2045) does not decode, or a message beyond the limits on
// header fields, header size, nesting depth and number of parts. It reads
// the message with github.com/emersion/go-message.
//
// Seed 003 calls this a "parsing" error. Before the queue (at
// filter.StageData) the client gets 550 5.6.0 with the reason (RFC 3463
// 5.6.0: other or undefined media error); after the queue
// (filter.StagePostQueue) the message is bounced with a delivery status
// notification giving the same reason. At the stages without a body the
// filter accepts.
//
// Unknown character sets and unknown transfer encodings are not
// structural errors: the bytes are kept as they are, as go-message does.
package parse
