// Package cluster decides which node of a cluster subscriber is active:
// the only one that connects to the parent for content, receives and
// extracts (DESIGN.md §11).
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
//     stopped. Leases are per child certificate and cluster name, and held
//     by node name and process instance, so a second process with a copied
//     config is another holder.
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
// Failure cases (all in node_test.go's simulation, which checks that never
// two nodes act at once, at every step):
//   - active node dies: gossip marks it dead (about 5 s), the next node
//     asks, and gets the lease once the old one expires (6 s after its last
//     renewal): about 7 s in all, inside the 15 s budget;
//   - active cut from its peers but not from the parent: the peers elect
//     another, whose requests are refused while the active renews;
//   - active cut from the parent: it cannot renew, stops acting when its
//     lease runs out, and gossips that it is unhealthy, so another is
//     elected and granted the lease once it has expired at the parent;
//   - full split: both sides ask; the parent grants one.
//
// A node's clock may run fast or slow by up to Drift (1 %) against the
// parent's; the margin (500 ms) covers the time to stop acting. A handover
// is carried in every node's gossip once seen, so it outlives the node it
// was asked on; which of two handovers is the latest is decided by the
// wall clocks of the nodes they were asked on.
package cluster
