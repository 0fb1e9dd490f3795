//go:build linux

package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ted/admin"
)

// A partitionNet is a TED network whose parent distributor and cluster
// nodes each run in a host of a lab (netns_test.go): dist-1 and the three
// nodes c1-a, c1-b, c1-c of the cluster subscriber web-c1, gossiping and
// dialling the parent on their hosts' addresses. The publisher's store and
// the cluster's shared_dir and root are on the local file system, as in
// cluster_test.go; `ted publish` runs inside the parent's host.
type partitionNet struct {
	t      *testing.T
	lab    *lab
	nw     *network
	parent *node
	c      *aCluster
	hostOf map[*node]*labHost

	mu      sync.Mutex
	paused  map[*node]bool
	sampler *roleSampler
}

// The ports every host uses: its own address, its own namespace.
const (
	labDistributorPort = "7400"
	labGossipPort      = "7946"
)

// newPartitionNet makes the lab, the network and its daemons; env is
// added to each cluster node's environment. Cleanup resumes paused nodes,
// heals the lab and stops the sampler before the network's cleanup stops
// the daemons.
func newPartitionNet(t *testing.T, env ...string) *partitionNet {
	t.Helper()
	l := newLab(t) // first: its cleanup runs last, once the daemons are gone
	nw := newNetwork(t)
	pn := &partitionNet{t: t, lab: l, nw: nw, hostOf: map[*node]*labHost{}, paused: map[*node]bool{}}
	t.Cleanup(pn.cleanup)
	pn.parent = pn.distributor("dist-1", "web-c1")
	pn.c = pn.cluster("web-c1", []string{"c1-a", "c1-b", "c1-c"}, env)
	return pn
}

func (pn *partitionNet) cleanup() {
	pn.mu.Lock()
	s := pn.sampler
	pn.mu.Unlock()
	if s != nil {
		s.stop()
	}
	// Continued, or the network's cleanup could not stop them; without
	// failing here, so that the lab is healed whatever happens.
	for _, n := range pn.pausedNodes() {
		n.mu.Lock()
		p := n.proc
		n.mu.Unlock()
		if p != nil {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	pn.lab.healAll()
}

func (pn *partitionNet) pausedNodes() []*node {
	pn.mu.Lock()
	defer pn.mu.Unlock()
	var out []*node
	for n, p := range pn.paused {
		if p {
			out = append(out, n)
		}
	}
	return out
}

// writeValues writes a node's config as it is in n.values.
func writeValues(t *testing.T, n *node) {
	t.Helper()
	data, err := json.MarshalIndent(n.values, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, n.config, data, 0o644)
}

// distributor starts the parent distributor in its own host, serving the
// channel web from pub-1 to the cluster.
func (pn *partitionNet) distributor(name, cluster string) *node {
	t, nw := pn.t, pn.nw
	t.Helper()
	nw.issue(name, "distributor")
	h := pn.lab.host(name)
	values := map[string]any{
		"name":     name,
		"data_dir": "./var/" + name,
		"listen":   h.ip + ":" + labDistributorPort,
		"tls":      map[string]string{"ca": "pki/ca.crt", "cert": "pki/" + name + ".crt", "key": "pki/" + name + ".key"},
		"trust":    nw.relTrust(nil),
		"channels": map[string]any{"web": map[string]any{"publishers": []string{"pub-1"}, "children": []string{cluster}}},
		"clusters": map[string]any{cluster: map[string]any{"members": []string{cluster}}},
	}
	n := nw.newNode(name, "distributor", values)
	n.addr, n.netns = values["listen"].(string), h.ns
	pn.hostOf[n] = h
	writeValues(t, n)
	n.start()
	requireInHost(t, n, h)
	return n
}

// requireInHost fails unless n's process is ted itself (ip exec'd it) in
// h's namespace: signals sent to the pid reach ted.
func requireInHost(t *testing.T, n *node, h *labHost) {
	t.Helper()
	pid := n.pid()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	want, _ := filepath.EvalSymlinks(tedBinary)
	if err != nil || exe != want {
		t.Fatalf("%s: process %d runs %q (%v), want %s", n.name, pid, exe, err, want)
	}
	if got, want := netnsOf(pid), namedNetns(t, h.ns); got != want {
		t.Fatalf("%s: process %d in namespace %s, want %s (%s)", n.name, pid, got, want, h.ns)
	}
}

// deaths reports every daemon whose process ended without the test
// ending it.
func (pn *partitionNet) deaths() []string {
	var out []string
	for _, n := range append([]*node{pn.parent}, pn.c.nodes...) {
		n.mu.Lock()
		p := n.proc
		n.mu.Unlock()
		if p != nil && !n.running() {
			why := ""
			if p.cmd.ProcessState != nil && p.cmd.ProcessState.ExitCode() == 75 {
				why = " (75: it fenced itself off and did not start itself again as a standby; nothing restarts it here)"
			}
			out = append(out, fmt.Sprintf("liveness: %s exited by itself: %v%s", n.name, p.err, why))
		}
	}
	return out
}

// cluster starts the cluster's nodes, each in its own host, priorities 10,
// 20, … in order, as nw.cluster does on loopback.
func (pn *partitionNet) cluster(name string, nodes []string, env []string) *aCluster {
	t, nw := pn.t, pn.nw
	t.Helper()
	nw.issue(name, "subscriber")
	c := &aCluster{name: name, shared: filepath.Join(nw.dir, "shared", name)}
	c.root = filepath.Join(c.shared, "root")
	if err := os.MkdirAll(c.shared, 0o755); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	writeFile(t, filepath.Join(nw.dir, name+".key"), []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	hosts := make([]*labHost, len(nodes))
	for i, nodeName := range nodes {
		hosts[i] = pn.lab.host(nodeName)
	}
	for i, nodeName := range nodes {
		var join []string
		for j, h := range hosts {
			if j != i {
				join = append(join, h.ip+":"+labGossipPort)
			}
		}
		values := map[string]any{
			"name":     name,
			"parents":  []string{pn.parent.addr},
			"data_dir": "./var/" + nodeName,
			"tls":      map[string]string{"ca": "pki/ca.crt", "cert": "pki/" + name + ".crt", "key": "pki/" + name + ".key"},
			"channels": []string{"web"},
			"trust":    nw.relTrust(nil),
			"root":     "./shared/" + name + "/root",
			"cluster": map[string]any{
				"name": name, "node": nodeName, "bind": hosts[i].ip + ":" + labGossipPort, "join": join, "priority": 10 * (i + 1),
				"secret_file": name + ".key", "shared_dir": "./shared/" + name,
			},
		}
		n := nw.newNode(nodeName, "subscriber", values)
		n.root, n.target = c.root, filepath.Join(c.root, "app")
		n.netns, n.env = hosts[i].ns, env
		pn.hostOf[n] = hosts[i]
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		writeValues(t, n)
		n.start()
		requireInHost(t, n, pn.hostOf[n])
	}
	return c
}

// pause stops n (SIGSTOP) and remembers to continue it at cleanup.
func (pn *partitionNet) pause(n *node) {
	pn.t.Helper()
	pn.mu.Lock()
	pn.paused[n] = true
	pn.mu.Unlock()
	n.pause()
}

func (pn *partitionNet) resume(n *node) {
	pn.t.Helper()
	n.resume()
	pn.mu.Lock()
	delete(pn.paused, n)
	pn.mu.Unlock()
}

func (pn *partitionNet) isPaused(n *node) bool {
	pn.mu.Lock()
	defer pn.mu.Unlock()
	return pn.paused[n]
}

// publish builds the next revision of app from nw.src and publishes it to
// the parent, from inside the parent's host. A failure (the parent down)
// is returned, not fatal: it may run in a goroutine of its own.
func (pn *partitionNet) publish(version string) (publishResult, error) {
	var res publishResult
	nw := pn.nw
	build := exec.Command(tedBinary, "dist", "build", "--store", nw.store, "--name", "app", "--from", nw.src,
		"--version", version, "--channel", "web", "--sign-key", nw.signKey, "--json")
	if out, err := build.CombinedOutput(); err != nil {
		return res, fmt.Errorf("ted dist build: %v: %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"netns", "exec", pn.hostOf[pn.parent].ns, tedBinary}, nw.publishArgs("app", pn.parent)...)
	cmd := exec.CommandContext(ctx, "ip", append(args, "--json")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("ted publish: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return res, fmt.Errorf("ted publish: %v: %s", err, stdout.String())
	}
	return res, nil
}

// publishUntil publishes version, again while it fails, until timeout.
func (pn *partitionNet) publishUntil(version string, timeout time.Duration) publishResult {
	pn.t.Helper()
	var res publishResult
	waitForWithin(pn.t, timeout, "publishing "+version, func() (bool, string) {
		var err error
		res, err = pn.publish(version)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return res
}

// roleOf asks n for its role, within timeout; a node that does not answer
// is not active.
func roleOf(n *node, timeout time.Duration) string {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var st subscriberStatus
	if err := admin.Get(ctx, admin.SocketPath(n.dataDir), "/api/status", &st); err != nil {
		return "no answer: " + err.Error()
	}
	return st.Role
}

// sampleTimeout bounds one node's answer in a sample round.
const sampleTimeout = time.Second

// A roleSampler samples every running node's role every 100 ms, in rounds
// that may overlap while a node is slow to answer (or paused).
type roleSampler struct {
	nodes []*node
	done  chan struct{}
	wg    sync.WaitGroup

	mu     sync.Mutex
	rounds []roleRound
}

func (pn *partitionNet) startSampler() *roleSampler {
	s := &roleSampler{nodes: pn.c.nodes, done: make(chan struct{})}
	pn.mu.Lock()
	pn.sampler = s
	pn.mu.Unlock()
	s.wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.done:
				return
			case at := <-tick.C:
				s.wg.Go(func() { s.round(at) })
			}
		}
	})
	return s
}

func (s *roleSampler) round(at time.Time) {
	r := roleRound{at: at, roles: map[string]string{}, took: map[string]time.Duration{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range s.nodes {
		if !n.running() {
			continue
		}
		wg.Go(func() {
			start := time.Now()
			role := roleOf(n, sampleTimeout)
			mu.Lock()
			r.roles[n.name], r.took[n.name] = role, time.Since(start)
			mu.Unlock()
		})
	}
	wg.Wait()
	s.mu.Lock()
	s.rounds = append(s.rounds, r)
	s.mu.Unlock()
}

// stop stops sampling and returns the rounds, in time order. Twice is
// harmless.
func (s *roleSampler) stop() []roleRound {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.rounds)
	slices.SortFunc(out, func(a, b roleRound) int { return a.at.Compare(b.at) })
	return out
}

// activeNow is the node that says it is active now, asking every running
// node that is not paused, or nil.
func (pn *partitionNet) activeNow() *node {
	for _, n := range pn.c.nodes {
		if n.running() && !pn.isPaused(n) && roleOf(n, 2*time.Second) == "active" {
			return n
		}
	}
	return nil
}

// settle waits, up to timeout, until one node is active and says app@rev
// is extracted with its journal gone, and every running node names it as
// the active node. It returns the active node, if one extracted app@rev,
// and a violation for what did not happen: no node active with app@rev
// extracted (liveness), or nodes that do not see the active node (their
// gossip did not heal).
func (pn *partitionNet) settle(rev uint64, timeout time.Duration) (*node, []string) {
	journal := filepath.Join(pn.c.shared, "installed", "journal", "app.cbor")
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		var active []*node
		var seen, strays []string
		for _, n := range pn.c.nodes {
			if !n.running() {
				continue
			}
			st, err := n.subscriberStatus()
			if err != nil {
				seen = append(seen, n.name+": "+err.Error())
				continue
			}
			seen = append(seen, fmt.Sprintf("%s=%s(active %q)", n.name, st.Role, st.ActiveNode))
			if st.Role == "active" {
				active = append(active, n)
			}
		}
		var done *node
		if len(active) == 1 {
			a := active[0]
			r := a.distState("app", rev)
			_, err := os.Stat(journal)
			seen = append(seen, fmt.Sprintf("app@%d on %s: %s %s; journal: %v", rev, a.name, r.State, r.Reason+r.Error, err))
			if r.State == "extracted" && os.IsNotExist(err) {
				done = a
				for _, n := range pn.c.nodes {
					if st, err := n.subscriberStatus(); n.running() && (err != nil || st.ActiveNode != a.name) {
						strays = append(strays, n.name)
					}
				}
			}
		}
		if done != nil && len(strays) == 0 {
			return done, nil
		}
		if time.Now().After(deadline) {
			last := strings.Join(seen, " ")
			if done == nil {
				return nil, []string{fmt.Sprintf("liveness: within %s of healing, no single active node with app@%d extracted; last: %s", timeout, rev, last)}
			}
			return done, []string{fmt.Sprintf("gossip: within %s of healing, %s do not see %s, the active node; last: %s",
				timeout, strings.Join(strays, ", "), done.name, last)}
		}
	}
}

// journalVerdict reads the cluster's journal history and checks it.
func (pn *partitionNet) journalVerdict() (lines []journalLine, violations []string) {
	pn.t.Helper()
	lines, bad, err := readJournalHistory(pn.c.shared)
	if err != nil {
		pn.t.Fatal(err)
	}
	return lines, append(bad, checkJournal(lines)...)
}

// logHistory logs the journal history, on failure or with
// TED_NETWORK_LOGS=1 (as the network's cleanup does the daemons' logs).
func logHistory(t *testing.T, lines []journalLine) {
	t.Helper()
	if !t.Failed() && os.Getenv("TED_NETWORK_LOGS") != "1" {
		return
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintln(&b, l)
	}
	t.Logf("==== journal history (%d lines)\n%s", len(lines), b.String())
}

// epochsIn returns the highest epoch each node wrote in lines.
func epochsIn(lines []journalLine) map[string]uint64 {
	out := map[string]uint64{}
	for _, l := range lines {
		out[l.Node] = max(out[l.Node], l.Epoch)
	}
	return out
}

// nextTree turns the source tree into revision rev (editTree).
func (pn *partitionNet) nextTree(rev int, bulk bool) {
	pn.t.Helper()
	if err := editTree(pn.nw.src, rev, bulk); err != nil {
		pn.t.Fatal(err)
	}
}

// editTree turns the source tree src into revision rev: a changed config,
// a file added and an older one dropped; with bulk, the bulkFiles small
// files (a few of them changed from the revision before), without, none.
func editTree(src string, rev int, bulk bool) error {
	write := func(path, text string) error {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		return os.WriteFile(path, []byte(text), 0o644)
	}
	if err := write(filepath.Join(src, "etc/app.conf"), fmt.Sprintf("port = 80\nrevision = %d\n", rev)); err != nil {
		return err
	}
	if err := write(filepath.Join(src, "share", fmt.Sprintf("rev-%d.txt", rev)), fmt.Sprintf("revision %d\n", rev)); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(src, "share", fmt.Sprintf("rev-%d.txt", rev-2))); err != nil && !os.IsNotExist(err) {
		return err
	}
	dir := filepath.Join(src, "bulk")
	_, err := os.Stat(dir)
	switch have := err == nil; {
	case bulk && !have:
		for i := range bulkFiles {
			// 1000 different contents: the transfer is small, the
			// extraction still writes every file.
			if err := write(bulkPath(dir, i), fmt.Sprintf("bulk content %d\n", i%1000)); err != nil {
				return err
			}
		}
	case bulk:
		// A few files change: the rest is the same.
		for i := range 5 {
			if err := write(bulkPath(dir, (rev*37+i*1001)%bulkFiles), fmt.Sprintf("bulk file changed in revision %d\n", rev)); err != nil {
				return err
			}
		}
	case have:
		return os.RemoveAll(dir)
	}
	return nil
}

// bulkFiles small files make a large revision: extracting it takes
// seconds (each file is written and synced), long enough to be
// interrupted.
const bulkFiles = 16000

func bulkPath(dir string, i int) string {
	return filepath.Join(dir, fmt.Sprintf("d%02d", i/400), fmt.Sprintf("f%05d.txt", i))
}

// bulkWritten counts the bulk files in dir, up to bulkFiles.
func bulkWritten(dir string) int {
	count := 0
	for d := range bulkFiles / 400 {
		entries, _ := os.ReadDir(filepath.Join(dir, fmt.Sprintf("d%02d", d)))
		count += len(entries)
	}
	return count
}

// partitionDuration is how long the random events go on: ~2 minutes, or
// TED_PARTITION_DURATION.
func partitionDuration(t *testing.T) time.Duration {
	t.Helper()
	d := 110 * time.Second
	if v := os.Getenv("TED_PARTITION_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			t.Fatalf("TED_PARTITION_DURATION=%q: %v", v, err)
		}
	}
	return d
}

// partitionSeed is TED_PARTITION_SEED, or a new seed.
func partitionSeed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("TED_PARTITION_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TED_PARTITION_SEED=%q: %v", v, err)
		}
		return seed
	}
	return mrand.Uint64()
}

// chaos is the random schedule of TestClusterPartitions: events that cut
// links, kill, pause and restart, each undone after a while, from the
// test's goroutine, while a publisher goroutine publishes a revision every
// 2–4 s.
type chaos struct {
	pn    *partitionNet
	rng   *mrand.Rand
	start time.Time

	// pending are the actions due later (undoing events), in no order.
	pending []timedAction
	down    map[*node]bool // killed or paused nodes, until undone
	seq     int            // names cuts

	partitions, kills, pauses, parentRestarts int
	// failovers are the kills and pauses of the active node, for
	// failoverTime; events every event and undoing, for what happened
	// while the cluster failed over.
	failovers []failover
	events    []timedAction
	// failoverEvent is, for each failover, the index in events of the
	// first event after its own.
	failoverEvent []int

	mu                       sync.Mutex // guards the publisher's counts
	rev                      int        // the last revision built
	published, publishFailed int
}

type timedAction struct {
	at   time.Time
	what string
	do   func()
}

func (c *chaos) logf(format string, args ...any) {
	c.pn.t.Helper()
	c.pn.t.Logf("t+%5.1fs: %s", time.Since(c.start).Seconds(), fmt.Sprintf(format, args...))
}

// note logs an event and records it.
func (c *chaos) note(format string, args ...any) {
	c.pn.t.Helper()
	what := fmt.Sprintf(format, args...)
	c.events = append(c.events, timedAction{at: time.Now(), what: what})
	c.logf("%s", what)
}

// failedOver records a failover to time, the event that caused it just
// noted.
func (c *chaos) failedOver(f failover) {
	c.failovers = append(c.failovers, f)
	c.failoverEvent = append(c.failoverEvent, len(c.events))
}

// during lists the events noted from events[i] on, up to to.
func (c *chaos) during(i int, to time.Time) []string {
	var out []string
	for _, e := range c.events[i:] {
		if e.at.After(to) {
			break
		}
		out = append(out, fmt.Sprintf("t+%.1fs %s", e.at.Sub(c.start).Seconds(), e.what))
	}
	return out
}

func (c *chaos) later(d time.Duration, what string, do func()) {
	c.pending = append(c.pending, timedAction{at: time.Now().Add(d), what: what, do: do})
}

// between is a random duration in [lo, hi).
func (c *chaos) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(c.rng.Int64N(int64(hi-lo)))
}

// up returns the cluster nodes running and not paused.
func (c *chaos) up() []*node {
	var out []*node
	for _, n := range c.pn.c.nodes {
		if !c.down[n] && n.running() {
			out = append(out, n)
		}
	}
	return out
}

// target picks a node that is up, the active one with probability
// preferActive if it is up; it returns the node and whether it was active.
func (c *chaos) target(preferActive float64) (*node, bool) {
	up := c.up()
	if len(up) == 0 {
		return nil, false
	}
	active := c.pn.activeNow()
	if active != nil && slices.Contains(up, active) && c.rng.Float64() < preferActive {
		return active, true
	}
	n := up[c.rng.IntN(len(up))]
	return n, n == active
}

// hold is how long a cut lasts: mostly seconds, sometimes longer than
// memberlist's 30 s of gossip to the dead.
func (c *chaos) hold() time.Duration {
	if c.rng.Float64() < 0.15 {
		return c.between(30*time.Second, 45*time.Second)
	}
	return c.between(3*time.Second, 20*time.Second)
}

func (c *chaos) cutName(kind string) string {
	c.seq++
	return fmt.Sprintf("%s#%d", kind, c.seq)
}

func modeName(loud bool) string {
	if loud {
		return "loud"
	}
	return "silent"
}

// alsoWrong says what is wrong besides n going down: the cuts in force,
// the nodes down (killed, paused); "" if nothing.
func (c *chaos) alsoWrong(n *node) string {
	var out []string
	if cuts := c.pn.lab.cutNow(); len(cuts) > 0 {
		out = append(out, "cuts "+strings.Join(cuts, "; "))
	}
	var down []string
	for o, d := range c.down {
		if d && o != n {
			down = append(down, o.name)
		}
	}
	if len(down) > 0 {
		slices.Sort(down)
		out = append(out, "down "+strings.Join(down, ", "))
	}
	return strings.Join(out, "; ")
}

// event runs one random event.
func (c *chaos) event() {
	pn := c.pn
	t, l := pn.t, pn.lab
	t.Helper()
	loud := c.rng.Float64() < 0.3
	hostsOf := func(nodes []*node) []*labHost {
		var out []*labHost
		for _, n := range nodes {
			out = append(out, pn.hostOf[n])
		}
		return out
	}
	cut := func(kind string, from, to []*node, what string) {
		name, d := c.cutName(kind), c.hold()
		l.cut(name, loud, hostsOf(from), hostsOf(to))
		c.partitions++
		c.note("%s (%s) for %s", what, modeName(loud), d.Round(100*time.Millisecond))
		c.later(d, "heal "+name, func() { l.heal(name) })
	}
	names := func(nodes []*node) string {
		var s []string
		for _, n := range nodes {
			s = append(s, n.name)
		}
		return strings.Join(s, ",")
	}
	others := func(n *node) []*node {
		var out []*node
		for _, o := range append([]*node{pn.parent}, pn.c.nodes...) {
			if o != n {
				out = append(out, o)
			}
		}
		return out
	}
	switch k := c.rng.IntN(14); {
	case k < 2: // a node cut from everything
		if n, _ := c.target(0.5); n != nil {
			cut("isolate "+n.name, []*node{n}, others(n), "cut "+n.name+" from everything")
		}
	case k < 4: // the active node cut from its peers only
		n := pn.activeNow()
		if n == nil {
			c.logf("no active node to cut from its peers")
			return
		}
		cut("peers of "+n.name, []*node{n}, slices.DeleteFunc(others(n), func(o *node) bool { return o == pn.parent }),
			"cut the active "+n.name+" from its peers")
	case k < 6: // a node cut from the parent only
		if n, _ := c.target(0.6); n != nil {
			cut("parent of "+n.name, []*node{n}, []*node{pn.parent}, "cut "+n.name+" from the parent")
		}
	case k < 8: // a full split, two sides each with someone
		var a, b []*node
		for len(a) == 0 || len(b) == 0 {
			a, b = nil, nil
			for _, n := range append([]*node{pn.parent}, pn.c.nodes...) {
				if c.rng.IntN(2) == 0 {
					a = append(a, n)
				} else {
					b = append(b, n)
				}
			}
		}
		cut("split "+names(a)+" | "+names(b), a, b, "split "+names(a)+" | "+names(b))
	case k < 9: // heal everything
		c.note("heal every cut (%d: %s)", len(l.cutNow()), strings.Join(l.cutNow(), "; "))
		l.healAll()
	case k < 11: // kill -9, restart a little later
		if len(c.up()) < 2 {
			return // one node down at a time
		}
		n, wasActive := c.target(0.6)
		d := c.between(time.Second, 6*time.Second)
		also := c.alsoWrong(n)
		c.down[n] = true
		at := time.Now()
		n.kill()
		c.kills++
		c.note("kill -9 %s (active: %v), restart in %s", n.name, wasActive, d.Round(100*time.Millisecond))
		if wasActive {
			c.failedOver(failover{what: "kill -9 " + n.name, from: n.name, at: at, also: also})
		}
		c.later(d, "restart "+n.name, func() {
			n.start()
			delete(c.down, n)
		})
	case k < 13: // SIGSTOP past the lease, then SIGCONT
		if len(c.up()) < 2 {
			return
		}
		n, wasActive := c.target(0.7)
		d := c.between(8*time.Second, 20*time.Second)
		also := c.alsoWrong(n)
		c.down[n] = true
		at := time.Now()
		pn.pause(n)
		c.pauses++
		c.note("SIGSTOP %s (active: %v) for %s", n.name, wasActive, d.Round(100*time.Millisecond))
		if wasActive {
			c.failedOver(failover{what: "SIGSTOP " + n.name, from: n.name, at: at, also: also})
		}
		c.later(d, "SIGCONT "+n.name, func() {
			pn.resume(n)
			delete(c.down, n)
		})
	default: // the parent restarted
		if c.down[pn.parent] {
			return
		}
		c.down[pn.parent] = true
		pn.parent.kill()
		c.parentRestarts++
		c.note("kill -9 the parent %s, start it again in 3s", pn.parent.name)
		c.later(3*time.Second, "start "+pn.parent.name, func() {
			pn.parent.start()
			delete(c.down, pn.parent)
		})
	}
}

// publisher publishes a revision every 2–4 s until stop is closed, with
// the bulk files until bulkUntil. It runs in a goroutine of its own, so a
// publication that waits for a parent that is down delays no event; it
// reports what goes wrong with t.Errorf, never t.Fatal.
func (c *chaos) publisher(rng *mrand.Rand, bulkUntil time.Time, stop <-chan struct{}) {
	t := c.pn.t
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		timer.Reset(2*time.Second + time.Duration(rng.Int64N(int64(2*time.Second))))
		select {
		case <-stop:
			return
		case <-timer.C:
		}
		c.mu.Lock()
		c.rev++
		rev := c.rev
		c.mu.Unlock()
		bulk := time.Now().Before(bulkUntil)
		if err := editTree(c.pn.nw.src, rev, bulk); err != nil {
			t.Errorf("revision %d: %v", rev, err)
			return
		}
		res, err := c.pn.publish(fmt.Sprintf("1.0.%d", rev))
		c.mu.Lock()
		if err != nil {
			c.publishFailed++
		} else {
			c.published++
		}
		c.mu.Unlock()
		if err != nil {
			c.logf("publishing revision %d (bulk: %v) failed: %v", rev, bulk, firstLine(err.Error()))
		} else {
			c.logf("published app@%d (bulk: %v, %d chunks sent)", res.Revision, bulk, res.SentChunks)
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// run runs events for d, with the publisher, then undoes whatever is
// pending.
func (c *chaos) run(d time.Duration) {
	c.pn.t.Helper()
	begin := time.Now()
	end := begin.Add(d)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	rng := mrand.New(mrand.NewPCG(c.rng.Uint64(), c.rng.Uint64()))
	wg.Go(func() { c.publisher(rng, begin.Add(d/3), stop) })
	defer func() {
		close(stop)
		wg.Wait()
	}()
	nextEvent := time.Now().Add(c.between(2*time.Second, 5*time.Second))
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		// The earliest of: the next event (until end), the pending
		// actions.
		at, which := nextEvent, -1
		for i, a := range c.pending {
			if a.at.Before(at) {
				at, which = a.at, i
			}
		}
		if !at.Before(end) {
			break
		}
		timer.Reset(time.Until(at))
		<-timer.C
		if which < 0 {
			c.event()
			nextEvent = time.Now().Add(c.between(2*time.Second, 6*time.Second))
			continue
		}
		a := c.pending[which]
		c.pending = slices.Delete(c.pending, which, which+1)
		c.note("%s", a.what)
		a.do()
	}
	c.finish()
}

// finish does every pending action now, in time order, and heals the lab.
func (c *chaos) finish() {
	c.pn.t.Helper()
	slices.SortFunc(c.pending, func(a, b timedAction) int { return a.at.Compare(b.at) })
	for _, a := range c.pending {
		c.note("end: %s", a.what)
		a.do()
	}
	c.pending = nil
	c.note("end: heal every cut (%s)", strings.Join(c.pn.lab.cutNow(), "; "))
	c.pn.lab.healAll()
}

// TestClusterPartitions runs a cluster subscriber of three nodes under a
// parent, each in its own network namespace, through a random schedule of
// partitions (a node from everything, the active node from its peers, a
// node from the parent, full splits; silent or loud), kill -9s, pauses
// longer than the lease and parent restarts, while a revision is published
// every 2–4 s, the first large ones taking seconds to extract. Then it
// heals everything, waits for one active node with the last revision
// extracted, and checks the history: never two active nodes in a sample
// round, the shared journal history (partition_check_test.go), and the
// target tree.
//
// TED_PARTITION_SEED replays a schedule (the seed is logged): the same
// random draws, though what they apply to (which node is active) depends
// on timing too. TED_PARTITION_DURATION sets how long the events go on
// (default 110s: the whole test takes about 2.5 minutes).
func TestClusterPartitions(t *testing.T) {
	t.Parallel()
	seed, d := partitionSeed(t), partitionDuration(t)
	t.Logf("partition seed %d (replay with TED_PARTITION_SEED=%d), events for %s", seed, seed, d)
	pn := newPartitionNet(t)
	c := &chaos{pn: pn, rng: mrand.New(mrand.NewPCG(seed, seed)), down: map[*node]bool{}}

	// Revision 1, small, before anything happens.
	sampler := pn.startSampler()
	c.start = time.Now()
	pn.publishUntil("1.0.1", waitTimeout)
	if _, v := pn.settle(1, waitTimeout); v != nil {
		t.Fatal(v[0])
	}
	// Revision 2, large: the events begin as its extraction does, and
	// the revisions of the first third of the run keep it large.
	pn.nextTree(2, true)
	pn.publishUntil("1.0.2", waitTimeout)
	c.rev, c.published = 2, 2
	bulk := filepath.Join(pn.c.root, "app", "bulk")
	waitFor(t, "app@2 being extracted", func() (bool, string) {
		n := bulkWritten(bulk)
		return n > 0, fmt.Sprintf("%d bulk files written", n)
	})
	c.logf("app@1 extracted, app@2 (%d files more) being extracted; the events begin", bulkFiles)
	c.run(d)

	// The last revision, published once everything is back.
	c.rev++
	pn.nextTree(c.rev, false)
	pn.publishUntil(fmt.Sprintf("1.0.%d", c.rev), waitTimeout)
	c.published++
	final := filepath.Join(pn.nw.dir, "site-final")
	copyTree(t, pn.nw.src, final)
	c.logf("published the last revision, app@%d", c.rev)
	active, violations := pn.settle(uint64(c.rev), 75*time.Second)
	if active != nil {
		c.logf("settled: %s active, app@%d extracted", active.name, c.rev)
	}
	rounds := sampler.stop()

	violations = append(violations, pn.deaths()...)
	violations = append(violations, checkRoles(rounds)...)
	lines, jv := pn.journalVerdict()
	violations = append(violations, jv...)
	if len(lines) == 0 {
		t.Logf("NOTE: %s has no lines: the journal history was not checked", filepath.Join(pn.c.shared, journalLogName))
	} else {
		t.Logf("journal history: %d lines, highest epoch of each node %v", len(lines), epochsIn(lines))
	}
	if active != nil {
		violations = append(violations, checkTree(t, filepath.Join(pn.c.root, "app"), final)...)
	}
	var clean []string
	for i, f := range c.failovers {
		f = failoverTime(rounds, f)
		upTo := f.at.Add(f.took)
		if f.missed {
			upTo = time.Now()
		}
		f.during = c.during(c.failoverEvent[i], upTo)
		t.Logf("failover after %s", f)
		if f.clean() && !f.missed && !f.back {
			clean = append(clean, f.what+": "+f.took.Round(100*time.Millisecond).String())
		}
	}
	t.Logf("clean failovers (nothing else wrong before or during): %d: %s", len(clean), strings.Join(clean, ", "))
	verdict := "ok"
	if len(violations) > 0 {
		verdict = fmt.Sprintf("%d violations", len(violations))
	}
	t.Logf("%d sample rounds, %d publications failed", len(rounds), c.publishFailed)
	t.Logf("partition run: %d partitions, %d kills, %d pauses, %d parent restarts, %d revisions published, verdict: %s",
		c.partitions, c.kills, c.pauses, c.parentRestarts, c.published, verdict)
	if len(violations) > 0 {
		t.Errorf("seed %d: %d violations:\n%s", seed, len(violations), strings.Join(violations, "\n"))
	}
	logHistory(t, lines)
}

// TestClusterPartitionsCatchUnfenced shows the checker catches what
// fencing prevents: the active node is paused (SIGSTOP) in the middle of
// extracting a large revision, another node takes over and writes to the
// journal under a new epoch, and the paused node is continued. With
// fencing the history passes the checker; with the node's lease checks
// off (TED_TEST_NO_FENCE=1) the old node goes on writing, and the checker
// must report it. Both runs emulate shared storage whose locks do not
// hold across hosts (TED_TEST_NO_STORE_LOCK=1): with a coherent lock the
// new node could not open the store while the paused one holds it, and
// fencing would not be what is tested.
func TestClusterPartitionsCatchUnfenced(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		env     []string
		fencing bool
	}{
		{"fenced", []string{"TED_TEST_NO_STORE_LOCK=1"}, true},
		{"unfenced", []string{"TED_TEST_NO_FENCE=1", "TED_TEST_NO_STORE_LOCK=1"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) { catchUnfenced(t, tt.fencing, tt.env) })
	}
}

func catchUnfenced(t *testing.T, fencing bool, env []string) {
	pn := newPartitionNet(t, env...)
	sampler := pn.startSampler()
	pn.publishUntil("1.0.1", waitTimeout)
	if _, v := pn.settle(1, waitTimeout); v != nil {
		t.Fatal(v[0])
	}
	if lines, _, _ := readJournalHistory(pn.c.shared); len(lines) == 0 {
		t.Skipf("ted wrote no %s for app@1: the journal history this test checks is not there yet", journalLogName)
	}

	// Revision 2, large; the active node paused in the middle of
	// writing it.
	pn.nextTree(2, true)
	pn.publishUntil("1.0.2", waitTimeout)
	src2 := filepath.Join(pn.nw.dir, "site-2")
	copyTree(t, pn.nw.src, src2)
	var old *node
	bulk := filepath.Join(pn.c.root, "app", "bulk")
	waitFor(t, "the active node in the middle of writing app@2", func() (bool, string) {
		old = pn.activeNow()
		n := bulkWritten(bulk)
		return old != nil && n > 200 && n < bulkFiles-2000, fmt.Sprintf("active %v, %d bulk files written", old != nil, n)
	})
	lines, _, _ := readJournalHistory(pn.c.shared)
	oldEpoch := epochsIn(lines)[old.name]
	pausedAt := time.Now()
	pn.pause(old)
	t.Logf("paused %s (epoch %d) with %d of %d bulk files written", old.name, oldEpoch, bulkWritten(bulk), bulkFiles)

	var next *node
	waitFor(t, "another node active, writing the journal under a new epoch", func() (bool, string) {
		next = pn.activeNow()
		lines, _, _ := readJournalHistory(pn.c.shared)
		epochs := epochsIn(lines)
		if next == nil {
			return false, fmt.Sprintf("no node active; epochs %v", epochs)
		}
		return epochs[next.name] > oldEpoch, fmt.Sprintf("%s active; epochs %v", next.name, epochs)
	})
	t.Logf("%s active %s after %s was paused; %d bulk files written; continuing %s",
		next.name, time.Since(pausedAt).Round(100*time.Millisecond), old.name, bulkWritten(bulk), old.name)
	pn.resume(old)

	settleFor := 90 * time.Second
	if !fencing {
		settleFor = 30 * time.Second // it may well never settle
	}
	active, liveness := pn.settle(2, settleFor)
	rounds := sampler.stop()
	liveness = append(liveness, pn.deaths()...)
	// What the checker finds: the history, and the tree if a node
	// finished.
	violations := checkRoles(rounds)
	lines, jv := pn.journalVerdict()
	violations = append(violations, jv...)
	if active != nil {
		violations = append(violations, checkTree(t, filepath.Join(pn.c.root, "app"), src2)...)
	}
	t.Logf("journal history: %d lines, highest epoch of each node %v", len(lines), epochsIn(lines))
	f := failoverTime(rounds, failover{what: "SIGSTOP " + old.name, from: old.name, at: pausedAt})
	t.Logf("failover after %s", f)
	switch all := slices.Concat(violations, liveness); {
	case fencing && len(all) > 0:
		t.Errorf("with fencing, %d violations:\n%s", len(all), strings.Join(all, "\n"))
	case !fencing && len(violations) == 0:
		t.Errorf("without fencing the old node went on, yet the checker found nothing (besides: %q)", liveness)
	case !fencing:
		t.Logf("without fencing, the checker caught %d violations (as it must), and %d of liveness:\n%s",
			len(violations), len(liveness), strings.Join(all, "\n"))
		// The nodes may be in any state: stop them here, not in the
		// network's cleanup, which wants clean exits.
		for _, n := range pn.c.nodes {
			pn.reap(n)
		}
	}
	logHistory(t, lines)
}

// reap ends n, however it is: killed if it runs, its exit logged if it
// died by itself, so the network's cleanup leaves it alone.
func (pn *partitionNet) reap(n *node) {
	pn.t.Helper()
	if pn.isPaused(n) {
		pn.resume(n)
	}
	if n.running() {
		n.kill()
		return
	}
	n.mu.Lock()
	p := n.proc
	n.proc = nil
	n.mu.Unlock()
	if p != nil {
		pn.t.Logf("%s had exited by itself: %v", n.name, p.err)
	}
}
