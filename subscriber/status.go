package subscriber

import (
	"cmp"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
	// Parent is the address of the parent connected now, "" while none is.
	Parent        string               `json:"parent"`
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
	st := Status{Node: s.cfg.Name, Role: "single", ActiveNode: s.cfg.Name, Parent: s.parent, Started: s.started, Distributions: []DistributionStatus{}}
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

// Health is nil while the store answers.
func (s *Subscriber) Health() error {
	_, err := s.store.Distributions()
	return err
}
