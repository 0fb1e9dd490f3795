package subscriber

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ted/store"
	"ted/transport"
)

// Status is what `ted subscriber status` and /api/status show.
type Status struct {
	Node string `json:"node"`
	// Role is active, standby or single (no cluster).
	Role       string `json:"role"`
	ActiveNode string `json:"active_node"`
	// Problem says why a cluster node cannot be active now, if it cannot.
	Problem string `json:"problem,omitempty"`
	// Agent is the ted version this node runs.
	Agent string `json:"agent,omitempty"`
	// Parent is the address of the parent connected now, "" while none is.
	Parent string `json:"parent"`
	// ParentError says, while no parent is connected, why: each parent's
	// last failure since the last connection (its refusal, in its words,
	// or why it did not answer).
	ParentError   string               `json:"parent_error,omitempty"`
	Started       time.Time            `json:"started"`
	Distributions []DistributionStatus `json:"distributions"`
	// Certificate is this node's own certificate, if known.
	Certificate *transport.CertificateStatus `json:"certificate,omitempty"`
}

// DistributionStatus lists the known revisions of one distribution, oldest
// first.
type DistributionStatus struct {
	Name      string                    `json:"name"`
	Revisions []transport.RevisionState `json:"revisions"`
}

// Status reports the subscriber's state.
func (s *Subscriber) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Node: s.cfg.Name, Role: "single", ActiveNode: s.cfg.Name, Agent: s.cfg.Agent, Parent: s.parent, Started: s.started, Distributions: []DistributionStatus{}}
	if st.Parent == "" {
		st.ParentError = s.cfg.Parents.Watch.State().Problem
	}
	if s.cfg.Node != "" {
		st.Node, st.Role, st.ActiveNode = s.cfg.Node, "active", s.cfg.Node
	}
	if s.cfg.Self != nil {
		id := s.cfg.Self()
		st.Certificate = transport.NewCertificateStatus(id, time.Now())
	}
	for name, revs := range s.states {
		d := DistributionStatus{Name: name}
		for _, r := range revs {
			d.Revisions = append(d.Revisions, *r)
		}
		slices.SortFunc(d.Revisions, func(a, b transport.RevisionState) int { return cmp.Compare(a.Revision, b.Revision) })
		st.Distributions = append(st.Distributions, d)
	}
	slices.SortFunc(st.Distributions, func(a, b DistributionStatus) int { return cmp.Compare(a.Name, b.Name) })
	return st
}

// Registry is the subscriber's Prometheus registry, for /metrics.
func (s *Subscriber) Registry() *prometheus.Registry { return s.metrics.registry }

// Health is nil while the subscriber can do its job; otherwise the reason,
// in one line:
//
//   - its store does not answer;
//   - no parent takes it: every parent was tried since the start (or since
//     the last session ended) and each refused it or did not answer (during
//     the first round of dials, and while it reconnects, it is healthy);
//   - the free space of data_dir is below min_free_disk.
func (s *Subscriber) Health() error {
	if _, err := s.store.Distributions(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	// Connected once a parent accepted the hello (the watch's Addr), not
	// when the dial succeeded: a parent that refuses at the hello must not
	// look like a working one meanwhile.
	if st := s.cfg.Parents.Watch.State(); st.Addr == "" && st.Settled {
		return errors.New(st.Problem)
	}
	return belowFloor(s.cfg.DataDir, s.cfg.MinFreeDisk)
}

// belowFloor is an error while the free space of dir's file system is
// below floor (0: no floor).
func belowFloor(dir string, floor int64) error {
	if floor <= 0 || dir == "" {
		return nil
	}
	free, err := store.FreeBytes(dir)
	if err != nil {
		return err
	}
	if free < floor {
		return fmt.Errorf("short of disk: %d bytes free in %s, below min_free_disk %d; nothing more is received", free, dir, floor)
	}
	return nil
}
