// Package publisher is the publisher side of TED: it builds distributions
// into the publisher's store (Build: chunk, sign, store, detect an
// unchanged rebuild, prune), pushes signed revisions to a distributor
// (Push: offer, then serve only the chunks the distributor asks for, and
// wait for it to store the revision), and runs the build-schedule daemon
// (Daemon: rebuild each distribution from its source directory when its
// build window opens, and push what changed).
//
// A publisher never pushes a revision it cannot read back whole from its
// store, never makes a new revision of content that did not change, and
// never reports a push done before the distributor has stored the revision
// durably.
package publisher
