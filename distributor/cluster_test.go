package distributor_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ted/distributor"
	"ted/pki"
	"ted/transport"
)

// The certificates of the cluster tests: web-01a and web-01b are the
// members of web-cluster; web-01x is listed as a plain child of web, a
// member of no cluster.
var (
	web01a = transport.Identity{Name: "web-01a", Role: pki.RoleSubscriber}
	web01b = transport.Identity{Name: "web-01b", Role: pki.RoleSubscriber}
	web01x = transport.Identity{Name: "web-01x", Role: pki.RoleSubscriber}
)

// clusterTTL is short, so the grace after a start passes quickly.
const clusterTTL = 300 * time.Millisecond

func clusterConfig() distributor.Config {
	cfg := testConfig()
	cfg.LeaseTTL = clusterTTL
	web := cfg.Channels["web"]
	web.Children = append(web.Children, "web-cluster", web01x.Name)
	cfg.Channels["web"] = web
	cfg.Clusters = map[string]distributor.Cluster{"web-cluster": {Members: []string{web01a.Name, web01b.Name}}}
	return cfg
}

// logBuffer keeps what a distributor logs, and shows it in the test's
// output too.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out io.Writer
}

func newLogBuffer(t *testing.T) *logBuffer { return &logBuffer{out: t.Output()} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.buf.Write(p)
	b.mu.Unlock()
	return b.out.Write(p)
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// line returns the first line holding every one of parts, or "".
func (b *logBuffer) line(parts ...string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for line := range strings.SplitSeq(b.buf.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return line
		}
	}
	return ""
}

// clusterNode is one node of a cluster subscriber as its parent sees it:
// a lease session and, while it holds the lease, a content session.
type clusterNode struct {
	n     *node
	id    transport.Identity
	hello transport.Hello
}

func (n *node) clusterNode(id transport.Identity, cluster, name string, channels ...string) *clusterNode {
	if channels == nil {
		channels = []string{"web"}
	}
	return &clusterNode{n: n, id: id, hello: transport.Hello{Name: id.Name, Agent: "test", Channels: channels,
		Cluster: cluster, Node: name, Instance: name + "-1"}}
}

// leaseSession opens a lease session (epoch 0), as subscriber/cluster's
// lease client does; the error is the refusal.
func (c *clusterNode) leaseSession() (*leaseSession, error) {
	sess, err := c.n.connect(c.id)
	if err != nil {
		return nil, err
	}
	hello := c.hello
	control, _, err := transport.ClientHello(c.n.t.Context(), sess, &hello)
	if err != nil {
		return nil, err
	}
	return &leaseSession{t: c.n.t, control: control}, nil
}

func (c *clusterNode) mustLeaseSession() *leaseSession {
	c.n.t.Helper()
	l, err := c.leaseSession()
	if err != nil {
		c.n.t.Fatal(err)
	}
	return l
}

// content opens a content session under epoch; the error is the refusal.
func (c *clusterNode) content(epoch uint64) (*childSession, error) {
	sess, err := c.n.connect(c.id)
	if err != nil {
		return nil, err
	}
	hello := c.hello
	hello.Epoch = epoch
	control, _, err := transport.ClientHello(c.n.t.Context(), sess, &hello)
	if err != nil {
		return nil, err
	}
	return &childSession{t: c.n.t, sess: sess, control: control}, nil
}

type leaseSession struct {
	t       *testing.T
	control *transport.Conn
}

// ask sends one lease request and returns the answer.
func (l *leaseSession) ask(release bool) *transport.Lease {
	l.t.Helper()
	if err := l.control.Send(&transport.LeaseRequest{Release: release}); err != nil {
		l.t.Fatal(err)
	}
	answer, ok := receive(l.t, l.control).(*transport.Lease)
	if !ok {
		l.t.Fatal("the answer to a lease request is not a lease")
	}
	return answer
}

// acquire asks until the lease is granted (the grace after a start ends
// within clusterTTL).
func (l *leaseSession) acquire() *transport.Lease {
	l.t.Helper()
	var answer *transport.Lease
	waitFor(l.t, "the lease granted", func() bool {
		answer = l.ask(false)
		return answer.Granted
	})
	return answer
}

func TestValidateClusters(t *testing.T) {
	members := func(names ...string) distributor.Cluster { return distributor.Cluster{Members: names} }
	for _, tc := range []struct {
		name     string
		clusters map[string]distributor.Cluster
		want     string // "": valid
	}{
		{"none", nil, ""},
		{"two clusters", map[string]distributor.Cluster{"web-cluster": members("web-01a", "web-01b"), "db-cluster": members("db-01a")}, ""},
		// One certificate for every node, named after the cluster.
		{"named after its member", map[string]distributor.Cluster{"web-c2": members("web-c2")}, ""},
		{"no members", map[string]distributor.Cluster{"web-cluster": {}}, "clusters.web-cluster.members: none"},
		{"bad cluster name", map[string]distributor.Cluster{"web cluster": members("web-01a")}, `clusters: cluster "web cluster": use ASCII letters`},
		{"bad member", map[string]distributor.Cluster{"web-cluster": members("web 01a")}, `clusters.web-cluster.members: invalid node name "web 01a"`},
		{"the CA's name", map[string]distributor.Cluster{"web-cluster": members("ca")}, `clusters.web-cluster.members: invalid node name "ca"`},
		{"member twice", map[string]distributor.Cluster{"web-cluster": members("web-01a", "web-01b", "web-01a")}, "clusters.web-cluster.members: web-01a is listed twice"},
		{"member of two clusters", map[string]distributor.Cluster{"web-cluster": members("web-01a"), "db-cluster": members("db-01a", "web-01a")},
			"clusters.web-cluster.members: web-01a is also a member of cluster db-cluster; a certificate may be a member of one cluster only, or it could act for either"},
		{"named after another's member", map[string]distributor.Cluster{"web-cluster": members("web-01a"), "web-01a": members("web-01b")},
			"clusters.web-01a: also the name of a member certificate of cluster web-cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Clusters = tc.clusters
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.want == "":
			case err == nil:
				t.Errorf("Validate: nil, want %q", tc.want)
			case !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n"):
				t.Errorf("Validate: %q, want one line with %q", err, tc.want)
			}
		})
	}
}

func TestClusterAccept(t *testing.T) {
	cfg := clusterConfig()
	cfg.Clusters["db-cluster"] = distributor.Cluster{Members: []string{"db-01a"}} // listed in no channel
	d, err := distributor.New(cfg, memStore(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id transport.Identity
		ok bool
	}{
		{web01a, true}, // through web-cluster
		{web01b, true},
		{web01x, true}, // listed itself
		{transport.Identity{Name: "db-01a", Role: pki.RoleSubscriber}, false},
		{transport.Identity{Name: "web-cluster", Role: pki.RoleSubscriber}, true}, // a name in children, refused at hello (below)
	} {
		if err := d.Accept(tc.id); (err == nil) != tc.ok {
			t.Errorf("Accept(%s): %v, want accepted %v", tc.id, err, tc.ok)
		}
	}
}

// TestClusterMembershipRefused checks each refusal of a node that is not
// what the clusters section says, as the node sees it and as the
// distributor logs it: one line naming the certificate, the cluster and
// where to fix it.
func TestClusterMembershipRefused(t *testing.T) {
	log := newLogBuffer(t)
	n := startDistributorLog(t, clusterConfig(), nil, log.logger())
	for _, tc := range []struct {
		name    string
		node    *clusterNode
		epoch   uint64 // 0: a lease session
		cluster string // the log line's cluster attribute, if any
		want    string
	}{
		{"lease session of a non-member", n.clusterNode(web01x, "web-cluster", "node-x"), 0, "web-cluster",
			"certificate web-01x is not a member of cluster web-cluster on dist-1 (clusters.web-cluster.members)"},
		{"content session of a non-member", n.clusterNode(web01x, "web-cluster", "node-x"), 7, "web-cluster",
			"certificate web-01x is not a member of cluster web-cluster on dist-1 (clusters.web-cluster.members)"},
		{"unknown cluster", n.clusterNode(web01a, "db-cluster", "node-a"), 0, "db-cluster",
			"cluster db-cluster is not configured on dist-1 (add it under clusters: with its member certificates)"},
		{"a member not as a node", n.clusterNode(web01a, "", ""), 0, "",
			"certificate web-01a is a member of cluster web-cluster on dist-1 and may connect only as a node of it (cluster.name: web-cluster in its config)"},
		{"a certificate named after a cluster", n.clusterNode(transport.Identity{Name: "web-cluster", Role: pki.RoleSubscriber}, "", ""), 0, "",
			"certificate web-cluster bears the name of cluster web-cluster on dist-1 but is not one of its members (clusters.web-cluster.members)"},
		{"a channel not for the cluster", n.clusterNode(web01a, "web-cluster", "node-a", "web", "db"), 0, "web-cluster",
			"web-01a is not a child of channel db on dist-1, nor is its cluster web-cluster: children are [sub-2]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.epoch == 0 {
				_, err = tc.node.leaseSession()
			} else {
				_, err = tc.node.content(tc.epoch)
			}
			if !errors.Is(err, transport.ErrUnauthorized) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("the node sees %v; want one line wrapping %v with %q", err, transport.ErrUnauthorized, tc.want)
			}
			t.Logf("the node sees: %v", err)
			parts := []string{"level=WARN", `msg="peer refused"`, "peer=" + tc.node.id.Name, tc.want}
			if tc.cluster != "" {
				parts = append(parts, "cluster="+tc.cluster)
			}
			waitFor(t, "the refusal in the distributor's log", func() bool { return log.line(parts...) != "" })
		})
	}
	if c := n.d.Status().Children; len(c) != 0 {
		t.Errorf("refused nodes listed as children: %+v", c)
	}
}

// TestClusterOneLease: two nodes of one cluster with different
// certificates share one lease, and the cluster is one child whichever
// node is active.
func TestClusterOneLease(t *testing.T) {
	n := startDistributor(t, clusterConfig(), nil)
	a := n.clusterNode(web01a, "web-cluster", "node-a")
	b := n.clusterNode(web01b, "web-cluster", "node-b")
	la, lb := a.mustLeaseSession(), b.mustLeaseSession()
	ga := la.acquire()
	if gb := lb.ask(false); gb.Granted || gb.Holder != "node-a" || gb.RetryIn == 0 {
		t.Fatalf("node-b (web-01b) while node-a (web-01a) holds the lease: %+v, want refused naming node-a", gb)
	}
	if _, err := b.content(ga.Epoch); !errors.Is(err, transport.ErrUnavailable) ||
		!strings.Contains(err.Error(), "node node-b of cluster web-cluster does not hold its lease") ||
		!strings.Contains(err.Error(), "node-a with certificate web-01a does") {
		t.Errorf("node-b's content session under node-a's epoch: %v", err)
	}
	ca, err := a.content(ga.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	oneChild := func(node, cert string) bool {
		c := n.d.Status().Children
		return len(c) == 1 && c[0].Name == "web-cluster" && c[0].Connected && c[0].ActiveNode == node && c[0].Certificate == cert
	}
	waitFor(t, "web-cluster one child, node-a active", func() bool { return oneChild("node-a", "web-01a") })

	// node-a reconnects: its new session replaces the old one.
	ca2, err := a.content(ga.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	await(t, ca.sess.Context().Done(), "node-a's first session closed")

	// node-a gives the lease up; node-b gets it under a larger epoch, and
	// node-a's session ends.
	la.ask(true)
	gb := lb.ask(false)
	if !gb.Granted || gb.Epoch <= ga.Epoch {
		t.Fatalf("node-b after node-a's release: %+v, node-a's epoch %d", gb, ga.Epoch)
	}
	await(t, ca2.sess.Context().Done(), "node-a's session fenced off")
	if _, err := b.content(gb.Epoch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web-cluster one child, node-b active", func() bool { return oneChild("node-b", "web-01b") })
	if ga := la.ask(false); ga.Granted || ga.Holder != "node-b" {
		t.Errorf("node-a while node-b holds the lease: %+v", ga)
	}
}

// TestClusterLeaseSurvivesRestart: the holder keeps its lease through a
// restart of the distributor, under the same epoch; another node waits the
// grace; a damaged table stops the start.
func TestClusterLeaseSurvivesRestart(t *testing.T) {
	cfg := clusterConfig()
	cfg.DataDir = t.TempDir()
	n := startDistributor(t, cfg, nil)
	ga := n.clusterNode(web01a, "web-cluster", "node-a").mustLeaseSession().acquire()
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}

	started := time.Now()
	n = startDistributor(t, cfg, nil)
	a := n.clusterNode(web01a, "web-cluster", "node-a")
	// Its content session is served at once: the lease is still its own.
	if _, err := a.content(ga.Epoch); err != nil {
		t.Fatalf("node-a's content session after the restart: %v", err)
	}
	la := a.mustLeaseSession()
	if g := la.ask(false); !g.Granted || g.Epoch != ga.Epoch {
		t.Fatalf("node-a renewing after the restart: %+v, want granted under epoch %d", g, ga.Epoch)
	}
	lb := n.clusterNode(web01b, "web-cluster", "node-b").mustLeaseSession()
	if g := lb.ask(false); g.Granted || g.Holder != "node-a" {
		t.Fatalf("node-b after the restart: %+v, want refused naming node-a", g)
	}
	// node-a stops renewing: node-b gets the lease once it has run out,
	// not before one TTL after the start, under a larger epoch.
	gb := lb.acquire()
	if waited := time.Since(started); waited < clusterTTL || gb.Epoch <= ga.Epoch {
		t.Errorf("node-b granted %v after the start under epoch %d; want at least %v and an epoch above %d", waited, gb.Epoch, clusterTTL, ga.Epoch)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}

	file := filepath.Join(cfg.DataDir, distributor.LeaseFile)
	if err := os.WriteFile(file, []byte("{\"version\": 1, \"clusters\": {\"web-cluster\": "), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := distributor.New(cfg, memStore(t), slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "remove it") {
		t.Errorf("New with a damaged lease table: %v, want an error naming %s and what to do", err, file)
	}
}
