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
package health
