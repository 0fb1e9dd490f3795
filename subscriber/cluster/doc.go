// Package cluster decides which node of a cluster subscriber is active:
// the only one that connects to the parent for content, receives and
// extracts, and the only one that writes the cluster's shared directory.
//
// Two mechanisms, each doing what it is good at:
//
//   - Gossip (hashicorp/memberlist, encrypted with the cluster's key and
//     labelled with its name) tells each node which nodes are alive and
//     what they say of themselves (Meta: priority, health, whether active,
//     a handover asked by an operator). Elect turns that view into the node
//     that should be active: the target of the latest handover if it is
//     healthy, else the healthy node with the lowest priority, name
//     breaking ties. Gossip alone can split: during a partition each side
//     may elect its own node.
//   - A lease with a fencing epoch, granted by the parent distributor
//     (transport.Leases), closes that gap. Only the elected node asks; the
//     parent grants one node at a time. A node acts only while its lease is
//     valid by its own clock, which it counts from before it sent the
//     request and shortens by its drift bound and a margin, so it stops
//     acting before the parent can grant the lease to anyone else. The
//     parent also refuses content to any session without the current
//     epoch, and closes the holder's session when its lease ends. A
//     watchdog cancels the node's work when its lease ends by its own
//     clock, whatever else the node is doing (a lease request may hang);
//     a node that stands down gives the lease back only once its work has
//     stopped. The parent keeps one lease per cluster name, grants it only
//     to the member certificates its config lists for that cluster, and
//     holds it by node name and process instance, so a second process with
//     a copied config is another holder.
//   - A fence on the shared disk (Fence). The parent's epoch fences network
//     sessions; nothing there stops a node that was paused (SIGSTOP, a
//     frozen VM) past its lease from writing when it resumes. So the holder
//     records its epoch in the shared directory (EpochFile) before it
//     changes anything there, and every change (each journal record, each
//     rename into the root, each store write) first checks that the lease
//     is valid by its own clock and that the epoch on disk is still its
//     own. A node that finds another epoch there stops at once, without
//     closing its store (closing writes): it starts itself again, as a
//     crash would. What remains between a check and its change is argued
//     on Fence.
//
// The election sticks: the node holding the lease stays elected while it is
// healthy, so a node with a better priority that comes back does not take
// the role back (each move would stop an extraction); a handover does. A
// node stopped because its lease ended (after a pause) is not marked
// unhealthy. An extraction interrupted by a move goes on from its last
// checkpoint on the next active node (install.Installer.Recover).
//
// Why the parent and not a quorum: the parent is already the one place
// every node of the cluster must reach to receive anything, so a node cut
// from it has nothing to act on anyway; a witness or quorum would add a
// service to run and could still grant the role to a node that cannot
// reach the parent. The price: with the parent unreachable, no node is
// active (nothing could be received either); extraction of what was
// already received waits too. Only the first parent in `parents` grants
// leases (a cluster node dials no other): two parents with two tables
// could each grant one.
//
// Failure cases (all in sim_test.go's simulation, which checks that never
// two nodes act at once, at every step):
//   - active node dies: gossip marks it dead (about 4 s: memberlist's
//     suspicion is not stretched, see StartGossip), the next node asks, and
//     gets the lease once the old one expires (6 s after its last
//     renewal): 5–6 s in all, for every kill in a row, inside the 15 s
//     budget;
//   - active cut from its peers but not from the parent: the peers elect
//     another, whose requests are refused while the active renews;
//   - active cut from the parent: it cannot renew, stops acting when its
//     lease runs out, and gossips that it is unhealthy, so another is
//     elected and granted the lease once it has expired at the parent;
//   - full split: both sides ask; the parent grants one.
//
// A node's clock may run fast or slow by up to Drift (1 %) against the
// parent's; the margin (1 s) covers the time to stop acting (the store's
// close included). A handover
// is carried in every node's gossip once seen, so it outlives the node it
// was asked on; which of two handovers is the latest is decided by the
// wall clocks of the nodes they were asked on.
package cluster
