// Package health tells operators and load balancers whether a sluice
// process is alive and ready, and exposes its Prometheus metrics.
//
// A [Health] holds named liveness and readiness [Checker]s and serves them
// over HTTP ([Health.Handler]):
//
//   - GET /livez: 200 "ok" while every liveness check passes;
//   - GET /readyz: 200 "ok" while every readiness check passes and the
//     process is not draining; otherwise 503 with a JSON body naming the
//     failed checks;
//   - GET /metrics: the registry in the Prometheus exposition format.
//
// Liveness is kept apart from readiness, as in CoreDNS's health and ready
// plugins: a process that is draining ([Health.SetDraining], the "lame
// duck" state of a graceful shutdown) is alive but not ready, so a load
// balancer stops sending it new connections while it finishes its work.
//
// Checks run concurrently, each under the check timeout, on every request;
// results are not cached.
//
// Health is measured by speaking the protocol: [SMTPProbe] opens an SMTP
// session (RFC 5321 sections 3.1 and 4.1.1: 220 greeting, EHLO answered with
// 250, QUIT), so a server that accepts TCP connections but never greets is
// reported unhealthy. Deviation: the probe bounds the whole session with one
// deadline, far shorter than the per-command timeouts of RFC 5321 section
// 4.5.3.2, because a probe must answer within a load balancer's timeout.
//
// The other protocol probes are [ProbeFunc]s: [SMTPSession] and
// [LMTPSession] (RFC 2033: 220, LHLO, QUIT), [SpamdPing] (SpamAssassin's
// spamd protocol, "PING SPAMC/1.5" answered by "SPAMD/1.5 0 PONG"),
// [RspamdPing] (rspamd's HTTP "GET /ping" answered by "pong"),
// [HTTPStatus] (a 2xx status, RFC 9110), [DNSQuery] (RFC 1035: any answer
// but SERVFAIL or REFUSED) and, for comparison only, [TCPConnect]. A
// [Probe] runs one of them every interval under a deadline and keeps the
// endpoint's state with HAProxy-style rise and fall thresholds.
//
// A [Pool] spreads requests over replicas of one backend (spamd, rspamd,
// smarthosts) with a [Strategy] (least-outstanding, ordered failover,
// random), takes a replica out of rotation when its probe fails or when
// real traffic to it fails ([Pool.Done], passive ejection), and takes it
// back only after its probe has succeeded rise times (seed 000).
package health
