package cluster

import (
	"cmp"
	"slices"
	"time"
)

// Meta is what each node gossips about itself.
type Meta struct {
	Priority int  `json:"p"`
	Healthy  bool `json:"h,omitempty"`
	// Active: the node holds the lease and acts, under Epoch.
	Active bool   `json:"a,omitempty"`
	Epoch  uint64 `json:"e,omitempty"`
	// HandoverTo is the node an operator asked, on this node, to make
	// active; among the members, the request with the largest HandoverSeq
	// wins.
	HandoverTo  string `json:"to,omitempty"`
	HandoverSeq int64  `json:"ts,omitempty"`
	// Ready: the node holding the lease can act (its store is open).
	Ready bool `json:"r,omitempty"`
	// Auth is the lease authority the node asks (its first parent).
	Auth string `json:"au,omitempty"`
	// Until is when the node's lease ends by its clock (Unix ms): a node
	// that stopped gossiping (hung) is not kept elected past it.
	Until int64 `json:"u,omitempty"`
	// Agent is the ted version the node runs, Probation whether it is on
	// probation: the active node upgrades after the standbys (cmd/ted,
	// agent packs).
	Agent     string `json:"v,omitempty"`
	Probation bool   `json:"vp,omitempty"`
	// AgentFailed is the newer version that failed on the node, and why
	// (short), if one did: shown at the top through the active node.
	AgentFailed string `json:"vf,omitempty"`
}

// Member is one live node as the gossip shows it.
type Member struct {
	Name string
	Meta Meta
}

// Elect returns the node that should be active among the live members: the
// target of the latest handover if it is a healthy member; else the node
// holding the lease (the latest epoch) if it is healthy, so the role does
// not move back and forth when a node with a lower priority returns; else
// the healthy member with the lowest priority, the name breaking ties. ""
// if none is healthy. The holder is kept only while its gossiped lease has
// not ended at now: one that hangs without renewing is not.
func Elect(members []Member, now time.Time) string {
	healthy := func(name string) bool {
		return slices.ContainsFunc(members, func(m Member) bool { return m.Name == name && m.Meta.Healthy })
	}
	var latest Member
	for _, m := range members {
		if m.Meta.HandoverTo != "" && m.Meta.HandoverSeq > latest.Meta.HandoverSeq {
			latest = m
		}
	}
	if latest.Meta.HandoverTo != "" && healthy(latest.Meta.HandoverTo) {
		return latest.Meta.HandoverTo
	}
	var holder Member
	for _, m := range members {
		if m.Meta.Active && m.Meta.Epoch > holder.Meta.Epoch {
			holder = m
		}
	}
	if holder.Meta.Healthy && now.UnixMilli() < holder.Meta.Until {
		return holder.Name
	}
	best := ""
	bestPriority := 0
	for _, m := range members {
		if !m.Meta.Healthy {
			continue
		}
		if best == "" || m.Meta.Priority < bestPriority || (m.Meta.Priority == bestPriority && m.Name < best) {
			best, bestPriority = m.Name, m.Meta.Priority
		}
	}
	return best
}

// activeOf returns the node the members say is active, holding the lease
// and able to act (the largest epoch wins, if two still say so for a
// moment), or "".
func activeOf(members []Member) string {
	var active []Member
	for _, m := range members {
		if m.Meta.Active && m.Meta.Ready {
			active = append(active, m)
		}
	}
	if len(active) == 0 {
		return ""
	}
	return slices.MaxFunc(active, func(a, b Member) int { return cmp.Compare(a.Meta.Epoch, b.Meta.Epoch) }).Name
}
