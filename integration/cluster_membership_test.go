//go:build linux

package integration

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestClusterMembership: the distributor's clusters section says which
// certificates may act for a cluster. A node whose certificate is not a
// member stays standby and says why; two nodes of one cluster with
// different certificates share one lease, and the distributor shows the
// cluster as one child whichever of them is active.
func TestClusterMembership(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		// web-01x is listed itself, but is no member of web-solo.
		"web": {publishers: []string{"pub-1"}, children: []string{"web-pair", "web-solo", "web-01x"}},
	}, clusters: map[string][]string{"web-pair": {"web-01a", "web-01b"}, "web-solo": {"web-01s"}}})
	solo := nw.clusterWithCerts("web-solo", []string{"s-a"}, []string{"web-01x"}, dist1)
	pair := nw.clusterWithCerts("web-pair", []string{"p-a", "p-b"}, []string{"web-01a", "web-01b"}, dist1)

	refusal := "certificate web-01x is not a member of cluster web-solo on dist-1 (clusters.web-solo.members)"
	var problem string
	waitFor(t, "s-a standby, naming the refusal", func() (bool, string) {
		st, err := solo.nodes[0].subscriberStatus()
		if err != nil {
			return false, err.Error()
		}
		problem = st.Problem
		return st.Role == "standby" && strings.Contains(st.Problem, "the lease authority refused this node: not authorised: "+refusal), fmt.Sprintf("%s %q", st.Role, st.Problem)
	})
	t.Logf("s-a: %s", problem)
	t.Logf("distributor: %s", dist1.waitLog("peer refused", "peer=web-01x", "cluster=web-solo", refusal))

	if a := pair.active(t); a != pair.nodes[0] {
		t.Errorf("%s active, want p-a (lowest priority)", a.name)
	}
	// One lease for the pair, however long one looks; none for s-a.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); <-tick.C {
		pair.neverTwo(t)
		if st, err := solo.nodes[0].subscriberStatus(); err == nil && st.Role != "standby" {
			t.Fatalf("s-a is %s with a certificate not a member of its cluster", st.Role)
		}
	}
	oneChild := func(node, cert string) func(distributorStatus) bool {
		return func(st distributorStatus) bool {
			c, ok := st.child("web-pair")
			_, a := st.child("web-01a")
			_, b := st.child("web-01b")
			return ok && c.Connected && c.ActiveNode == node && c.Certificate == cert && !a && !b
		}
	}
	dist1.waitDistributor("web-pair as one child, p-a active with web-01a", oneChild("p-a", "web-01a"))
	nw.build("1.0.0")
	nw.publish("app", dist1)
	pair.nodes[0].waitState(1, "extracted")

	// p-a dies: p-b, with the other certificate, takes the lease over.
	pair.nodes[0].kill()
	waitFor(t, "p-b active", func() (bool, string) {
		pair.neverTwo(t)
		st, err := pair.nodes[1].subscriberStatus()
		if err != nil {
			return false, err.Error()
		}
		return st.Role == "active", st.Role
	})
	dist1.waitDistributor("web-pair as one child, p-b active with web-01b", oneChild("p-b", "web-01b"))
}

var epochRE = regexp.MustCompile(`epoch=(\d+)`)

// epochOf is the epoch a log line names.
func epochOf(t *testing.T, line string) string {
	t.Helper()
	m := epochRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no epoch in %q", line)
	}
	return m[1]
}

// TestClusterParentRestart: the distributor keeps its lease table in its
// data directory, so when it restarts the active node renews its lease at
// once under the same epoch and stays active; the other node is not
// granted it.
func TestClusterParentRestart(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-pair"}},
	}, clusters: map[string][]string{"web-pair": {"web-01a", "web-01b"}}})
	pair := nw.clusterWithCerts("web-pair", []string{"p-a", "p-b"}, []string{"web-01a", "web-01b"}, dist1)
	if a := pair.active(t); a != pair.nodes[0] {
		t.Fatalf("%s active, want p-a", a.name)
	}
	before := epochOf(t, dist1.waitLog("cluster lease granted", "cluster=web-pair", "cluster_node=p-a"))

	dist1.stop()
	restarted := time.Now()
	dist1.start()
	dist1.waitLog("cluster lease kept from before the start", "cluster=web-pair", "cluster_node=p-a")
	after := epochOf(t, dist1.waitLog("cluster lease granted", "cluster=web-pair", "cluster_node=p-a"))
	if after != before {
		t.Errorf("p-a renewed under epoch %s after the restart, want %s", after, before)
	}
	t.Logf("p-a renewed its lease %v after the distributor started again", time.Since(restarted).Round(100*time.Millisecond))
	if a := pair.active(t); a != pair.nodes[0] {
		t.Errorf("%s active after the restart, want p-a", a.name)
	}
	dist1.waitDistributor("web-pair connected again with p-a", func(st distributorStatus) bool {
		c, ok := st.child("web-pair")
		return ok && c.Connected && c.ActiveNode == "p-a"
	})
	if line := dist1.logLine("cluster lease granted", "cluster_node=p-b"); line != "" {
		t.Errorf("p-b granted the lease after the restart: %s", line)
	}
}
