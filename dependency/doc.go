// Package dependency decides what a subscriber may extract and in what order,
// and explains in words a person can act on why anything else must wait.
//
// It parses requirements ("runtime >=2.0, <3", or a bare name for any
// version), plans an extract run from the versions already extracted and the
// revisions received (PlanExtraction: a dependency before its dependants, so a
// dependency arriving in the same run unblocks them in that run), and finds
// cycles in a graph of distributions (FindCycle) so the publisher can refuse
// a build that would close one.
//
// It is pure computation over the values it is given: it must never touch a
// store, the network, the clock or the file system, never import
// distribution or a daemon package, and never panic on what a revision
// declares: a bad version or an impossible requirement is a blocked reason,
// not an error that stops the run.
package dependency
