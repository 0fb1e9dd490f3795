//go:build linux

package integration

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// aCluster is the nodes of one cluster subscriber.
type aCluster struct {
	name   string // the cluster's name
	nodes  []*node
	shared string // the shared directory (store, journal)
	root   string // the target root, on the shared directory too
}

// cluster configures and starts a cluster subscriber of len(nodes) nodes,
// priorities 10, 20, … in that order, under parent, every node with one
// certificate named after the cluster: parent's distributorSpec.clusters
// must list it as name: [name].
func (nw *network) cluster(name string, nodes []string, parent *node) *aCluster {
	nw.t.Helper()
	certs := make([]string, len(nodes))
	for i := range certs {
		certs[i] = name
	}
	return nw.clusterWithCerts(name, nodes, certs, parent)
}

// clusterWithCerts is cluster with a certificate for each node: certs[i]
// is nodes[i]'s.
func (nw *network) clusterWithCerts(name string, nodes, certs []string, parent *node) *aCluster {
	nw.t.Helper()
	return nw.clusterWithExtra(name, nodes, certs, parent, nil)
}

// clusterWithExtra is clusterWithCerts with more keys in every node's
// config.
func (nw *network) clusterWithExtra(name string, nodes, certs []string, parent *node, extra map[string]any) *aCluster {
	nw.t.Helper()
	for _, cert := range certs {
		nw.issue(cert, "subscriber")
	}
	c := &aCluster{name: name, shared: filepath.Join(nw.dir, "shared", name)}
	c.root = filepath.Join(c.shared, "root")
	if err := os.MkdirAll(c.shared, 0o755); err != nil {
		nw.t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	writeFile(nw.t, filepath.Join(nw.dir, name+".key"), []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	binds := make([]string, len(nodes))
	for i := range nodes {
		binds[i] = freePort(nw.t, "tcp")
	}
	for i, nodeName := range nodes {
		var join []string
		for j, b := range binds {
			if j != i {
				join = append(join, b)
			}
		}
		values := map[string]any{
			"name":     certs[i],
			"parents":  []string{parent.addr},
			"data_dir": "./var/" + nodeName,
			"tls":      map[string]string{"ca": "pki/ca.crt", "cert": "pki/" + certs[i] + ".crt", "key": "pki/" + certs[i] + ".key"},
			"channels": []string{"web"},
			"trust":    nw.relTrust(nil),
			"root":     "./shared/" + name + "/root",
			"cluster": map[string]any{
				"name": name, "node": nodeName, "bind": binds[i], "join": join, "priority": 10 * (i + 1),
				"secret_file": name + ".key", "shared_dir": "./shared/" + name,
			},
		}
		maps.Copy(values, extra)
		n := nw.newNode(nodeName, "subscriber", values)
		n.root, n.target = c.root, filepath.Join(c.root, "app")
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		n.startFresh()
	}
	return c
}

// active waits until exactly one running node says it is active and every
// running node names it, and returns it.
func (c *aCluster) active(t *testing.T) *node {
	t.Helper()
	var got *node
	waitFor(t, c.name+" to agree on one active node", func() (bool, string) {
		got = nil
		var roles []string
		agreed := true
		var activeName string
		for _, n := range c.nodes {
			if !n.running() {
				continue
			}
			st, err := n.subscriberStatus()
			if err != nil {
				return false, err.Error()
			}
			roles = append(roles, fmt.Sprintf("%s=%s(active %s)", n.name, st.Role, st.ActiveNode))
			if st.Role == "active" {
				if got != nil {
					t.Fatalf("two active nodes in %s: %s and %s", c.name, got.name, n.name)
				}
				got = n
			}
			if activeName == "" {
				activeName = st.ActiveNode
			}
			agreed = agreed && st.ActiveNode == activeName
		}
		return got != nil && agreed && activeName == got.name, strings.Join(roles, " ")
	})
	return got
}

// neverTwo checks, once, that at most one running node is active.
func (c *aCluster) neverTwo(t *testing.T) {
	t.Helper()
	var active []string
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		if st, err := n.subscriberStatus(); err == nil && st.Role == "active" {
			active = append(active, n.name)
		}
	}
	if len(active) > 1 {
		t.Fatalf("two active nodes in %s: %v", c.name, active)
	}
}

// extractions counts the "extracted and verified" lines for app@rev in
// every node's log: the cluster extracts each revision once.
func (c *aCluster) extractions(rev uint64) int {
	count := 0
	for _, n := range c.nodes {
		for line := range strings.SplitSeq(n.log(), "\n") {
			if strings.Contains(line, "extracted and verified") && strings.Contains(line, "dist=app") && strings.Contains(line, fmt.Sprintf("rev=%d ", rev)) {
				count++
			}
		}
	}
	return count
}

// waitReceiving waits until n is receiving app@rev with some chunks in.
func (n *node) waitReceiving(rev uint64) {
	n.nw.t.Helper()
	waitFor(n.nw.t, n.name+" in the middle of receiving app@"+fmt.Sprint(rev), func() (bool, string) {
		st, err := n.subscriberStatus()
		if err != nil {
			return false, err.Error()
		}
		r, _ := st.revision(rev)
		return r.State == "receiving" && r.HaveChunks > 0 && r.HaveChunks < r.Chunks, fmt.Sprintf("%+v", r)
	})
}

// TestClusterFailover runs a 2-node and a 3-node cluster under one
// distributor: exactly one node of each is active; killing the active node
// (kill -9) in the middle of a transfer, a standby takes over, completes
// the transfer and extracts the revision once into the shared root; a
// handover asked on purpose moves the active role under load.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	// 4 MiB/s: a transfer of 24 MiB lasts long enough to kill in.
	nw.writeSchedules("slow.yaml", "schedules:\n  slow:\n    always: true\n    max_rate: 4MiB/s\n")
	dist1 := nw.distributor("dist-1", distributorSpec{schedules: "slow.yaml", channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-c2", "web-c3"}, send: "slow"},
	}, clusters: map[string][]string{"web-c2": {"web-c2"}, "web-c3": {"web-c3"}}})
	c2 := nw.cluster("web-c2", []string{"c2-a", "c2-b"}, dist1)
	c3 := nw.cluster("web-c3", []string{"c3-a", "c3-b", "c3-c"}, dist1)
	for _, c := range []*aCluster{c2, c3} {
		if a := c.active(t); a != c.nodes[0] {
			t.Errorf("%s: %s is active, want %s (lowest priority)", c.name, a.name, c.nodes[0].name)
		}
	}
	// The distributor shows each cluster as one child with its active node.
	dist1.waitDistributor("both clusters as children with their active nodes", func(st distributorStatus) bool {
		a, ok2 := st.child("web-c2")
		b, ok3 := st.child("web-c3")
		return ok2 && ok3 && a.ActiveNode == "c2-a" && b.ActiveNode == "c3-a"
	})

	for _, active := range []*node{c2.nodes[0], c3.nodes[0]} {
		dist1.waitLog("child connected", "cluster_node="+active.name)
	}
	// A standby never dials the parent for content: only the active
	// nodes have content sessions.
	for _, standby := range []*node{c2.nodes[1], c3.nodes[1], c3.nodes[2]} {
		if line := dist1.logLine("child connected", "cluster_node="+standby.name); line != "" {
			t.Errorf("standby %s has a content session: %s", standby.name, line)
		}
	}

	writeFile(t, filepath.Join(nw.src, "bin/server"), randomBytes(24<<20), 0o755)
	nw.build("1.0.0")
	src1 := filepath.Join(nw.dir, "site-1")
	copyTree(t, nw.src, src1)
	nw.publish("app", dist1)
	// Both clusters in the middle of the transfer, then both active nodes
	// killed.
	olds := map[*aCluster]*node{}
	for _, c := range []*aCluster{c2, c3} {
		olds[c] = c.active(t)
	}
	for _, c := range []*aCluster{c2, c3} {
		olds[c].waitReceiving(1)
	}
	killed := time.Now()
	for _, c := range []*aCluster{c2, c3} {
		olds[c].kill()
	}
	// The failover time of each (the budget is 15 s; a benchmark's
	// business, not this test's, so it is logged, not asserted).
	took := map[*aCluster]time.Duration{}
	waitFor(t, "a standby of each cluster active", func() (bool, string) {
		for _, c := range []*aCluster{c2, c3} {
			c.neverTwo(t)
			if _, done := took[c]; done {
				continue
			}
			for _, n := range c.nodes {
				if st, err := n.subscriberStatus(); n.running() && err == nil && st.Role == "active" {
					took[c] = time.Since(killed)
				}
			}
		}
		return len(took) == 2, fmt.Sprint(took)
	})
	for _, c := range []*aCluster{c2, c3} {
		old := olds[c]
		next := c.active(t)
		t.Logf("%s: %s active %v after %s was killed", c.name, next.name, took[c].Round(100*time.Millisecond), old.name)
		c.neverTwo(t)
		next.waitState(1, "extracted")
		requireTree(t, filepath.Join(c.root, "app"), src1)
		if n := c.extractions(1); n != 1 {
			t.Errorf("%s extracted app@1 %d times, want once", c.name, n)
		}
		// Back with the lowest priority, it joins as a standby: the role
		// does not move back by itself (each move would stop an
		// extraction), only by a handover.
		old.start()
		waitFor(t, old.name+" back as a standby naming "+next.name, func() (bool, string) {
			c.neverTwo(t)
			st, err := old.subscriberStatus()
			if err != nil {
				return false, err.Error()
			}
			return st.Role == "standby" && st.ActiveNode == next.name, st.Role + " " + st.ActiveNode
		})
		if a := c.active(t); a != next {
			t.Errorf("%s: %s active after %s came back, want %s still", c.name, a.name, old.name, next.name)
		}
	}

	// A handover on purpose, under load: rev 2 is on its way.
	changeTree(t, nw.src)
	writeFile(t, filepath.Join(nw.src, "bin/server"), randomBytes(24<<20), 0o755)
	nw.build("2.0.0")
	src2 := filepath.Join(nw.dir, "site-2")
	copyTree(t, nw.src, src2)
	nw.publish("app", dist1)
	from := c3.active(t)
	from.waitReceiving(2)
	to := c3.nodes[2]
	if to == from {
		to = c3.nodes[1]
	}
	mustTed(t, "subscriber", "cluster", "handover", "--config", from.config, "--to", to.name)
	waitFor(t, to.name+" active after the handover", func() (bool, string) {
		st, err := to.subscriberStatus()
		if err != nil {
			return false, err.Error()
		}
		c3.neverTwo(t)
		return st.Role == "active", fmt.Sprintf("%+v", st.Role)
	})
	to.waitState(2, "extracted")
	requireTree(t, filepath.Join(c3.root, "app"), src2)
	if n := c3.extractions(2); n != 1 {
		t.Errorf("web-c3 extracted app@2 %d times, want once", n)
	}
	c2.active(t).waitState(2, "extracted")
	requireTree(t, filepath.Join(c2.root, "app"), src2)
}

// TestClusterBadInput: a missing or bad cluster key is one error naming the
// field (exit 2); a node whose shared_dir is unreachable runs as a standby
// saying why, and becomes active once the directory is there.
func TestClusterBadInput(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-c1"}},
	}, clusters: map[string][]string{"web-c1": {"web-c1"}}})
	c := nw.cluster("web-c1", []string{"c1-a"}, dist1)
	n := c.nodes[0]
	n.stop()

	// The directory the cluster's data disk would be, gone.
	if err := os.RemoveAll(c.shared); err != nil {
		t.Fatal(err)
	}
	cl := n.values["cluster"].(map[string]any)
	for _, tt := range []struct{ key, want string }{
		{"", "cluster.secret_file: missing"},
		{"nope.key", "no such file"},
		{"short.key", "a key of 5 bytes, want 16, 24 or 32"},
	} {
		writeFile(t, filepath.Join(nw.dir, "short.key"), []byte("aGVsbG8=\n"), 0o600)
		cl["secret_file"] = tt.key
		n.writeConfig()
		r := ted(t, "subscriber", "run", "--config", n.config)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("secret_file %q: %s; want exit 2 with %q", tt.key, r, tt.want)
		}
	}
	cl["secret_file"] = "web-c1.key"
	n.startFresh()
	waitFor(t, "c1-a standby, saying shared_dir is missing", func() (bool, string) {
		st, err := n.subscriberStatus()
		if err != nil {
			return false, err.Error()
		}
		return st.Role == "standby" && strings.Contains(st.Problem, "shared_dir"), fmt.Sprintf("%s %q", st.Role, st.Problem)
	})
	if err := os.MkdirAll(c.shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if a := c.active(t); a != n {
		t.Errorf("%s active, want c1-a", a.name)
	}
}
