// Package subscriber is the subscriber daemon of TED: it keeps a session
// with a parent distributor, receives the revisions of the channels it
// subscribes to (each verified against its own trusted keys, refused if
// older than one held or installed), stores them, and extracts them under
// its root in dependency order, inside the extract window. It reports
// every revision's state to its parent and on its status address, and
// serves `ted subscriber status`, `extract`, `rollback` and `packages`.
//
// Extracting, recording what is installed, recovering after a crash and
// rolling back are the installer engine's (ted/install), which the daemon
// is given at New: the daemon decides what to install and when, and runs
// around it what belongs to a revision rather than to the engine. It runs
// a distribution's pre-action before handing it over, and its after-step
// checks the tree (install.VerifyTree) and runs the post-action. It plans
// a package's installation from its descriptor and its prerequisites on
// this server (the components that install, and those skipped). And it
// keeps the states of revisions: what failed here is not tried again on
// an offer, what an operator rolled back stays held.
//
// On a cluster (ted/subscriber/cluster) only the active node runs a
// Subscriber; Config.Fence stops every change to the store, the root and
// the installer's records once its lease ends.
package subscriber
