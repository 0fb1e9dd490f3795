// Package distributor is the relay daemon. It accepts revisions from the
// publishers allowed for each channel and from its own parent (a lower tier
// is a child of its parent and a parent of its children), verifies their
// signatures against the keys it trusts, stores them, and offers them to
// the connected children allowed for the channel. It serves chunks as a
// pull-through cache: a child may ask for a chunk of a revision that is
// still on its way down, and gets it as soon as it arrives.
//
// A distributor never forwards what it has not verified: a revision whose
// signature fails, that is older than one it holds, or that comes from a
// publisher not listed for every channel of the revision is refused, logged
// and never offered. It never serves a chunk whose bytes do not match its
// id.
//
// For a cluster subscriber it grants one lease per cluster (lease.go), and
// serves a node only if its certificate is a member of the cluster it names
// (Config.Clusters) and, for content, only under the current epoch. It never
// gives a lease it has not recorded in its data directory, so a restart
// cannot hand the lease to a second node while the first still acts.
package distributor
