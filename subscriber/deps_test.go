package subscriber

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ted/distribution"
	"ted/store"
)

// publishNamed builds revision rev of distribution name at version with
// requires into the parent's store.
func (p *fakeParent) publishNamed(key ed25519.PrivateKey, name, version string, rev uint64, requires ...string) (*distribution.Signed, *distribution.Manifest) {
	p.t.Helper()
	files := map[string][]byte{name + ".txt": []byte(name + " " + version + "\n")}
	m, _, err := distribution.BuildDir(context.Background(), writeTree(p.t, files), distribution.BuildOptions{
		Name: name, Revision: rev, Version: version, Channels: []string{"web"}, Requires: requires,
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

// TestDaemonExtractsInDependencyOrder: app requires runtime >=2.0. app
// arrives first and is blocked with a reason naming runtime; a runtime
// that does not satisfy leaves it blocked; a satisfying runtime unblocks
// it, and both are extracted.
func TestDaemonExtractsInDependencyOrder(t *testing.T) {
	p := newFakeParent(t)
	app, _ := p.publishNamed(daemonKey(), "app", "1.0.0", 1, "runtime >=2.0, <3")
	d := newDaemon(t)
	s := d.start(p.dial)

	p.offer(app)
	r := waitState(t, s.Subscriber, "app", 1, StateBlocked)
	if !strings.Contains(r.Reason, "runtime") || !strings.Contains(r.Reason, "not yet received") {
		t.Errorf("blocked reason %q, want it to name runtime, not yet received", r.Reason)
	}

	old, _ := p.publishNamed(daemonKey(), "runtime", "1.4.0", 1)
	p.offer(old)
	waitState(t, s.Subscriber, "runtime", 1, StateExtracted)
	waitUntil(t, "app to name the unsatisfying runtime", func() bool {
		r, _ = stateOf(s.Subscriber, "app", 1)
		return r.State == StateBlocked && strings.Contains(r.Reason, "runtime 1.4.0")
	})

	rt, _ := p.publishNamed(daemonKey(), "runtime", "2.1.0", 2)
	p.offer(rt)
	waitState(t, s.Subscriber, "runtime", 2, StateExtracted)
	waitState(t, s.Subscriber, "app", 1, StateExtracted)
	for _, f := range []string{"app/app.txt", "runtime/runtime.txt"} {
		if _, err := os.ReadFile(filepath.Join(d.cfg.Root, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestDaemonReportsCycle: a requires b, b requires a: both blocked, the
// reason naming the cycle.
func TestDaemonReportsCycle(t *testing.T) {
	p := newFakeParent(t)
	a, _ := p.publishNamed(daemonKey(), "a", "1.0.0", 1, "b")
	b, _ := p.publishNamed(daemonKey(), "b", "1.0.0", 1, "a")
	p.setGreet(a, b)
	d := newDaemon(t)
	s := d.start(p.dial)
	for _, name := range []string{"a", "b"} {
		waitUntil(t, name+" blocked by the cycle", func() bool {
			r, _ := stateOf(s.Subscriber, name, 1)
			return r.State == StateBlocked && strings.Contains(r.Reason, "cycle: a → b → a")
		})
	}
}
