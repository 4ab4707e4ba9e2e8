// Package dkim signs outgoing mail with DomainKeys Identified Mail
// (RFC 6376), as a [filter.Filter] for the end-of-DATA stage of a
// [filter.Chain]. Signing is done by github.com/emersion/go-msgauth.
//
// A [Signer] holds one or more [Key]s per domain, read from PEM files
// ([LoadKey]): RSA (rsa-sha256; at least 1024 bits, RFC 8301 section 3.2,
// 2048 recommended) and Ed25519 (ed25519-sha256, RFC 8463). A domain with
// both is signed twice, as RFC 8463 section 4 suggests until every
// verifier knows Ed25519. [Key.Record] gives the TXT record to publish at
// [Key.RecordName].
//
// The signing domain (d=) is the domain of the message's From address
// (RFC 5322 section 3.6.2), so that the signature is aligned for DMARC
// (RFC 7489 section 3.1.1); a key for a parent domain signs for its
// subdomains (relaxed alignment). Only messages accepted by the
// [WithSignIf] predicate are signed, by default those of authenticated
// clients: signing everything would lend the domain to forgeries arriving
// from outside.
//
// The signed header fields follow RFC 6376 section 5.4.1 ([DefaultHeaders],
// never Received or Return-Path), each as many times as the message has
// it; the fields in [DefaultOversigned] are listed once more, so that a
// second From or Subject added in transit breaks the signature (RFC 6376
// section 8.15). The whole body is signed (no l= tag).
//
// Canonicalization is relaxed/relaxed by default (RFC 6376 section 3.4).
// Deviation: the header canonicalization is always relaxed, because the
// receiver refolds the DKIM-Signature field when it prepends it; only the
// body canonicalization can be set.
//
// In sluice's acceptor the filter sees the message with the acceptor's
// Received field on top; the DKIM-Signature fields it returns are
// prepended below that Received field when the message is queued. The
// signature covers the named fields and the body, not their position, so
// it verifies on the message as stored and as delivered. The h= tag is
// one word that can exceed 78 characters per line; RFC 5322 allows up to
// 998.
package dkim
