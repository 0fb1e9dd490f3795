// Package publisher pushes signed revisions from a publisher's store to a
// distributor. It offers the revision, then serves the chunks the
// distributor asks for — only those it lacks — and waits for the
// distributor to say the revision is stored.
//
// A publisher never pushes a revision it cannot read back whole from its
// store, and never reports success before the distributor has stored the
// revision durably.
package publisher
