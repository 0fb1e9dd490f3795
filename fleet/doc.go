// Package fleet is what a distributor knows of the nodes below it, and
// the views, rollouts and reports made of it.
//
// Every distributor keeps a Table of its subtree: its direct children as
// they report themselves (transport.Status), and the nodes further down
// as its child distributors report them (transport.Subtree). It reports
// the table up to its own parent the same way, so the first tier knows
// the whole tree. Only changes travel: every change of a node's state is
// numbered, and Changes gives the reporter what changed since its last
// report. A quiet subtree sends a summary (node count and a digest of
// every node's state) once a minute, which the parent checks against its
// copy; a mismatch ends the session, and the next starts with a whole
// report.
//
// A node is stale when it has been out of touch for StaleAfter: its own
// session with its parent ended, or the session of the child that reports
// it did. Staleness is worked out where the view is taken, from when the
// node was last seen, so it needs no message of its own.
//
// The History is a node's event log (published, received, extracted,
// blocked, failed, rolled back, first seen, stale), one file of JSON lines
// per day, bounded by age and size.
package fleet
