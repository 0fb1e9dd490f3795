package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"ted/distribution"
)

// rev3Tree changes rev2Tree in the ways a rollback must undo: new content
// and a new mode for the same path, a retargeted symlink, a dropped file, a
// new directory, a file where rev 2 had a directory and back.
func rev3Tree(t *testing.T) string {
	dir := rev2Tree(t)
	writeFile(t, filepath.Join(dir, "etc/app.conf"), []byte("listen = 9090\n"), 0o600)
	if err := os.Remove(filepath.Join(dir, "new.txt")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "lib/x.so"), binary(3, 70<<10), 0o755)
	if err := os.Remove(filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	symlink(t, "lib/x.so", filepath.Join(dir, "link"))
	if err := os.RemoveAll(filepath.Join(dir, "flip")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "flip"), []byte("flip is a file again in rev 3\n"), 0o644)
	chmod(t, filepath.Join(dir, "bin"), 0o750)
	return dir
}

// installSeries installs one revision per tree, rev 1 first, and returns the
// listing of the whole root after each (index 0: before rev 1).
func installSeries(t *testing.T, f *fixture, in *Installer, targets []string, trees ...string) [][]string {
	t.Helper()
	snaps := [][]string{listing(t, f.root)}
	for i, src := range trees {
		m := f.publish("web", uint64(i+1), targets[i], src)
		f.install(in, m)
		if i == 0 {
			placeByHand(t, filepath.Join(f.root, targets[0]))
		}
		snaps = append(snaps, listing(t, f.root))
	}
	return snaps
}

func TestRollbackThreeInARow(t *testing.T) {
	f := newFixture(t)
	f.keep = 3
	in := f.installer(f.store, "")
	// Rev 4 moves the target: its rollback brings the old one back whole.
	targets := []string{"web", "web", "web", "srv/web"}
	snaps := installSeries(t, f, in, targets, rev1Tree(t), rev2Tree(t), rev3Tree(t), rev3Tree(t))

	hist, err := in.History()
	if err != nil {
		t.Fatal(err)
	}
	var revs []uint64
	for _, h := range hist {
		revs = append(revs, h.Revision)
	}
	if !slices.Equal(revs, []uint64{4, 3, 2}) {
		t.Errorf("History() revisions %v, want 4 3 2 (keep 3)", revs)
	}
	for rev := uint64(4); rev >= 2; rev-- {
		res, err := in.Rollback(context.Background(), RollbackOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := RolledBack{Name: "web", From: rev, FromVersion: fmt.Sprintf("1.%d", rev), To: rev - 1,
			ToVersion: fmt.Sprintf("1.%d", rev-1), Target: targets[rev-1]}
		if !reflect.DeepEqual(res, want) {
			t.Errorf("Rollback() = %+v, want %+v", res, want)
		}
		assertSameTree(t, snaps[rev-1], listing(t, f.root))
		assertInstalled(t, in, "web", rev-1, targets[rev-2])
		assertPending(t, in, nil)
	}
	// Keep 3: rev 1's own installation can no longer be undone.
	before := listing(t, f.root)
	if _, err := in.Rollback(context.Background(), RollbackOptions{Name: "web"}); !errors.Is(err, ErrNothingToRollBack) || !strings.Contains(err.Error(), "keep_revisions 3") {
		t.Errorf("fourth Rollback: %v; want ErrNothingToRollBack naming keep_revisions", err)
	}
	assertSameTree(t, before, listing(t, f.root))
	if held, err := in.Held("web"); err != nil || held != 4 {
		t.Errorf("Held(web) = %d, %v; want 4", held, err)
	}
	// Only the scripts of rev 1's installation are left, for its
	// commands.
	if seqs, _ := in.state.undoSeqs("web"); len(seqs) != 1 {
		t.Errorf("%d undo directories left after undoing every kept installation, want 1 (stripped)", len(seqs))
	}
	// A newer revision installs over the rolled back state as usual.
	m5 := f.publish("web", 5, "web", rev2Tree(t))
	f.install(in, m5)
	assertExactly(t, m5, rev2Tree(t), filepath.Join(f.root, "web"), handPlaced)
}

func TestRollbackFirstInstallation(t *testing.T) {
	f := newFixture(t)
	in := f.installer(f.store, "")
	empty := listing(t, f.root)
	f.install(in, f.publish("web", 1, "opt/web", rev1Tree(t)))
	res, err := in.Rollback(context.Background(), RollbackOptions{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if res.From != 1 || res.To != 0 {
		t.Errorf("Rollback() = %+v, want from 1 to none", res)
	}
	// The target and the parent the installation created are gone too.
	assertSameTree(t, empty, listing(t, f.root))
	if _, ok, _ := in.InstalledRevision("web"); ok {
		t.Error("web still recorded as installed")
	}
	if _, err := in.Rollback(context.Background(), RollbackOptions{Name: "web"}); !errors.Is(err, ErrNothingToRollBack) {
		t.Errorf("Rollback of nothing installed: %v, want ErrNothingToRollBack", err)
	}
	if _, err := in.Rollback(context.Background(), RollbackOptions{}); !errors.Is(err, ErrNothingToRollBack) {
		t.Errorf("Rollback with nothing installed: %v, want ErrNothingToRollBack", err)
	}
}

func TestRollbackRefusedForDependants(t *testing.T) {
	f := newFixture(t)
	in := f.installer(f.store, "")
	publish := func(name string, rev uint64, requires ...string) *distribution.Manifest {
		return f.publishWith(rev1Tree(t), distribution.BuildOptions{
			Name: name, Revision: rev, Version: fmt.Sprintf("1.%d.0", rev), Target: name, Requires: requires,
		})
	}
	f.install(in, publish("runtime", 1))
	f.install(in, publish("runtime", 2))
	f.install(in, publish("app", 1, "runtime >=1.2"))
	before := listing(t, f.root)

	_, err := in.Rollback(context.Background(), RollbackOptions{Name: "runtime"})
	if want := "app 1.1.0 requires runtime >=1.2"; !errors.Is(err, ErrRequired) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Rollback(runtime): %v; want ErrRequired naming %q", err, want)
	}
	assertSameTree(t, before, listing(t, f.root))

	// Last in, first out: without a name, app goes first, then runtime
	// may follow.
	res, err := in.Rollback(context.Background(), RollbackOptions{})
	if err != nil || res.Name != "app" || res.To != 0 {
		t.Fatalf("Rollback() = %+v, %v; want app undone", res, err)
	}
	if res, err = in.Rollback(context.Background(), RollbackOptions{}); err != nil || res.Name != "runtime" || res.To != 1 {
		t.Fatalf("Rollback() = %+v, %v; want runtime back to 1", res, err)
	}

	// Forced, the dependency goes from under its dependant.
	f.install(in, publish("runtime", 3))
	f.install(in, publish("app", 2, "runtime >=1.3"))
	if _, err := in.Rollback(context.Background(), RollbackOptions{Name: "runtime", Force: true}); err != nil {
		t.Fatalf("forced Rollback(runtime): %v", err)
	}
	if got, _, _ := in.InstalledRevision("runtime"); got.Revision != 1 {
		t.Errorf("runtime@%d installed after the forced rollback, want 1", got.Revision)
	}
}

func TestRollbackRetention(t *testing.T) {
	f := newFixture(t)
	f.keep = 2
	in := f.installer(f.store, "")
	installSeries(t, f, in, []string{"web", "web", "web", "web"}, rev1Tree(t), rev2Tree(t), rev3Tree(t), rev2Tree(t))
	if seqs, _ := in.state.undoSeqs("web"); len(seqs) != 3 {
		t.Errorf("%d undo directories kept, want 2 and one stripped to its scripts", len(seqs))
	}
	for range 2 {
		if _, err := in.Rollback(context.Background(), RollbackOptions{Name: "web"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := in.Rollback(context.Background(), RollbackOptions{Name: "web"}); !errors.Is(err, ErrNothingToRollBack) {
		t.Errorf("third Rollback with keep 2: %v, want ErrNothingToRollBack", err)
	}
	assertInstalled(t, in, "web", 2, "web")
}

func TestRecoverInterruptedRollback(t *testing.T) {
	for _, point := range []string{"restore", "restore+1", "undone"} {
		t.Run(point, func(t *testing.T) {
			f := newFixture(t)
			in := f.installer(f.store, "")
			snaps := installSeries(t, f, in, []string{"web", "web"}, rev1Tree(t), rev2Tree(t))
			crashing := f.installer(f.store, Step(point))
			if _, err := crashing.Rollback(context.Background(), RollbackOptions{Name: "web"}); !errors.Is(err, errCrash) {
				t.Fatalf("Rollback: %v, want the crash", err)
			}
			step := Step(strings.TrimSuffix(point, "+1"))
			assertPending(t, crashing, []JournalEntry{{Name: "web", From: 2, To: 1, Version: "1.2", Target: "web", Step: step}})

			restarted := f.installer(f.store, "")
			if err := restarted.Recover(context.Background(), nil, nil); err != nil {
				t.Fatal(err)
			}
			assertSameTree(t, snaps[1], listing(t, f.root))
			assertInstalled(t, restarted, "web", 1, "web")
			assertPending(t, restarted, nil)
			if held, _ := restarted.Held("web"); held != 2 {
				t.Errorf("Held(web) = %d after the recovered rollback, want 2", held)
			}
		})
	}
}

// TestRollbackCopiesAcrossFileSystems keeps the state directory on another
// file system than the root (/dev/shm), where files are copied, not linked.
func TestRollbackCopiesAcrossFileSystems(t *testing.T) {
	f := newFixture(t)
	shm, err := os.MkdirTemp("/dev/shm", "ted-state-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(shm) })
	var a, b syscall.Stat_t
	if syscall.Stat(shm, &a) != nil || syscall.Stat(f.root, &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm is on the file system of the test's root")
	}
	f.state = shm
	in := f.installer(f.store, "")
	snaps := installSeries(t, f, in, []string{"web", "web", "web"}, rev1Tree(t), rev2Tree(t), rev3Tree(t))
	// Copies keep the modification times too.
	app := filepath.Join(f.root, "web/bin/app")
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for range 2 {
		if err := os.Chtimes(app, old, old); err != nil {
			t.Fatal(err)
		}
		if _, err := in.Rollback(context.Background(), RollbackOptions{Name: "web"}); err != nil {
			t.Fatal(err)
		}
	}
	assertSameTree(t, snaps[1], listing(t, f.root))
	// The mtime set on rev 2's app before its rollback is not rev 1's:
	// rev 1's own came back with the copy.
	if info, err := os.Stat(app); err != nil || info.ModTime().Equal(old) {
		t.Errorf("bin/app mtime %v after the rollback: the copy did not keep rev 1's", info.ModTime())
	}
}
