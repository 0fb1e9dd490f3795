package distributor

import (
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Status is what `ted distributor status` and /api/status show.
type Status struct {
	Node string `json:"node"`
	Role string `json:"role"`
	// Parent is the address of the parent connected now; "" for a first
	// tier, or while no parent is reachable (ParentsConfigured says which).
	Parent            string         `json:"parent"`
	ParentsConfigured []string       `json:"parents_configured,omitempty"`
	Started           time.Time      `json:"started"`
	Distributions     []HeldRevision `json:"distributions"`
	Incoming          []HeldRevision `json:"incoming"`
	Children          []ChildStatus  `json:"children"`
	Error             string         `json:"error,omitempty"`
}

// HeldRevision is a revision stored here or being received.
type HeldRevision struct {
	Name     string   `json:"name"`
	Revision uint64   `json:"revision"`
	Version  string   `json:"version"`
	Channels []string `json:"channels"`
	Files    int      `json:"files"`
	Bytes    int64    `json:"bytes"`
	From     string   `json:"from,omitempty"`
}

// Status reports the distributor's state.
func (d *Distributor) Status() Status {
	st := Status{Node: d.cfg.Name, Role: "distributor", ParentsConfigured: d.cfg.Parents.Addrs, Started: d.started,
		Distributions: []HeldRevision{}, Incoming: []HeldRevision{}, Children: []ChildStatus{}}
	names, err := d.store.Distributions()
	if err != nil {
		st.Error = err.Error()
	}
	for _, name := range names {
		revs, err := d.store.Revisions(name)
		if err != nil {
			st.Error = err.Error()
			continue
		}
		for _, r := range revs {
			st.Distributions = append(st.Distributions, HeldRevision{Name: r.Name, Revision: r.Revision, Version: r.Version, Channels: r.Channels, Files: r.Files, Bytes: r.Bytes})
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st.Parent = d.parent
	for _, in := range d.incoming {
		files, bytes, _ := in.m.Totals()
		st.Incoming = append(st.Incoming, HeldRevision{Name: in.m.Name, Revision: in.m.Revision, Version: in.m.Version, Channels: in.m.Channels, Files: files, Bytes: bytes, From: in.from})
	}
	slices.SortFunc(st.Incoming, func(a, b HeldRevision) int { return strings.Compare(a.Name, b.Name) })
	for _, name := range sortedNames(d.seen) {
		c := *d.seen[name]
		_, c.Connected = d.children[name]
		c.Revisions = slices.Clone(c.Revisions)
		st.Children = append(st.Children, c)
	}
	return st
}

// Registry is the distributor's Prometheus registry, for /metrics.
func (d *Distributor) Registry() *prometheus.Registry { return d.metrics.registry }

// Health is nil while the store answers.
func (d *Distributor) Health() error {
	_, err := d.store.Distributions()
	return err
}
