// Package dnsbl scores SMTP clients by weighted DNS lists: blocklists
// (DNSBL) that add to a client's score and allowlists (DNSWL) that take
// from it (RFC 5782).
//
// A [Checker] asks every [Zone] about a client's address in parallel, with
// one deadline for all of them, through a resolver given as host:port
// (github.com/miekg/dns). The name queried is the address reversed under
// the zone: octets for IPv4, nibbles for IPv6 (RFC 5782 section 2.4,
// [QueryName]). An A record in the answer is a listing when it falls in
// the zone's return-code ranges ([Zone.Codes]); by default any
// 127.0.0.0/8 address except 127.255.0.0/16, which lists such as
// Spamhaus use for errors (RFC 5782 section 2.1: listings are answered
// with addresses in 127.0.0.0/8). Several zones may share a name with
// different ranges and weights; the name is queried once, and every entry
// whose ranges an answer falls in adds its weight.
//
// Answers are cached per client and zone for their TTL, negative answers
// for the SOA's negative TTL (RFC 2308 section 5), both within bounds
// ([WithCacheTTL]), in a cache of bounded size. A zone that does not
// answer in time, or answers with an error, counts as not listing and is
// not cached: an outage of a list must not close the door to everyone.
//
// The Checker is a [filter.Filter] ([Checker.Check]) for the connect stage
// of a [filter.Chain]: it rejects a client whose score reaches the reject
// score (554 5.7.1, RFC 3463 "delivery not authorized"), may refuse one
// for now (451 4.7.1), and tags the messages of a listed client it lets
// through with an X-Sluice-DNSBL header naming the zones and the score.
// Package smtp's WithDNSBL screening is built on it.
package dnsbl
