// Package admin is the admin HTTP API of a running sluice: what an
// operator needs in an incident without stopping the daemon (seeds 002
// and 004), as JSON over HTTP. The "sluice" command's queue, explain and
// log subcommands are its clients.
//
//	GET  /api/v1/queue?domain=&sender=&state=&older_than=&newer_than=&limit=&after=
//	GET  /api/v1/queue/stats
//	GET  /api/v1/queue/{id}
//	POST /api/v1/queue/{id}/{hold|release|delete|requeue|bounce}
//	POST /api/v1/queue/flush
//	GET  /api/v1/explain/{id}           per recipient: queue state and what delivery would do now
//	GET  /api/v1/explain?rcpt=&sender=  a dry run of the routes table for one address
//	GET  /api/v1/log?rcpt=&sender=&id=&result=&since=&until=&limit=
//
// Answers are the queue's and delivery's own types encoded as JSON;
// errors are {"error": "..."} with 400 for a bad request, 404 for an
// unknown message, 401 without the bearer token of [WithToken] and 501 for
// a part that is not configured. Times in queries are RFC 3339 or a
// duration meaning that long ago ("since=1h"). Requeue looks the route up
// again at the next attempt; nothing a message "remembers" survives it
// (seed 004).
//
// The API changes the queue: serve it on loopback, or behind a token
// over TLS, never to the open Internet.
package admin
