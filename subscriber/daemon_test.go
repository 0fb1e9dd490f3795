package subscriber

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ted/distribution"
	"ted/install"
	"ted/pki"
	"ted/store"
	"ted/transport"
)

// daemonWait bounds every wait on the daemon: a hang fails the test that
// caused it instead of the whole run.
const daemonWait = 10 * time.Second

var (
	daemonSelf   = transport.Identity{Name: "sub-1", Role: pki.RoleSubscriber}
	daemonParent = transport.Identity{Name: "dist-1", Role: pki.RoleDistributor}
)

// daemonKey is the key the subscriber trusts.
func daemonKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed([]byte("ted subscriber daemon tests: key"))
}

func daemonLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitUntil polls cond until it holds, failing the test after daemonWait.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(daemonWait)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, daemonWait)
		}
		<-tick.C
	}
}

// fakeParent is a distributor as the subscriber sees it: on every session
// it welcomes the subscriber, offers the revisions in greet, serves chunks
// from its store (counting them), and keeps every status it is sent.
type fakeParent struct {
	t     *testing.T
	store *store.Memory
	log   *slog.Logger
	wg    sync.WaitGroup

	mu       sync.Mutex
	greet    []*distribution.Signed
	sess     transport.Session // the session now, if any
	control  *transport.Conn
	sessions int
	hellos   []transport.Hello
	statuses []sessionStatus
	served   map[distribution.ChunkID]int
}

// sessionStatus is a status and the session (1, 2, ...) it came on.
type sessionStatus struct {
	session int
	status  *transport.Status
}

// newFakeParent returns a parent that stops, with every session, before
// the test's earlier cleanups run: create it before the subscriber.
func newFakeParent(t *testing.T) *fakeParent {
	p := &fakeParent{t: t, store: store.NewMemory(), log: daemonLog(t), served: map[distribution.ChunkID]int{}}
	t.Cleanup(func() {
		p.disconnect()
		done := make(chan struct{})
		go func() { p.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(daemonWait):
			t.Errorf("the fake parent did not stop within %v", daemonWait)
		}
		_ = p.store.Close()
	})
	return p
}

// publish builds revision rev of "app" from files into the parent's store,
// signed with key, and stores it there as a distributor would.
func (p *fakeParent) publish(key ed25519.PrivateKey, files map[string][]byte, rev uint64) (*distribution.Signed, *distribution.Manifest) {
	p.t.Helper()
	m, _, err := distribution.BuildDir(context.Background(), writeTree(p.t, files), distribution.BuildOptions{
		Name: "app", Revision: rev, Version: fmt.Sprintf("1.%d", rev), Channels: []string{"web"},
		Created: time.Unix(1_700_000_000+int64(rev), 0),
	}, p.store)
	if err != nil {
		p.t.Fatal(err)
	}
	s, err := distribution.Sign(m, key)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.store.AddRevision(s, m); err != nil && !errors.Is(err, store.ErrExists) {
		p.t.Fatal(err)
	}
	return s, m
}

// setGreet sets the offers made at the start of every later session.
func (p *fakeParent) setGreet(offers ...*distribution.Signed) {
	p.mu.Lock()
	p.greet = offers
	p.mu.Unlock()
}

// dial is the subscriber's DialFunc.
func (p *fakeParent) dial(ctx context.Context, addr string) (transport.Session, error) {
	if addr != "parent" {
		return nil, fmt.Errorf("no route to %s", addr)
	}
	mine, theirs := transport.NewPipe(daemonSelf, daemonParent)
	p.wg.Add(1)
	go p.serve(theirs)
	return mine, nil
}

func (p *fakeParent) serve(sess transport.Session) {
	defer p.wg.Done()
	defer sess.Close(nil)
	control, hello, err := transport.ServerHello(context.Background(), sess, &transport.Welcome{Name: daemonParent.Name, Agent: "test"},
		func(*transport.Hello) error { return nil })
	if err != nil {
		p.log.Warn("fake parent: hello", "err", err)
		return
	}
	defer control.Close()
	p.mu.Lock()
	p.sessions++
	n := p.sessions
	p.sess, p.control = sess, control
	p.hellos = append(p.hellos, *hello)
	greet := slices.Clone(p.greet)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		if p.sess == sess {
			p.sess, p.control = nil, nil
		}
		p.mu.Unlock()
	}()

	serving := make(chan struct{})
	go func() {
		defer close(serving)
		_ = transport.ServeChunks(context.Background(), sess, transport.ChunkProviderFunc(p.chunk), nil, p.log)
	}()
	defer func() {
		sess.Close(nil)
		<-serving
	}()
	for _, s := range greet {
		if err := control.Send(&transport.Offer{Signed: s}); err != nil {
			return
		}
	}
	for {
		msg, err := control.Receive()
		if err != nil {
			return
		}
		if st, ok := msg.(*transport.Status); ok {
			p.mu.Lock()
			p.statuses = append(p.statuses, sessionStatus{n, st})
			p.mu.Unlock()
		}
	}
}

// chunk serves a chunk of the store, counting it.
func (p *fakeParent) chunk(_ context.Context, id distribution.ChunkID) ([]byte, error) {
	data, err := p.store.Chunk(id)
	if err == nil {
		p.mu.Lock()
		p.served[id]++
		p.mu.Unlock()
	}
	return data, err
}

// offer sends an offer on the session now, waiting for one.
func (p *fakeParent) offer(s *distribution.Signed) {
	p.t.Helper()
	var control *transport.Conn
	waitUntil(p.t, "a session with the subscriber", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		control = p.control
		return control != nil
	})
	if err := control.Send(&transport.Offer{Signed: s}); err != nil {
		p.t.Fatal(err)
	}
}

// disconnect ends the session now, if any.
func (p *fakeParent) disconnect() {
	p.mu.Lock()
	sess := p.sess
	p.mu.Unlock()
	if sess != nil {
		sess.Close(errors.New("the test drops the session"))
	}
}

// takeServed returns the chunks served so far and starts counting again.
func (p *fakeParent) takeServed() map[distribution.ChunkID]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	served := p.served
	p.served = map[distribution.ChunkID]int{}
	return served
}

// reported reports whether the subscriber told this parent, on session
// (0: any), that a revision is in state.
func (p *fakeParent) reported(session int, name string, rev uint64, state string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.statuses {
		if session != 0 && s.session != session {
			continue
		}
		for _, r := range s.status.Revisions {
			if r.Name == name && r.Revision == rev && r.State == state {
				return true
			}
		}
	}
	return false
}

// waitReported waits until the subscriber has reported a state to this
// parent.
func (p *fakeParent) waitReported(session int, name string, rev uint64, state string) {
	p.t.Helper()
	waitUntil(p.t, fmt.Sprintf("the parent told %s@%d is %s", name, rev, state), func() bool {
		return p.reported(session, name, rev, state)
	})
}

// daemon is a subscriber daemon over a store, an installer root and a
// state directory, as a restart finds them.
type daemon struct {
	t     *testing.T
	cfg   Config
	store *store.Memory
	state string
}

func newDaemon(t *testing.T) *daemon {
	cfg := DefaultConfig()
	cfg.Name = daemonSelf.Name
	cfg.Agent = "test"
	cfg.Parents.Addrs = []string{"parent"}
	cfg.Parents.RetryMin, cfg.Parents.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	cfg.Channels = []string{"web"}
	cfg.Trust = distribution.NewTrust(daemonKey().Public().(ed25519.PublicKey))
	cfg.Root = t.TempDir()
	cfg.RetryMin, cfg.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	cfg.StatusEvery = 5 * time.Millisecond
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	return &daemon{t: t, cfg: cfg, store: st, state: t.TempDir()}
}

// running is a started Subscriber; stop ends its Run and returns its error.
type running struct {
	*Subscriber
	inst *install.Installer
	stop func() error
}

// start runs a new Subscriber (and Installer) on the daemon's store and
// directories until the test ends or stop is called.
func (d *daemon) start(dial transport.DialFunc) *running {
	d.t.Helper()
	log := daemonLog(d.t)
	inst, err := install.New(d.cfg.Root, d.state, d.store, install.Options{Log: log, Keep: d.cfg.KeepRevisions})
	if err != nil {
		d.t.Fatal(err)
	}
	s, err := New(d.cfg, d.store, inst, log)
	if err != nil {
		d.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, dial) }()
	r := &running{Subscriber: s, inst: inst}
	r.stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(daemonWait):
			return fmt.Errorf("Run did not return within %v of its context ending", daemonWait)
		}
	})
	d.t.Cleanup(func() {
		if err := r.stop(); err != nil {
			d.t.Error(err)
		}
	})
	return r
}

// target is where revisions of "app" are extracted.
func (d *daemon) target() string { return filepath.Join(d.cfg.Root, "app") }

// stateOf returns the subscriber's state of a revision.
func stateOf(s *Subscriber, name string, rev uint64) (transport.RevisionState, bool) {
	for _, d := range s.Status().Distributions {
		if d.Name != name {
			continue
		}
		for _, r := range d.Revisions {
			if r.Revision == rev {
				return r, true
			}
		}
	}
	return transport.RevisionState{}, false
}

// waitState waits until a revision is in state, and returns it.
func waitState(t *testing.T, s *Subscriber, name string, rev uint64, state string) transport.RevisionState {
	t.Helper()
	var r transport.RevisionState
	waitUntil(t, fmt.Sprintf("%s@%d %s", name, rev, state), func() bool {
		var ok bool
		r, ok = stateOf(s, name, rev)
		return ok && r.State == state
	})
	return r
}

// writeTree writes files (slash-separated paths) to a new directory.
func writeTree(t *testing.T, files map[string][]byte) string {
	dir := t.TempDir()
	for name, data := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o644); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	return dir
}

// readTree returns every regular file under dir by slash-separated path,
// failing on anything else but directories.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: %s, want a regular file", p, d.Type())
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// assertTree checks that dir holds m and exactly files.
func assertTree(t *testing.T, m *distribution.Manifest, dir string, files map[string][]byte) {
	t.Helper()
	if err := install.VerifyTree(context.Background(), m, dir); err != nil {
		t.Error(err)
	}
	got := readTree(t, dir)
	if !maps.EqualFunc(got, files, slices.Equal) {
		t.Errorf("%s holds %v, want %v", dir, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(files)))
	}
}

// appRev1 and appRev2 are two revisions of a tree; rev 2 changes one
// byte of a file of many chunks and a small file.
func appRev1() map[string][]byte {
	app := make([]byte, 256<<10) // random bytes, the same every time: several chunks
	_, _ = rand.NewChaCha8([32]byte{1}).Read(app)
	return map[string][]byte{
		"bin/app":      app,
		"etc/app.conf": []byte("listen = 8080\n"),
		"README":       []byte("read me\n"),
	}
}

func appRev2() map[string][]byte {
	files := appRev1()
	files["bin/app"][128<<10] ^= 0xff
	files["etc/app.conf"] = []byte("listen = 9090\n")
	return files
}

// newChunks returns the chunks of m that old lacks.
func newChunks(m, old *distribution.Manifest) map[distribution.ChunkID]int {
	fresh := map[distribution.ChunkID]int{}
	for _, id := range m.ChunkIDs() {
		if !slices.Contains(old.ChunkIDs(), id) {
			fresh[id] = 1
		}
	}
	return fresh
}

// eachOnce counts every chunk of m once.
func eachOnce(m *distribution.Manifest) map[distribution.ChunkID]int {
	all := map[distribution.ChunkID]int{}
	for _, id := range m.ChunkIDs() {
		all[id] = 1
	}
	return all
}

func TestDaemonReceivesAndExtracts(t *testing.T) {
	p := newFakeParent(t)
	s1, m1 := p.publish(daemonKey(), appRev1(), 1)
	p.setGreet(s1)
	d := newDaemon(t)
	s := d.start(p.dial)

	r := waitState(t, s.Subscriber, "app", 1, StateExtracted)
	if n := len(m1.ChunkIDs()); r.Chunks != n || r.HaveChunks != n || r.Error != "" || r.Version != "1.1" {
		t.Errorf("state %+v, want all %d chunks and no error", r, n)
	}
	assertTree(t, m1, d.target(), appRev1())
	if inst, ok, err := s.inst.InstalledRevision("app"); err != nil || !ok || inst.Revision != 1 {
		t.Errorf("installed: %+v, %v, %v; want app@1", inst, ok, err)
	}
	p.waitReported(1, "app", 1, StateExtracted)
	if served := p.takeServed(); !maps.Equal(served, eachOnce(m1)) {
		t.Errorf("%d chunks asked for, want each of the %d of app@1 once", len(served), len(m1.ChunkIDs()))
	}
	if st := s.Status(); st.Parent != "parent" || st.Node != daemonSelf.Name {
		t.Errorf("status node %q, parent %q", st.Node, st.Parent)
	}
	p.mu.Lock()
	hello := p.hellos[0]
	p.mu.Unlock()
	if hello.Name != daemonSelf.Name || !slices.Equal(hello.Channels, []string{"web"}) {
		t.Errorf("hello %+v, want %s asking for web", hello, daemonSelf.Name)
	}

	// A small change: only its new chunks travel.
	s2, m2 := p.publish(daemonKey(), appRev2(), 2)
	fresh := newChunks(m2, m1)
	if len(fresh) == 0 || len(fresh) >= len(m2.ChunkIDs()) {
		t.Fatalf("fixture: %d of %d chunks new in rev 2, want some but not all", len(fresh), len(m2.ChunkIDs()))
	}
	p.offer(s2)
	waitState(t, s.Subscriber, "app", 2, StateExtracted)
	assertTree(t, m2, d.target(), appRev2())
	if served := p.takeServed(); !maps.Equal(served, fresh) {
		t.Errorf("%d chunks asked for, want the %d new in rev 2, once each", len(served), len(fresh))
	}
	if r, _ := stateOf(s.Subscriber, "app", 1); r.State != StateSuperseded {
		t.Errorf("app@1 %s, want %s", r.State, StateSuperseded)
	}
	p.waitReported(1, "app", 2, StateExtracted)
}

func TestDaemonRefusesUntrustedOffer(t *testing.T) {
	p := newFakeParent(t)
	stranger := ed25519.NewKeyFromSeed([]byte("ted subscriber daemon: stranger!"))
	bad, _ := p.publish(stranger, appRev1(), 1)
	p.setGreet(bad)
	d := newDaemon(t)
	s := d.start(p.dial)

	r := waitState(t, s.Subscriber, "app", 1, StateFailed)
	if !strings.Contains(r.Error, "untrusted") {
		t.Errorf("error %q does not say the key is untrusted", r.Error)
	}
	p.waitReported(1, "app", 1, StateFailed)
	if served := p.takeServed(); len(served) != 0 {
		t.Errorf("%d chunks asked for a refused revision", len(served))
	}
	if _, err := os.Lstat(d.target()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("target after a refused offer: %v", err)
	}
	if _, ok, err := s.inst.InstalledRevision("app"); ok || err != nil {
		t.Errorf("installed after a refused offer: %v, %v", ok, err)
	}
	if names, err := d.store.Distributions(); err != nil || len(names) != 0 {
		t.Errorf("stored after a refused offer: %v, %v", names, err)
	}

	// The same revision signed by the trusted key is taken.
	good, m := p.publish(daemonKey(), appRev1(), 1)
	p.offer(good)
	waitState(t, s.Subscriber, "app", 1, StateExtracted)
	assertTree(t, m, d.target(), appRev1())
}

func TestDaemonRefusesRollback(t *testing.T) {
	p := newFakeParent(t)
	s1, _ := p.publish(daemonKey(), appRev1(), 1)
	s2, m2 := p.publish(daemonKey(), appRev2(), 2)
	p.setGreet(s2)
	d := newDaemon(t)
	s := d.start(p.dial)
	waitState(t, s.Subscriber, "app", 2, StateExtracted)
	p.takeServed()

	// A new session offers rev 1, as a parent restored from an old backup
	// would.
	p.setGreet(s1)
	p.disconnect()
	r := waitState(t, s.Subscriber, "app", 1, StateFailed)
	if !strings.Contains(r.Error, transport.ErrRollback.Error()) || !strings.Contains(r.Error, "app@2") {
		t.Errorf("error %q does not name the rollback from app@2", r.Error)
	}
	p.waitReported(2, "app", 1, StateFailed)
	if r, _ := stateOf(s.Subscriber, "app", 2); r.State != StateExtracted {
		t.Errorf("app@2 %s after the rollback offer, want %s", r.State, StateExtracted)
	}
	if inst, ok, err := s.inst.InstalledRevision("app"); err != nil || !ok || inst.Revision != 2 {
		t.Errorf("installed: %+v, %v, %v; want app@2", inst, ok, err)
	}
	assertTree(t, m2, d.target(), appRev2())
	if served := p.takeServed(); len(served) != 0 {
		t.Errorf("%d chunks asked for after the rollback offer", len(served))
	}
}

func TestDaemonRestartKeepsExtractedRevision(t *testing.T) {
	p := newFakeParent(t)
	s2, m2 := p.publish(daemonKey(), appRev2(), 2)
	p.setGreet(s2)
	d := newDaemon(t)
	first := d.start(p.dial)
	waitState(t, first.Subscriber, "app", 2, StateExtracted)
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
	p.takeServed()

	// The parent offers rev 2 again on the new session, as it would to any
	// child that connects.
	again := d.start(p.dial)
	r := waitState(t, again.Subscriber, "app", 2, StateExtracted)
	if n := len(m2.ChunkIDs()); r.Chunks != n || r.HaveChunks != n {
		t.Errorf("state %+v after the restart, want all %d chunks", r, n)
	}
	p.waitReported(2, "app", 2, StateExtracted)
	assertTree(t, m2, d.target(), appRev2())

	// Offers are handled in order: once rev 3 is extracted, the offer of
	// rev 2 was handled (or skipped for rev 3), and only what rev 3 adds
	// has travelled.
	files := appRev2()
	files["README"] = []byte("read me again\n")
	s3, m3 := p.publish(daemonKey(), files, 3)
	p.offer(s3)
	waitState(t, again.Subscriber, "app", 3, StateExtracted)
	if served := p.takeServed(); !maps.Equal(served, newChunks(m3, m2)) {
		t.Errorf("%d chunks asked for after the restart, want the %d new in rev 3", len(served), len(newChunks(m3, m2)))
	}
	assertTree(t, m3, d.target(), files)
}

func TestDaemonStopsWhenContextEnds(t *testing.T) {
	p := newFakeParent(t)
	d := newDaemon(t)
	s := d.start(p.dial)
	waitUntil(t, "a status on the first session", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.statuses) > 0
	})
	if err := s.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	waitUntil(t, "the parent's session to end", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.sess == nil
	})
}
