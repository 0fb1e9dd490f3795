package distributor

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ted/store"
	"ted/transport"
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
	// ParentError says, while no parent is connected, why: each parent's
	// last failure since the last connection.
	ParentError string `json:"parent_error,omitempty"`
	// Certificate is this node's own certificate, if known.
	Certificate *transport.CertificateStatus `json:"certificate,omitempty"`
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
	if d.cfg.Self != nil {
		st.Certificate = transport.NewCertificateStatus(d.cfg.Self(), time.Now())
	}
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
	st.Parent = d.parent
	if st.Parent == "" {
		st.ParentError = d.cfg.Parents.Watch.State().Problem
	}
	for _, in := range d.incoming {
		files, bytes, _ := in.m.Totals()
		st.Incoming = append(st.Incoming, HeldRevision{Name: in.m.Name, Revision: in.m.Revision, Version: in.m.Version, Channels: in.m.Channels, Files: files, Bytes: bytes, From: in.from})
	}
	// Only the copy is made under d.mu, which every child's session
	// takes: with 10,000 children, sorting them there would hold up
	// their offers and reports. A child's Revisions is replaced whole by
	// its next report, never changed in place, so the copy may share it.
	st.Children = make([]ChildStatus, 0, len(d.seen))
	for name, c := range d.seen {
		cs := *c
		_, cs.Connected = d.children[name]
		st.Children = append(st.Children, cs)
	}
	d.mu.Unlock()
	slices.SortFunc(st.Incoming, func(a, b HeldRevision) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(st.Children, func(a, b ChildStatus) int { return strings.Compare(a.Name, b.Name) })
	return st
}

// Registry is the distributor's Prometheus registry, for /metrics.
func (d *Distributor) Registry() *prometheus.Registry { return d.metrics.registry }

// Health is nil while the distributor can do its job; otherwise the
// reason, in one line: its store does not answer; a lower tier has no
// parent that takes it (every parent tried since the start, or since the
// last session ended, refused it or did not answer: Parents.Watch); the
// free space of data_dir is below min_free_disk. A first tier is healthy
// while its store answers and it has disk.
func (d *Distributor) Health() error {
	if _, err := d.store.Distributions(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if len(d.cfg.Parents.Addrs) > 0 {
		// Connected once a parent accepted the hello (the watch's Addr),
		// not when the dial succeeded.
		if st := d.cfg.Parents.Watch.State(); st.Addr == "" && st.Settled {
			return errors.New(st.Problem)
		}
	}
	if floor := d.cfg.MinFreeDisk; floor > 0 && d.cfg.DataDir != "" {
		free, err := store.FreeBytes(d.cfg.DataDir)
		if err != nil {
			return err
		}
		if free < floor {
			return fmt.Errorf("short of disk: %d bytes free in %s, below min_free_disk %d; nothing more is received", free, d.cfg.DataDir, floor)
		}
	}
	return nil
}
