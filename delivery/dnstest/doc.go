// Package dnstest runs a small authoritative DNS server on a loopback port
// for tests, built on github.com/miekg/dns. It answers from records given
// as zone-file lines, and can be told to fail (any RCODE) or to stay silent
// for a name, so that code using DNS can be tested against real DNS
// messages over UDP and TCP without touching the network.
//
// Standards: RFC 1035 messages over UDP and TCP on the same port. UDP
// answers larger than 512 octets (or the client's EDNS0 buffer size, RFC
// 6891) are truncated with the TC bit set, so clients' fallback to TCP can
// be tested.
//
// Deviations: there are no zones, SOA or NS records and no CNAME chasing;
// a name "exists" when it owns any record, and the answer section holds
// exactly the records of the asked name and type.
package dnstest
