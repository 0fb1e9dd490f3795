package distributor

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ted/distribution"
	"ted/schedule"
	"ted/store"
	"ted/transport"
)

// wavesStore holds app@5 on channel web, as far as waves look.
type wavesStore struct {
	store.Store
	latest map[string]store.RevisionInfo
}

func (s *wavesStore) Distributions() ([]string, error) {
	var out []string
	for n := range s.latest {
		out = append(out, n)
	}
	return out, nil
}

func (s *wavesStore) Revisions(n string) ([]store.RevisionInfo, error) {
	return []store.RevisionInfo{s.latest[n]}, nil
}

func newWavesDist(t *testing.T, w *Waves, dir string) *Distributor {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir = "dist-1", dir
	pk, _, _ := ed25519.GenerateKey(nil)
	cfg.Trust = distribution.NewTrust(pk)
	cfg.Channels = map[string]Channel{"web": {Publishers: []string{"pub"}, Children: []string{"web-*"}, Waves: w}}
	cfg.Clock = schedule.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := &wavesStore{latest: map[string]store.RevisionInfo{"app": {Name: "app", Revision: 5, Channels: []string{"web"}}}}
	d, err := New(cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// addSub makes name a connected subscriber child reporting revs.
func addSub(d *Distributor, name string, revs ...transport.RevisionState) {
	d.seen[name] = &ChildStatus{Name: name, Role: "subscriber", Channels: []string{"web"}, Revisions: revs}
	d.children[name] = &child{name: name, role: "subscriber", channels: []string{"web"}, ended: true}
	d.fleet.Child(d.childNode(d.seen[name], true)) // the subtree's table, which waves read
}

func opened(d *Distributor) bool {
	st := d.waves[revKey{"app", 5}]
	return st != nil && !st.Opened.IsZero()
}

// One verdict per subscriber: a newer revision still arriving does not
// count as extracted, nor twice; the rollout waits for every member.
func TestWavesOneVerdictPerSubscriber(t *testing.T) {
	d := newWavesDist(t, &Waves{Canary: "web-0*", StopAfter: 1}, "")
	addSub(d, "web-01", transport.RevisionState{Name: "app", Revision: 5, State: "extracted"},
		transport.RevisionState{Name: "app", Revision: 6, State: "receiving"})
	addSub(d, "web-02", transport.RevisionState{Name: "app", Revision: 5, State: "received"})
	d.decideWaves()
	if opened(d) {
		t.Fatal("opened while web-02 has not extracted it")
	}
}

// A share too small to choose anyone still tries the revision on one
// subscriber; NaN is no share.
func TestWavesShareChoosesOne(t *testing.T) {
	w := &Waves{Canary: "0.01%", Soak: time.Hour, StopAfter: 1}
	d := newWavesDist(t, w, "")
	for _, s := range []string{"web-01", "web-02", "web-03"} {
		if inCanary(w.Canary, s) {
			t.Skipf("%s hashes into 0.01%%: the test needs a share that chooses nobody", s)
		}
		addSub(d, s)
	}
	d.decideWaves()
	st := d.waves[revKey{"app", 5}]
	if st == nil || st.Chosen == "" || opened(d) {
		t.Fatalf("state %+v: want one chosen, not open", st)
	}
	c := &child{name: st.Chosen, role: "subscriber"}
	if d.held(revKey{"app", 5}, []string{"web"}, c) {
		t.Error("the chosen subscriber is held back")
	}
	if ParseCanary("NaN%") == nil {
		t.Error("NaN% is a share")
	}
}

// The only first-wave subscriber gone during the soak (crashed by the new
// build): the rollout does not open; back, it soaks again.
func TestWavesSoakRestartsWhenAMemberGoes(t *testing.T) {
	d := newWavesDist(t, &Waves{Canary: "web-01", Soak: time.Hour, StopAfter: 1}, "")
	clk := d.cfg.Clock.(*schedule.FakeClock)
	addSub(d, "web-01", transport.RevisionState{Name: "app", Revision: 5, State: "extracted"})
	addSub(d, "web-02")
	d.decideWaves() // healthy from now
	delete(d.children, "web-01")
	d.fleet.Child(d.childNode(d.seen["web-01"], false))
	clk.Advance(time.Hour)
	d.decideWaves()
	if opened(d) {
		t.Fatal("opened with the first wave gone")
	}
	addSub(d, "web-01", transport.RevisionState{Name: "app", Revision: 5, State: "extracted"})
	d.decideWaves()
	clk.Advance(59 * time.Minute)
	d.decideWaves()
	if opened(d) {
		t.Fatal("opened before a whole soak since it came back")
	}
	clk.Advance(time.Minute)
	d.decideWaves()
	if !opened(d) {
		t.Fatal("not opened after a whole soak")
	}
}

// A failure stops the rollout only once it has lasted the soak.
func TestWavesStopAfterLastingFailure(t *testing.T) {
	d := newWavesDist(t, &Waves{Canary: "web-01", Soak: time.Minute, StopAfter: 1}, "")
	clk := d.cfg.Clock.(*schedule.FakeClock)
	addSub(d, "web-01", transport.RevisionState{Name: "app", Revision: 5, State: "failed", Error: "transfer"})
	d.decideWaves()
	if d.waves[revKey{"app", 5}].Stopped != "" {
		t.Fatal("stopped at the first failure")
	}
	clk.Advance(time.Minute)
	d.decideWaves()
	if d.waves[revKey{"app", 5}].Stopped == "" {
		t.Fatal("not stopped after a failure that lasted the soak")
	}
	c := &child{name: "web-02", role: "subscriber"}
	if !d.held(revKey{"app", 5}, []string{"web"}, c) {
		t.Error("the rest not held back after the stop")
	}
}

// waves.json is written when a decision changes, not at every pass.
func TestWavesFileWrittenOnChange(t *testing.T) {
	dir := t.TempDir()
	d := newWavesDist(t, &Waves{Canary: "web-01", Soak: time.Hour, StopAfter: 1}, dir)
	addSub(d, "web-01", transport.RevisionState{Name: "app", Revision: 5, State: "extracted"})
	d.decideWaves() // a rollout under way: saved, it is passed down
	fi, err := os.Stat(filepath.Join(dir, WavesFile))
	if err != nil {
		t.Fatalf("the rollout under way not saved: %v", err)
	}
	d.decideWaves()
	if fi2, _ := os.Stat(filepath.Join(dir, WavesFile)); !os.SameFile(fi, fi2) {
		t.Fatal("written again while nothing was decided")
	}
	d.cfg.Clock.(*schedule.FakeClock).Advance(time.Hour)
	d.decideWaves()
	fi, err = os.Stat(filepath.Join(dir, WavesFile))
	if err != nil {
		t.Fatalf("not written once opened: %v", err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	d.decideWaves()
	if fi, _ := os.Stat(filepath.Join(dir, WavesFile)); fi.Sys().(*syscall.Stat_t).Ino != ino {
		t.Error("rewritten on a pass that changed nothing")
	}
	// Kept across a restart.
	d2 := newWavesDist(t, &Waves{Canary: "web-01", Soak: time.Hour, StopAfter: 1}, dir)
	if !opened(d2) {
		t.Error("the opening is not kept across a restart")
	}
}

// A rollout the parent passes down rules here, over this distributor's
// own waves: its subscribers outside the parent's first wave are held,
// and so is this distributor's own upgrade, until it opens; a rollout the
// parent no longer sends rules no more. Passed down again, it is the
// parent's.
func TestWavesFromTheParent(t *testing.T) {
	d := newWavesDist(t, &Waves{Canary: "web-*", Soak: time.Hour, StopAfter: 1}, t.TempDir())
	key := revKey{"app", 5}
	web1, web2 := &child{name: "web-01", role: "subscriber"}, &child{name: "web-02", role: "subscriber"}
	m := &distribution.Manifest{Name: "app", Revision: 5, Version: "2.0.0", Channels: []string{"web"}}
	if _, _, ok := d.rollouts([]string{"web"}); ok {
		t.Error("rollouts passed down before the first decision")
	}
	d.parentWaves(&transport.Waves{Rollouts: []transport.Rollout{{Name: "app", Revision: 5, Canary: "web-01", Channels: []string{"web"}}}})
	if d.held(key, m.Channels, web1) || !d.held(key, m.Channels, web2) {
		t.Errorf("held web-01 %v, web-02 %v: want the parent's first wave, web-01 only", d.held(key, m.Channels, web1), d.held(key, m.Channels, web2))
	}
	if held, why := d.waveHolds(revKey{m.Name, m.Revision}, m.Version, m.Channels); !held || !strings.Contains(why, "web-01") {
		t.Errorf("own upgrade held %v (%s): want held until the rollout opens", held, why)
	}
	addSub(d, "web-02", transport.RevisionState{Name: "app", Revision: 5, State: "extracted"})
	d.decideWaves()
	if st := d.waves[key]; !st.Opened.IsZero() || st.Parent == nil {
		t.Errorf("decided here under a parent's rollout: %+v", st)
	}
	got, _, ok := d.rollouts([]string{"web"})
	if !ok || len(got.Rollouts) != 1 || got.Rollouts[0].Canary != "web-01" {
		t.Errorf("passed down %+v, %v: want the parent's rollout", got, ok)
	}
	// Kept across a restart.
	d2 := newWavesDist(t, nil, d.cfg.DataDir)
	if !d2.held(key, m.Channels, web2) {
		t.Error("the parent's rollout is not kept across a restart")
	}

	d.parentWaves(&transport.Waves{Rollouts: []transport.Rollout{{Name: "app", Revision: 5, Canary: "web-01", Open: true, Channels: []string{"web"}}}})
	if d.held(key, m.Channels, web2) {
		t.Error("held once the parent's rollout opened")
	}
	if held, _ := d.waveHolds(revKey{m.Name, m.Revision}, m.Version, m.Channels); held {
		t.Error("own upgrade held once the rollout opened")
	}
	d.parentWaves(&transport.Waves{Rollouts: []transport.Rollout{{Name: "app", Revision: 5, Canary: "web-01", Stopped: "1 failed", Channels: []string{"web"}}}})
	if !d.held(key, m.Channels, web1) {
		t.Error("the first wave not held after the parent's rollout stopped")
	}
	if held, why := d.waveHolds(revKey{m.Name, m.Revision}, m.Version, m.Channels); !held || !strings.Contains(why, "1 failed") {
		t.Errorf("own upgrade held %v (%s) after the stop", held, why)
	}
	// Not sent by a parent (one that does not know it: a second parent, a
	// restart): kept as it was; only an opening from above lets it go.
	d.parentWaves(&transport.Waves{})
	if st := d.waves[key]; st.Parent == nil || st.Parent.Stopped == "" {
		t.Errorf("the parent's stopped rollout let go when a parent did not send it: %+v", st.Parent)
	}
	// Nor passed down to a child distributor of other channels.
	if got, _, _ := d.rollouts([]string{"db"}); len(got.Rollouts) != 0 {
		t.Errorf("passed down to a child of other channels: %+v", got.Rollouts)
	}
}

// A child distributor held back from app@2 (its first wave, above) is not
// offered app@1 instead when app@1's rollout stopped above.
func TestWavesBeforeHeldSkipsAStopAbove(t *testing.T) {
	pk, sk, _ := ed25519.GenerateKey(nil)
	cfg := DefaultConfig()
	cfg.Name = "dist-2"
	cfg.Trust = distribution.NewTrust(pk)
	cfg.Channels = map[string]Channel{"web": {Publishers: []string{"pub"}, Children: []string{"web-*"}}}
	cfg.Clock = schedule.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := store.NewMemory()
	for rev := uint64(1); rev <= 2; rev++ {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "f"), fmt.Appendf(nil, "rev %d", rev), 0o644); err != nil {
			t.Fatal(err)
		}
		m, _, err := distribution.BuildDir(context.Background(), dir, distribution.BuildOptions{Name: "app", Revision: rev, Version: fmt.Sprint(rev),
			Channels: []string{"web"}, Created: time.Unix(1_700_000_000+int64(rev), 0)}, st)
		if err != nil {
			t.Fatal(err)
		}
		s, err := distribution.Sign(m, sk)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.AddRevision(s, m); err != nil {
			t.Fatal(err)
		}
	}
	d, err := New(cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	d.parentWaves(&transport.Waves{Rollouts: []transport.Rollout{
		{Name: "app", Revision: 2, Canary: "web-01"},
		{Name: "app", Revision: 1, Canary: "web-01", Stopped: "1 failed in the first wave"},
	}})
	c := &child{name: "web-09", role: "subscriber", channels: []string{"web"}}
	or := &offerRev{key: revKey{"app", 2}, channels: []string{"web"}}
	if !d.held(or.key, or.channels, c) {
		t.Fatal("app@2 not held from web-09")
	}
	if older := d.beforeHeld(or, c); older != nil {
		t.Errorf("offered app@%d instead, whose rollout stopped above", older.key.rev)
	}
}

// A rollout made for a revision still arriving (to be passed down before
// it) is not pruned while it arrives.
func TestWavesPendingRolloutKept(t *testing.T) {
	d := newWavesDist(t, &Waves{Canary: "web-01", Soak: time.Hour, StopAfter: 1}, "")
	d.incoming["app"] = &incoming{}
	d.ensureRollout(revKey{"app", 6}, []string{"web"})
	d.decideWaves()
	got, sent, _ := d.rollouts([]string{"web"})
	if !sent[revKey{"app", 6}] {
		t.Errorf("the rollout of app@6, arriving, was pruned: %+v", got.Rollouts)
	}
}

// Waves taken off the channel by a reload: the rollout under way is
// released, and the release passed down.
func TestWavesReleasedByAReload(t *testing.T) {
	d := newWavesDist(t, &Waves{Canary: "web-01", Soak: time.Hour, StopAfter: 1}, "")
	addSub(d, "web-02")
	d.decideWaves()
	web2 := &child{name: "web-02", role: "subscriber"}
	if !d.held(revKey{"app", 5}, []string{"web"}, web2) {
		t.Fatal("web-02 not held in the first wave's time")
	}
	next := d.cfg
	next.Channels = map[string]Channel{"web": {Publishers: []string{"pub"}, Children: []string{"web-*"}}}
	if _, err := d.Reload(next); err != nil {
		t.Fatal(err)
	}
	d.decideWaves()
	if d.held(revKey{"app", 5}, []string{"web"}, web2) {
		t.Error("web-02 still held once the channel has no waves")
	}
	got, _, _ := d.rollouts([]string{"web"})
	if len(got.Rollouts) != 1 || !got.Rollouts[0].Open {
		t.Errorf("passed down %+v: want the rollout, open", got.Rollouts)
	}
}
