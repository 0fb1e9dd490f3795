package fleet

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"ted/transport"
)

// View is the subtree of one node as `ted status` and the console show it.
type View struct {
	// Node is the node that answers (the root of the tree), Role its role.
	Node string `json:"node"`
	Role string `json:"role"`
	// Taken is when the view was taken; StaleAfter the bound for stale.
	Taken      time.Time `json:"taken"`
	StaleAfter Duration  `json:"stale_after"`
	Nodes      []Node    `json:"nodes"`
	Rollouts   []Rollout `json:"rollouts"`
}

// Duration is a time.Duration that reads and writes as "3m0s" in JSON.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// Node is one node of the subtree.
type Node struct {
	Name       string   `json:"name"`
	Parent     string   `json:"parent"`
	Role       string   `json:"role"`
	ActiveNode string   `json:"active_node,omitempty"`
	Agent      string   `json:"agent"`
	Channels   []string `json:"channels,omitempty"`
	Connected  bool     `json:"connected"`
	// LastSeen is the view's time for a node connected now.
	LastSeen time.Time `json:"last_seen"`
	Stale    bool      `json:"stale"`
	// StaleSince is when it became stale (LastSeen + StaleAfter).
	StaleSince    time.Time `json:"stale_since,omitzero"`
	FirstSeen     time.Time `json:"first_seen,omitzero"`
	Problem       string    `json:"problem,omitempty"`
	Distributions []Dist    `json:"distributions"`
}

// Dist is one revision on a node.
type Dist struct {
	Name       string `json:"name"`
	Revision   uint64 `json:"revision"`
	Version    string `json:"version"`
	State      string `json:"state"`
	Reason     string `json:"reason,omitempty"`
	Error      string `json:"error,omitempty"`
	Chunks     int    `json:"chunks,omitempty"`
	HaveChunks int    `json:"have_chunks,omitempty"`
	// Since is when it reached its state, as seen by the node that
	// answers (zero if before that node's start).
	Since time.Time `json:"since,omitzero"`
}

// Rollout counts the subscribers of a revision by state.
type Rollout struct {
	Name     string `json:"name"`
	Revision uint64 `json:"revision"`
	Version  string `json:"version"`
	// Counts: extracted, received, receiving, blocked, failed,
	// rolled_back, superseded, and not_reporting (subscribers of its
	// channels that say nothing of it) and stale (counted there, not
	// under the state they last reported).
	Counts map[string]int `json:"counts"`
	// Blocked and Failed group those states by reason and error.
	Blocked map[string]int `json:"blocked,omitempty"`
	Failed  map[string]int `json:"failed,omitempty"`
	// Chunks and HaveChunks add up the receiving subscribers' progress.
	Chunks     int64 `json:"chunks,omitempty"`
	HaveChunks int64 `json:"have_chunks,omitempty"`
	// Subscribers is how many are counted.
	Subscribers int `json:"subscribers"`
	// Wave says where a rollout in waves is, at the node that answers.
	Wave string `json:"wave,omitempty"`
}

// States of a revision on a node, and the two a rollout adds.
const (
	StateNotReporting = "not_reporting"
	StateStale        = "stale"
)

// Catalog is a revision the answering node holds, with its channels, so a
// rollout can count the subscribers that should have it and say nothing.
type Catalog struct {
	Name     string
	Revision uint64
	Version  string
	Channels []string
}

// Filter narrows a view. Zero values match everything.
type Filter struct {
	// Dist is NAME or NAME@REV.
	Dist string
	// State is a revision state, or stale or not_reporting.
	State string
	// Node is a glob (path.Match) on node names.
	Node string
}

// ParseDist splits NAME[@REV].
func ParseDist(s string) (name string, rev uint64, err error) {
	name, r, found := strings.Cut(s, "@")
	if name == "" {
		return "", 0, fmt.Errorf("--dist %q: want NAME or NAME@REVISION", s)
	}
	if found {
		rev, err = strconv.ParseUint(r, 10, 64)
		if err != nil || rev == 0 {
			return "", 0, fmt.Errorf("--dist %q: revision %q is not a positive number", s, r)
		}
	}
	return name, rev, nil
}

// Validate reports a filter that cannot match as intended.
func (f Filter) Validate() error {
	if f.Dist != "" {
		if _, _, err := ParseDist(f.Dist); err != nil {
			return err
		}
	}
	if f.Node != "" {
		if _, err := path.Match(f.Node, ""); err != nil {
			return fmt.Errorf("--node %q: %v", f.Node, err)
		}
	}
	if f.State != "" && !slices.Contains(States, f.State) {
		return fmt.Errorf("--state %q: want one of %s", f.State, strings.Join(States, ", "))
	}
	return nil
}

// States are the states a filter may name.
var States = []string{"receiving", "received", "extracted", "blocked", "failed", "rolled_back", "superseded", StateStale, StateNotReporting}

// View returns the table as seen from its node, narrowed by f (which must
// be valid); self is the answering node's own record (its revisions),
// catalog the revisions it holds.
func (t *Table) View(self Node, catalog []Catalog, f Filter) View {
	now := t.cfg.Now()
	t.mu.Lock()
	nodes := make([]Node, 0, len(t.nodes))
	for _, e := range t.nodes {
		nodes = append(nodes, t.nodeLocked(e, now))
	}
	t.mu.Unlock()
	return Build(self, nodes, catalog, f, now, t.cfg.StaleAfter)
}

// nodeLocked is e as a Node at now.
func (t *Table) nodeLocked(e *entry, now time.Time) Node {
	n := &e.eff
	out := Node{Name: n.Name, Parent: n.Parent, Role: n.Role, ActiveNode: n.ActiveNode, Agent: n.Agent, Channels: n.Channels,
		Connected: n.Connected, Problem: n.Problem, FirstSeen: e.first, Distributions: make([]Dist, 0, len(n.Revisions))}
	if n.Connected {
		out.LastSeen = now
	} else {
		out.LastSeen = time.UnixMilli(n.LastSeen)
		if since := out.LastSeen.Add(t.cfg.StaleAfter); !since.After(now) {
			out.Stale, out.StaleSince = true, since
		}
	}
	for _, r := range n.Revisions {
		out.Distributions = append(out.Distributions, Dist{Name: r.Name, Revision: r.Revision, Version: r.Version, State: r.State,
			Reason: r.Reason, Error: r.Error, Chunks: r.Chunks, HaveChunks: r.HaveChunks, Since: e.since[revKey{r.Name, r.Revision}]})
	}
	return out
}

// Build makes a view of self and the nodes below it (sorted here),
// narrowed by f, with the rollouts of what they report and of catalog.
func Build(self Node, nodes []Node, catalog []Catalog, f Filter, now time.Time, staleAfter time.Duration) View {
	v := View{Node: self.Name, Role: self.Role, Taken: now, StaleAfter: Duration(staleAfter)}
	name, rev, _ := ParseDist(f.Dist)
	if f.Dist == "" {
		name = ""
	}
	nodes = append(nodes, self)
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	var counted []Node
	for _, n := range nodes {
		if f.Node != "" {
			if ok, _ := path.Match(f.Node, n.Name); !ok {
				continue
			}
		}
		counted = append(counted, n)
	}
	v.Rollouts = rollouts(counted, catalog, name, rev)
	if f.State != "" {
		// Only the rollouts' counts of that state.
		v.Rollouts = slices.DeleteFunc(v.Rollouts, func(r Rollout) bool { return r.Counts[f.State] == 0 })
	}
	v.Nodes = []Node{}
	for _, n := range counted {
		if matches(&n, name, rev, f.State, catalog) {
			v.Nodes = append(v.Nodes, n)
		}
	}
	return v
}

// matches reports whether n has a revision of name (and rev) in state.
func matches(n *Node, name string, rev uint64, state string, catalog []Catalog) bool {
	if name == "" && state == "" {
		return true
	}
	switch state {
	case StateStale:
		if !n.Stale {
			return false
		}
		state = ""
	case StateNotReporting:
		if n.Stale || n.Role != "subscriber" {
			return false
		}
		for _, c := range catalog {
			if (name == "" || c.Name == name && (rev == 0 || c.Revision == rev)) && notReporting(n, &c) {
				return true
			}
		}
		return false
	}
	if name == "" && state == "" {
		return true
	}
	for _, d := range n.Distributions {
		if (name == "" || d.Name == name && (rev == 0 || d.Revision == rev)) && (state == "" || d.State == state) {
			return true
		}
	}
	return false
}

// notReporting reports whether subscriber n should have c (it takes one of
// its channels) but reports nothing of it or of a later revision.
func notReporting(n *Node, c *Catalog) bool {
	if !slices.ContainsFunc(c.Channels, func(ch string) bool { return slices.Contains(n.Channels, ch) }) {
		return false
	}
	for _, d := range n.Distributions {
		if d.Name == c.Name && d.Revision >= c.Revision {
			return false
		}
	}
	return true
}

// rollouts counts the subscribers among nodes per revision they report,
// and per revision of the catalog, narrowed to name (and rev).
func rollouts(nodes []Node, catalog []Catalog, name string, rev uint64) []Rollout {
	byKey := map[revKey]*Rollout{}
	get := func(n string, r uint64, version string) *Rollout {
		k := revKey{n, r}
		ro := byKey[k]
		if ro == nil {
			ro = &Rollout{Name: n, Revision: r, Version: version, Counts: map[string]int{}}
			byKey[k] = ro
		}
		return ro
	}
	want := func(n string, r uint64) bool { return name == "" || n == name && (rev == 0 || r == rev) }
	for _, c := range catalog {
		if want(c.Name, c.Revision) {
			get(c.Name, c.Revision, c.Version)
		}
	}
	for i := range nodes {
		n := &nodes[i]
		if n.Role != "subscriber" {
			continue
		}
		for _, d := range n.Distributions {
			if !want(d.Name, d.Revision) {
				continue
			}
			ro := get(d.Name, d.Revision, d.Version)
			ro.Subscribers++
			if n.Stale {
				ro.Counts[StateStale]++
				continue
			}
			ro.Counts[d.State]++
			switch d.State {
			case "blocked":
				ro.Blocked = addTo(ro.Blocked, d.Reason)
			case "failed":
				ro.Failed = addTo(ro.Failed, d.Error)
			case "receiving":
				ro.Chunks += int64(d.Chunks)
				ro.HaveChunks += int64(d.HaveChunks)
			}
		}
		for _, c := range catalog {
			if want(c.Name, c.Revision) && notReporting(n, &c) {
				ro := byKey[revKey{c.Name, c.Revision}]
				ro.Subscribers++
				if n.Stale {
					ro.Counts[StateStale]++
				} else {
					ro.Counts[StateNotReporting]++
				}
			}
		}
	}
	out := make([]Rollout, 0, len(byKey))
	for _, ro := range byKey {
		if name == "" && ro.Subscribers > 0 && ro.Counts["superseded"] == ro.Subscribers {
			// History, not a rollout: every subscriber has moved on.
			continue
		}
		out = append(out, *ro)
	}
	slices.SortFunc(out, func(a, b Rollout) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(b.Revision, a.Revision))
	})
	return out
}

func addTo(m map[string]int, key string) map[string]int {
	if m == nil {
		m = map[string]int{}
	}
	if key == "" {
		key = "(no reason given)"
	}
	m[key]++
	return m
}

// FromState is a node's own record as a Node, for the root of a view and
// for a subscriber's view of itself.
func FromState(n *transport.NodeState, now time.Time) Node {
	out := Node{Name: n.Name, Parent: n.Parent, Role: n.Role, ActiveNode: n.ActiveNode, Agent: n.Agent, Channels: n.Channels,
		Connected: true, LastSeen: now, Problem: n.Problem, Distributions: make([]Dist, 0, len(n.Revisions))}
	for _, r := range n.Revisions {
		out.Distributions = append(out.Distributions, Dist{Name: r.Name, Revision: r.Revision, Version: r.Version, State: r.State,
			Reason: r.Reason, Error: r.Error, Chunks: r.Chunks, HaveChunks: r.HaveChunks})
	}
	return out
}
