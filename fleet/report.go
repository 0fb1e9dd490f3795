package fleet

import (
	"cmp"
	"path"
	"slices"
	"strings"
	"time"
)

// Report is `ted report`: per node the distributions it has and since
// when, and per revision what happened to it, from Since on.
type Report struct {
	Node      string           `json:"node"`
	Taken     time.Time        `json:"taken"`
	Since     time.Time        `json:"since,omitzero"`
	Nodes     []ReportNode     `json:"nodes"`
	Revisions []ReportRevision `json:"revisions"`
	// Truncated: the history from Since held more events than a report
	// takes; the latest are here. Narrow it with --since, --dist, --node.
	Truncated bool `json:"truncated,omitempty"`
}

// ReportNode is one node in a report.
type ReportNode struct {
	Name          string      `json:"name"`
	Parent        string      `json:"parent"`
	Role          string      `json:"role"`
	Agent         string      `json:"agent"`
	LastSeen      time.Time   `json:"last_seen"`
	Stale         bool        `json:"stale"`
	FirstSeen     time.Time   `json:"first_seen,omitzero"`
	Problem       string      `json:"problem,omitempty"`
	Distributions []ReportHas `json:"distributions"`
	// Events are the node's own: first seen, stale.
	Events []Event `json:"events,omitempty"`
}

// ReportHas is one revision a node has, in the state it is in since Since
// (zero when that is older than the history).
type ReportHas struct {
	Name     string    `json:"name"`
	Revision uint64    `json:"revision"`
	Version  string    `json:"version"`
	State    string    `json:"state"`
	Since    time.Time `json:"since,omitzero"`
	Reason   string    `json:"reason,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// ReportRevision is one revision's history: its events in order.
type ReportRevision struct {
	Name     string  `json:"name"`
	Revision uint64  `json:"revision"`
	Version  string  `json:"version"`
	Events   []Event `json:"events"`
}

// Keep returns whether an event concerns what f selects: a node whose
// name matches, a revision of its distribution (node events, first seen
// and stale, only without a distribution in f). f must be valid.
func (f Filter) Keep() func(*Event) bool {
	name, rev, _ := ParseDist(f.Dist)
	return func(ev *Event) bool {
		if f.Node != "" {
			if ok, _ := path.Match(f.Node, ev.Node); !ok {
				return false
			}
		}
		if f.Dist != "" {
			return ev.Dist == name && (rev == 0 || ev.Revision == rev)
		}
		return true
	}
}

// MakeReport makes a report from a view and the history's events from
// since on (oldest first), both already narrowed by f; a node's
// revisions are narrowed here.
func MakeReport(v View, since time.Time, events []Event, f Filter) Report {
	name, rev, _ := ParseDist(f.Dist)
	r := Report{Node: v.Node, Taken: v.Taken, Since: since, Nodes: []ReportNode{}, Revisions: []ReportRevision{}}
	type stateKey struct {
		node, dist string
		rev        uint64
		kind       Kind
	}
	last := map[stateKey]time.Time{}
	nodeEvents := map[string][]Event{}
	revs := map[revKey]*ReportRevision{}
	for _, ev := range events {
		if ev.Dist == "" {
			nodeEvents[ev.Node] = append(nodeEvents[ev.Node], ev)
			continue
		}
		last[stateKey{ev.Node, ev.Dist, ev.Revision, ev.Kind}] = ev.Time
		k := revKey{ev.Dist, ev.Revision}
		rr := revs[k]
		if rr == nil {
			rr = &ReportRevision{Name: ev.Dist, Revision: ev.Revision}
			revs[k] = rr
		}
		if ev.Version != "" {
			rr.Version = ev.Version
		}
		rr.Events = append(rr.Events, ev)
	}
	for _, n := range v.Nodes {
		rn := ReportNode{Name: n.Name, Parent: n.Parent, Role: n.Role, Agent: n.Agent, LastSeen: n.LastSeen, Stale: n.Stale,
			FirstSeen: n.FirstSeen, Problem: n.Problem, Distributions: []ReportHas{}, Events: nodeEvents[n.Name]}
		for _, d := range n.Distributions {
			if f.Dist != "" && (d.Name != name || rev != 0 && d.Revision != rev) {
				continue
			}
			h := ReportHas{Name: d.Name, Revision: d.Revision, Version: d.Version, State: d.State, Since: d.Since, Reason: d.Reason, Error: d.Error}
			if t, ok := last[stateKey{n.Name, d.Name, d.Revision, Kind(d.State)}]; ok && (h.Since.IsZero() || t.Before(h.Since)) {
				h.Since = t
			}
			rn.Distributions = append(rn.Distributions, h)
		}
		r.Nodes = append(r.Nodes, rn)
	}
	for _, rr := range revs {
		r.Revisions = append(r.Revisions, *rr)
	}
	slices.SortFunc(r.Revisions, func(a, b ReportRevision) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.Revision, b.Revision))
	})
	return r
}
