//go:build linux

package integration

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ted/admin"
)

// A network is a TED network of real daemons in one test's t.TempDir():
// a PKI, a publisher signing key and store, and distributor and subscriber
// processes on 127.0.0.1 with real QUIC, each with its config file and
// data directory beside the others and its stderr in DIR/logs/NAME.log.
// Cleanup stops every daemon still running with SIGTERM and checks that it
// exits 0; a failed test prints every log.
//
// Config files use paths relative to their own directory (DIR), and
// daemons run from another directory (DIR/cwd), so the resolution of
// relative paths is exercised by every test.
type network struct {
	t *testing.T
	// dir holds pki/, var/NAME (data), srv/NAME (roots), NAME.yaml, logs/.
	dir string
	// cwd is where processes run.
	cwd string
	// pki is the CA directory; signKey and trustKey the publisher's
	// signing key and its public half.
	pki, signKey, trustKey string
	// store is the publisher's store; src the tree distributed as app.
	store, src string

	mu     sync.Mutex
	nodes  []*node
	issued map[string]bool
}

// waitTimeout bounds every wait for a network event. Generous: the tests
// run in parallel on two cores.
const waitTimeout = 60 * time.Second

// newNetwork makes the PKI, issues pub-1's certificate and a signing key,
// and writes a small source tree (see writeTree).
func newNetwork(t *testing.T) *network {
	t.Helper()
	dir := t.TempDir()
	nw := &network{
		t: t, dir: dir, cwd: filepath.Join(dir, "cwd"), pki: filepath.Join(dir, "pki"),
		store: filepath.Join(dir, "var", "pub"), src: filepath.Join(dir, "site"),
		issued: map[string]bool{},
	}
	nw.signKey = filepath.Join(nw.pki, "publisher.key")
	nw.trustKey = nw.signKey + ".pub"
	for _, d := range []string{nw.cwd, filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Registered after t.TempDir, so it runs before the directory goes.
	t.Cleanup(nw.cleanup)
	mustTed(t, "pki", "init", "--dir", nw.pki)
	mustTed(t, "pki", "signing-key", "--out", nw.signKey)
	nw.issue("pub-1", "publisher")
	writeTree(t, nw.src, 256<<10)
	return nw
}

// writeTree writes a source tree: an executable of bigBytes random bytes,
// a private config file, a compressible document, a symlink and an empty
// directory of mode 0750.
func writeTree(t *testing.T, dir string, bigBytes int) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "bin/server"), randomBytes(bigBytes), 0o755)
	writeFile(t, filepath.Join(dir, "etc/app.conf"), []byte("port = 80\n"), 0o640)
	writeFile(t, filepath.Join(dir, "share/doc/README"), []byte(strings.Repeat("documentation\n", 3000)), 0o644)
	writeFile(t, filepath.Join(dir, "old.txt"), []byte("dropped by the next revision\n"), 0o644)
	if err := os.Symlink("bin/server", filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "var/cache"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "var/cache"), 0o750); err != nil {
		t.Fatal(err)
	}
}

// randomBytes returns n incompressible bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], rand.Uint64())
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}

// issue makes NAME's certificate once.
func (nw *network) issue(name, role string) {
	nw.t.Helper()
	nw.mu.Lock()
	done := nw.issued[name]
	nw.issued[name] = true
	nw.mu.Unlock()
	if !done {
		mustTed(nw.t, "pki", "issue", "--dir", nw.pki, "--name", name, "--role", role)
	}
}

// build builds app from nw.src into the publisher store.
func (nw *network) build(version string, extra ...string) buildResult {
	nw.t.Helper()
	var res buildResult
	tedJSON(nw.t, &res, append([]string{"dist", "build", "--store", nw.store, "--name", "app", "--from", nw.src,
		"--version", version, "--channel", "web", "--sign-key", nw.signKey}, extra...)...)
	return res
}

// publishResult is `ted publish --json`.
type publishResult struct {
	Name          string `json:"name"`
	Revision      uint64 `json:"revision"`
	Version       string `json:"version"`
	Distributor   string `json:"distributor"`
	SentChunks    int    `json:"sent_chunks"`
	SentBytes     int64  `json:"sent_bytes"`
	AlreadyStored bool   `json:"already_stored"`
}

// publishArgs is the command line that publishes ref from the publisher
// store to d as pub-1.
func (nw *network) publishArgs(ref string, d *node) []string {
	return []string{"publish", "--store", nw.store, ref, "--to", d.addr,
		"--ca", filepath.Join(nw.pki, "ca.crt"), "--cert", filepath.Join(nw.pki, "pub-1.crt"), "--key", filepath.Join(nw.pki, "pub-1.key")}
}

// publish pushes ref to d and returns what it sent.
func (nw *network) publish(ref string, d *node) publishResult {
	nw.t.Helper()
	var res publishResult
	tedJSON(nw.t, &res, nw.publishArgs(ref, d)...)
	return res
}

// channel says who may publish into a channel and who may receive it.
type channel struct {
	publishers, children []string
	// send, if set, is the channel's send schedule (a name in the
	// distributor's schedule file).
	send string
}

// distributorSpec is what differs between distributors.
type distributorSpec struct {
	parents  []string
	channels map[string]channel
	// trust defaults to the network's publisher key.
	trust []string
	// schedules, if set, is the schedule file, relative to the config's
	// directory (the network's).
	schedules string
	// clusters, if set, is the clusters section: each cluster's member
	// certificates.
	clusters map[string][]string
	// extra are more top-level keys of the config (fleet, link).
	extra map[string]any
}

// subscriberSpec is what differs between subscribers.
type subscriberSpec struct {
	parents []string
	// channels defaults to [web].
	channels []string
	// trust defaults to the network's publisher key.
	trust []string
	// tls, if set, replaces the certificate files the network issues.
	tls *tlsSpec
	// link, if set, is the config's link block (timeouts).
	link map[string]string
	// schedules, if set, is the schedule file, relative to the config's
	// directory (the network's); extract, if set, the extract schedule.
	schedules, extract string
	// extra are more top-level keys of the config (agent).
	extra map[string]any
}

type tlsSpec struct{ ca, cert, key string }

// node is one daemon.
type node struct {
	nw   *network
	name string
	// role is the command: distributor or subscriber.
	role string
	// config, dataDir and logPath are absolute.
	config, dataDir, logPath string
	// root is a subscriber's root, target is app's directory under it.
	root, target string
	// addr is a distributor's QUIC address; statusAddr the HTTP one.
	addr, statusAddr string
	// values is the config, as written.
	values map[string]any
	// env is added to the environment of the next runs.
	env []string
	// netns, if set, is the network namespace the next runs are in
	// (netns_test.go): `ip netns exec` execs ted, so the pid is ted's.
	netns string

	mu   sync.Mutex
	proc *process
	// logStart is the log's size when the running process started.
	logStart int64
}

// process is one run of a daemon.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's, once done is closed
}

// distributor configures and starts a distributor named name, issuing its
// certificate.
func (nw *network) distributor(name string, spec distributorSpec) *node {
	nw.t.Helper()
	nw.issue(name, "distributor")
	channels := map[string]any{}
	for ch, c := range spec.channels {
		v := map[string]any{}
		if c.publishers != nil {
			v["publishers"] = c.publishers
		}
		if c.children != nil {
			v["children"] = c.children
		}
		if c.send != "" {
			v["send"] = c.send
		}
		channels[ch] = v
	}
	values := map[string]any{
		"name":     name,
		"data_dir": "./var/" + name,
		"tls":      map[string]string{"ca": "pki/ca.crt", "cert": "pki/" + name + ".crt", "key": "pki/" + name + ".key"},
		"trust":    nw.relTrust(spec.trust),
		"channels": channels,
	}
	if len(spec.parents) > 0 {
		values["parents"] = spec.parents
	}
	if spec.schedules != "" {
		values["schedules"] = spec.schedules
	}
	if len(spec.clusters) > 0 {
		clusters := map[string]any{}
		for cl, members := range spec.clusters {
			clusters[cl] = map[string]any{"members": members}
		}
		values["clusters"] = clusters
	}
	for k, v := range spec.extra {
		values[k] = v
	}
	n := nw.newNode(name, "distributor", values)
	n.startFresh()
	return n
}

// subscriber configures and starts a subscriber named name, issuing its
// certificate unless spec.tls names others.
func (nw *network) subscriber(name string, spec subscriberSpec) *node {
	nw.t.Helper()
	tls := map[string]string{"ca": "pki/ca.crt", "cert": "pki/" + name + ".crt", "key": "pki/" + name + ".key"}
	if spec.tls != nil {
		tls = map[string]string{"ca": spec.tls.ca, "cert": spec.tls.cert, "key": spec.tls.key}
	} else {
		nw.issue(name, "subscriber")
	}
	channels := spec.channels
	if channels == nil {
		channels = []string{"web"}
	}
	values := map[string]any{
		"name":     name,
		"parents":  spec.parents,
		"data_dir": "./var/" + name,
		"tls":      tls,
		"channels": channels,
		"trust":    nw.relTrust(spec.trust),
		"root":     "./srv/" + name,
	}
	if spec.link != nil {
		values["link"] = spec.link
	}
	if spec.schedules != "" {
		values["schedules"] = spec.schedules
	}
	if spec.extract != "" {
		values["extract"] = spec.extract
	}
	for k, v := range spec.extra {
		values[k] = v
	}
	n := nw.newNode(name, "subscriber", values)
	n.root = filepath.Join(nw.dir, "srv", name)
	n.target = filepath.Join(n.root, "app")
	n.startFresh()
	return n
}

// relTrust returns the trust list for a config: paths relative to nw.dir.
func (nw *network) relTrust(keys []string) []string {
	if len(keys) == 0 {
		keys = []string{nw.trustKey}
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		rel, err := filepath.Rel(nw.dir, k)
		if err != nil {
			rel = k
		}
		out[i] = rel
	}
	return out
}

func (nw *network) newNode(name, role string, values map[string]any) *node {
	n := &node{
		nw: nw, name: name, role: role, values: values,
		config:  filepath.Join(nw.dir, name+".yaml"),
		dataDir: filepath.Join(nw.dir, "var", name),
		logPath: filepath.Join(nw.dir, "logs", name+".log"),
	}
	nw.mu.Lock()
	nw.nodes = append(nw.nodes, n)
	nw.mu.Unlock()
	return n
}

// writeConfig writes the node's config with fresh ports. JSON is YAML.
func (n *node) writeConfig() {
	n.nw.t.Helper()
	if n.role == "distributor" {
		n.addr = freePort(n.nw.t, "udp")
		n.values["listen"] = n.addr
	}
	n.statusAddr = freePort(n.nw.t, "tcp")
	n.values["status_listen"] = n.statusAddr
	data, err := json.MarshalIndent(n.values, "", "  ")
	if err != nil {
		n.nw.t.Fatal(err)
	}
	if err := os.WriteFile(n.config, data, 0o644); err != nil {
		n.nw.t.Fatal(err)
	}
}

// freePort returns a 127.0.0.1 port that was free a moment ago.
func freePort(t *testing.T, network string) string {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
}

// startFresh writes the config and starts the daemon, trying other ports
// if another process took one of those chosen meanwhile. Only a node that
// nothing refers to yet may change ports, so this is for a first start.
func (n *node) startFresh() {
	n.nw.t.Helper()
	for try := 1; ; try++ {
		n.writeConfig()
		err := n.tryStart()
		if err == nil {
			return
		}
		if try == 3 || !strings.Contains(err.Error(), "address already in use") {
			n.nw.t.Fatalf("start %s: %v", n.name, err)
		}
	}
}

// start starts the daemon again with the same config (after stop or kill)
// and waits until it runs.
func (n *node) start() {
	n.nw.t.Helper()
	if err := n.tryStart(); err != nil {
		n.nw.t.Fatalf("start %s: %v", n.name, err)
	}
}

// tryStart starts the process and waits for its "running" log line; it
// returns the log of this run if the process exits first.
func (n *node) tryStart() error {
	n.mu.Lock()
	if n.proc != nil {
		n.mu.Unlock()
		return fmt.Errorf("%s is running", n.name)
	}
	n.mu.Unlock()
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	info, err := logf.Stat()
	if err != nil {
		return err
	}
	cmd := exec.Command(tedBinary, n.role, "run", "--config", n.config)
	if n.netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", n.netns}, cmd.Args...)...)
	}
	cmd.Dir = n.nw.cwd
	cmd.Env = append(os.Environ(), n.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A daemon must not outlive a test binary that dies without cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	n.mu.Lock()
	n.proc, n.logStart = p, info.Size()
	n.mu.Unlock()

	running := n.role + " running"
	deadline := time.After(waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			n.mu.Lock()
			n.proc = nil
			n.mu.Unlock()
			return fmt.Errorf("exited at start (%v):\n%s", p.err, n.runLog())
		case <-deadline:
			return fmt.Errorf("no %q line in %s:\n%s", running, waitTimeout, n.runLog())
		case <-tick.C:
		}
		if strings.Contains(n.runLog(), running) {
			return nil
		}
	}
}

// runLog is the log of the current (or last) run.
func (n *node) runLog() string {
	n.mu.Lock()
	start := n.logStart
	n.mu.Unlock()
	all := n.log()
	if int64(len(all)) < start {
		return all
	}
	return all[start:]
}

// log is the node's whole log, every run.
func (n *node) log() string {
	b, err := os.ReadFile(n.logPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		n.nw.t.Errorf("read log of %s: %v", n.name, err)
	}
	return string(b)
}

// stopTimeout bounds a clean stop: a daemon checkpoints and goes.
const stopTimeout = 20 * time.Second

// stop sends SIGTERM and fails the test unless the daemon exits 0 in time.
func (n *node) stop() {
	n.nw.t.Helper()
	if err := n.signal(syscall.SIGTERM, stopTimeout); err != nil {
		n.nw.t.Errorf("stop %s: %v", n.name, err)
	}
}

// kill sends SIGKILL and waits for the process to go.
func (n *node) kill() {
	n.nw.t.Helper()
	err := n.signal(syscall.SIGKILL, stopTimeout)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		n.nw.t.Fatalf("kill %s: %v", n.name, err)
	}
}

// waitKilled waits until the daemon dies of SIGKILL on its own (a fault
// hook) and fails the test if it exits otherwise.
func (n *node) waitKilled() {
	n.nw.t.Helper()
	err := n.waitEnded()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		n.nw.t.Fatalf("%s exited with %v, want SIGKILL:\n%s", n.name, err, n.runLog())
	}
}

// waitEnded waits for the daemon to end, however it does (an upgrade
// crash test kills one process of two, and the other exits then), and
// returns how it ended.
func (n *node) waitEnded() error {
	n.nw.t.Helper()
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		n.nw.t.Fatalf("%s is not running", n.name)
	}
	select {
	case <-p.done:
	case <-time.After(waitTimeout):
		n.nw.t.Fatalf("%s did not end within %s:\n%s", n.name, waitTimeout, n.runLog())
	}
	n.mu.Lock()
	n.proc = nil
	n.mu.Unlock()
	return p.err
}

// signal sends sig and waits up to timeout for the exit; it returns the
// exit error (nil for exit 0), killing the process if it does not exit.
func (n *node) signal(sig syscall.Signal, timeout time.Duration) error {
	n.mu.Lock()
	p := n.proc
	n.proc = nil
	n.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%s is not running", n.name)
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		// Hung: SIGQUIT has the Go runtime write every goroutine's stack
		// to the log, then it exits; the stacks say where it hung.
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		return fmt.Errorf("did not exit within %s of %v (its goroutines, at SIGQUIT, end its log):\n%s", timeout, sig, hungStacks(n.log()))
	}
}

// hungStacks is the part of a log a SIGQUIT wrote that says where a
// daemon hung: the goroutines in TED's own code, those waiting on a lock
// or a channel first, at most 200 lines.
func hungStacks(log string) string {
	i := strings.Index(log, "SIGQUIT: quit")
	if i < 0 {
		return "(no stacks)"
	}
	var blocked, rest []string
	for _, g := range strings.Split(log[i:], "\n\n") {
		switch {
		case !strings.Contains(g, "ted/"):
		case strings.Contains(g, "[sync.Mutex") || strings.Contains(g, "[semacquire") || strings.Contains(g, "[chan send") ||
			strings.Contains(g, "[chan receive") || strings.Contains(g, "[sync.WaitGroup"):
			blocked = append(blocked, g)
		default:
			rest = append(rest, g)
		}
	}
	out := strings.Split(strings.Join(append(blocked, rest...), "\n\n"), "\n")
	return strings.Join(out[:min(len(out), 200)], "\n")
}

// running reports whether the daemon's process is alive.
func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return false
	}
	select {
	case <-n.proc.done:
		return false
	default:
		return true
	}
}

// cleanup stops every daemon at once, checks they exit 0, and prints the
// logs of a failed test.
func (nw *network) cleanup() {
	nw.mu.Lock()
	nodes := append([]*node(nil), nw.nodes...)
	nw.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		n.mu.Lock()
		p := n.proc
		n.mu.Unlock()
		switch {
		case n.running():
			wg.Go(func() { errs[i] = n.signal(syscall.SIGTERM, stopTimeout) })
		case p != nil:
			// It died by itself during the test: its last words first,
			// before the logs that CI may cut.
			errs[i] = fmt.Errorf("exited during the test: %v; its log ends:\n%s", p.err, lastLines(n.log(), 12))
		}
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			nw.t.Errorf("%s %s did not stop cleanly: %v", nodes[i].role, nodes[i].name, err)
		}
	}
	// TED_NETWORK_LOGS=1 prints the logs of passing tests too.
	if nw.t.Failed() || os.Getenv("TED_NETWORK_LOGS") == "1" {
		for _, n := range nodes {
			nw.t.Logf("==== log of %s %s (%s)\n%s", n.role, n.name, n.logPath, n.log())
		}
	}
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// waitFor polls cond every 100 ms until it holds, failing the test after
// waitTimeout with what cond last said.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	waitForWithin(t, waitTimeout, what, cond)
}

func waitForWithin(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		<-tick.C
	}
}

// logLine returns the first line of the current run's log that holds
// every one of parts, or "".
func (n *node) logLine(parts ...string) string {
	for line := range strings.SplitSeq(n.runLog(), "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			return line
		}
	}
	return ""
}

// waitLog waits for a line of the current run's log holding every one of
// parts and returns it.
func (n *node) waitLog(parts ...string) string {
	n.nw.t.Helper()
	var line string
	waitFor(n.nw.t, fmt.Sprintf("a line of %s's log with %q", n.name, parts), func() (bool, string) {
		line = n.logLine(parts...)
		return line != "", "no such line"
	})
	return line
}

// revisionState is one revision in the status JSON (`ted subscriber status
// --json`, /api/status).
type revisionState struct {
	Name       string `json:"name"`
	Revision   uint64 `json:"revision"`
	Version    string `json:"version"`
	State      string `json:"state"`
	Reason     string `json:"reason"`
	Error      string `json:"error"`
	Chunks     int    `json:"chunks"`
	HaveChunks int    `json:"have_chunks"`
}

// subscriberStatus is `ted subscriber status --json`.
type subscriberStatus struct {
	Node          string `json:"node"`
	Role          string `json:"role"`
	ActiveNode    string `json:"active_node"`
	Problem       string `json:"problem"`
	Agent         string `json:"agent"`
	Parent        string `json:"parent"`
	Distributions []struct {
		Name      string          `json:"name"`
		Revisions []revisionState `json:"revisions"`
	} `json:"distributions"`
}

// revision returns the state of app@rev.
func (s subscriberStatus) revision(rev uint64) (revisionState, bool) {
	return s.distState("app", rev)
}

// distState returns the state of name@rev in a subscriber's status.
func (s subscriberStatus) distState(name string, rev uint64) (revisionState, bool) {
	for _, d := range s.Distributions {
		for _, r := range d.Revisions {
			if d.Name == name && r.Revision == rev {
				return r, true
			}
		}
	}
	return revisionState{}, false
}

// distributorStatus is `ted distributor status --json`.
type distributorStatus struct {
	Node          string         `json:"node"`
	Parent        string         `json:"parent"`
	Distributions []heldRevision `json:"distributions"`
	Incoming      []heldRevision `json:"incoming"`
	Children      []childStatus  `json:"children"`
}

type heldRevision struct {
	Name     string `json:"name"`
	Revision uint64 `json:"revision"`
	Version  string `json:"version"`
	Files    int    `json:"files"`
	Bytes    int64  `json:"bytes"`
}

type childStatus struct {
	Name        string          `json:"name"`
	Role        string          `json:"role"`
	ActiveNode  string          `json:"active_node"`
	Certificate string          `json:"certificate"`
	Connected   bool            `json:"connected"`
	Revisions   []revisionState `json:"revisions"`
}

// holds reports whether the distributor stores app@rev.
func (s distributorStatus) holds(rev uint64) bool {
	for _, d := range s.Distributions {
		if d.Name == "app" && d.Revision == rev {
			return true
		}
	}
	return false
}

// child returns the named child.
func (s distributorStatus) child(name string) (childStatus, bool) {
	for _, c := range s.Children {
		if c.Name == name {
			return c, true
		}
	}
	return childStatus{}, false
}

// childState returns the state a child reported for app@rev, or "".
func (s distributorStatus) childState(name string, rev uint64) string {
	c, _ := s.child(name)
	for _, r := range c.Revisions {
		if r.Name == "app" && r.Revision == rev {
			return r.State
		}
	}
	return ""
}

// status asks the daemon for its status over the admin socket, as
// `ted ... status` does; cheap enough to poll.
func (n *node) status(out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return admin.Get(ctx, admin.SocketPath(n.dataDir), "/api/status", out)
}

func (n *node) subscriberStatus() (subscriberStatus, error) {
	var st subscriberStatus
	err := n.status(&st)
	return st, err
}

func (n *node) distributorStatus() (distributorStatus, error) {
	var st distributorStatus
	err := n.status(&st)
	return st, err
}

// statusCLI runs `ted ROLE status --config F --json`.
func (n *node) statusCLI(out any) {
	n.nw.t.Helper()
	tedJSON(n.nw.t, out, n.role, "status", "--config", n.config)
}

// waitState waits until the subscriber says app@rev is in state and
// returns that state.
func (n *node) waitState(rev uint64, state string) revisionState {
	n.nw.t.Helper()
	return n.waitDistState("app", rev, state)
}

// distState returns the subscriber's state of name@rev now (its Error
// says why, if the status could not be had).
func (n *node) distState(name string, rev uint64) revisionState {
	st, err := n.subscriberStatus()
	if err != nil {
		return revisionState{Error: err.Error()}
	}
	r, _ := st.distState(name, rev)
	return r
}

// waitDistState waits until the subscriber says name@rev is in state and
// returns that state.
func (n *node) waitDistState(name string, rev uint64, state string) revisionState {
	n.nw.t.Helper()
	var got revisionState
	waitFor(n.nw.t, fmt.Sprintf("%s to say %s@%d is %s", n.name, name, rev, state), func() (bool, string) {
		got = n.distState(name, rev)
		return got.State == state, fmt.Sprintf("%+v", got)
	})
	return got
}

// waitDistributor waits until the distributor's status satisfies cond.
func (n *node) waitDistributor(what string, cond func(distributorStatus) bool) distributorStatus {
	n.nw.t.Helper()
	var got distributorStatus
	waitFor(n.nw.t, n.name+": "+what, func() (bool, string) {
		st, err := n.distributorStatus()
		if err != nil {
			return false, err.Error()
		}
		got = st
		return cond(st), fmt.Sprintf("%+v", st)
	})
	return got
}

// metric scrapes one unlabelled series from the daemon's /metrics.
func (n *node) metric(name string) float64 {
	n.nw.t.Helper()
	v, ok := sample(n.scrape(), name)
	if !ok {
		n.nw.t.Fatalf("%s serves no %s", n.name, name)
	}
	return v
}

// requireTree fails unless dir holds exactly the tree at src, file by file
// (content, mode, symlink targets), apart from the paths in extra (relative
// to dir), which TED did not put there.
func requireTree(t *testing.T, dir, src string, extra ...string) {
	t.Helper()
	got := listing(t, dir)
	if len(extra) > 0 {
		var kept []string
		for line := range strings.SplitSeq(got, "\n") {
			path, _, _ := strings.Cut(line, " ")
			skip := false
			for _, e := range extra {
				if path == e {
					skip = true
				}
			}
			if !skip {
				kept = append(kept, line)
			}
		}
		got = strings.Join(kept, "\n")
	}
	if want := listing(t, src); got != want {
		t.Fatalf("tree %s differs from %s:\n%s\nwant\n%s", dir, src, got, want)
	}
}

// requireNothingExtracted fails if the subscriber's root holds anything.
func requireNothingExtracted(t *testing.T, n *node) {
	t.Helper()
	entries, err := os.ReadDir(n.root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		t.Fatalf("%s extracted something: %s", n.name, listing(t, n.root))
	}
}
