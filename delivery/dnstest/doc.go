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
// Negative answers (NXDOMAIN, and NODATA: the name exists without records
// of the asked type) carry in their authority section the SOA record of
// the name or of its closest ancestor that owns one, as RFC 2308 section
// 3 asks, so that negative caching can be tested; add an SOA record for a
// "zone" to get it.
//
// Deviations: there are no zones beyond that SOA look-up, no NS records
// and no CNAME chasing; a name "exists" when it owns any record, and the
// answer section holds exactly the records of the asked name and type.
package dnstest
