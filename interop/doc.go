// Package interop holds black-box tests of the sluice binary against mail
// software nobody here wrote: swaks and Postfix's smtp-source as clients,
// Postfix's smtp-sink and a private Postfix instance (its own configuration,
// queue and log in a temporary directory, on a kernel-chosen port; it needs
// root, as Postfix does, and is skipped otherwise) as the next hop. They build ./cmd/sluice once, run it
// as a separate process and talk to it only over SMTP, its log and signals,
// as an operator would.
//
// The tests need the build tag "interop":
//
//	SLUICE_INTEROP=1 go test -tags interop ./interop/...
//
// With SLUICE_INTEROP=1 a missing tool fails the tests; without it they are
// skipped. scripts/test installs the tools and sets the variable.
package interop
