package install

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"ted/distribution"
	"ted/store"
)

var errCrash = errors.New("simulated crash")

// fixture is a publisher (a store holding signed revisions) and a
// subscriber's root and state directory.
type fixture struct {
	t     testing.TB
	store *store.Memory
	key   ed25519.PrivateKey
	trust *distribution.Trust
	root  string
	state string
	keep  int // installations kept undoable; 0 for the default
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	key := ed25519.NewKeyFromSeed([]byte("ted subscriber installer tests!!"))
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	return &fixture{t: t, store: st, key: key, trust: distribution.NewTrust(key.Public().(ed25519.PublicKey)),
		root: tempDir(t), state: tempDir(t)}
}

// publish builds a revision of src, signs and stores it.
func (f *fixture) publish(name string, rev uint64, target, src string) *distribution.Manifest {
	f.t.Helper()
	return f.publishWith(src, distribution.BuildOptions{Name: name, Revision: rev, Version: fmt.Sprintf("1.%d", rev), Target: target})
}

// publishWith builds a revision of src with opts, signs and stores it.
func (f *fixture) publishWith(src string, opts distribution.BuildOptions) *distribution.Manifest {
	f.t.Helper()
	opts.Channels = []string{"stable"}
	opts.Created = time.Unix(1700000000+int64(opts.Revision), 0)
	m, _, err := distribution.BuildDir(context.Background(), src, opts, f.store)
	if err != nil {
		f.t.Fatal(err)
	}
	signed, err := distribution.Sign(m, f.key)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.store.AddRevision(signed, m); err != nil {
		f.t.Fatal(err)
	}
	return m
}

// installer returns a new installer on the fixture's directories, as after
// a restart; it crashes right after recording stopAt, if set.
func (f *fixture) installer(src distribution.ChunkSource, stopAt Step) *Installer {
	f.t.Helper()
	log := slog.New(slog.NewTextHandler(f.t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	in, err := New(f.root, f.state, src, Options{Log: log, Keep: f.keep})
	if err != nil {
		f.t.Fatal(err)
	}
	if stopAt != "" {
		in.SetHook(func(point string) error {
			if point == string(stopAt) {
				return errCrash
			}
			return nil
		})
	}
	return in
}

func (f *fixture) install(in *Installer, m *distribution.Manifest) {
	f.t.Helper()
	if err := in.Install(context.Background(), m, nil); err != nil {
		f.t.Fatal(err)
	}
}

// failingSource fails for some chunks, to stop an extraction halfway.
type failingSource struct {
	distribution.ChunkSource
	fail map[distribution.ChunkID]bool
}

func (s failingSource) Chunk(id distribution.ChunkID) ([]byte, error) {
	if s.fail[id] {
		return nil, fmt.Errorf("%w: %s", distribution.ErrChunkMissing, id.Short())
	}
	return s.ChunkSource.Chunk(id)
}

// failOn returns a source that fails for the chunks of one file of m.
func failOn(src distribution.ChunkSource, m *distribution.Manifest, path string) failingSource {
	fail := make(map[distribution.ChunkID]bool)
	for _, e := range m.Entries {
		if e.Path == path {
			for _, c := range e.Chunks {
				fail[c.ID] = true
			}
		}
	}
	return failingSource{ChunkSource: src, fail: fail}
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// binary returns n random bytes, the same for the same seed: several chunks.
func binary(seed uint64, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(seed)}).Read(b) // never fails
	return b
}

// rev1Tree has every kind of entry, and what rev2Tree drops or changes.
func rev1Tree(t *testing.T) string {
	dir := tempDir(t)
	writeFile(t, filepath.Join(dir, "bin/app"), binary(1, 300<<10), 0o755)
	writeFile(t, filepath.Join(dir, "etc/app.conf"), []byte("listen = 8080\n"), 0o640)
	writeFile(t, filepath.Join(dir, "docs/a.txt"), []byte("dropped with its directory\n"), 0o644)
	writeFile(t, filepath.Join(dir, "docs/sub/b.txt"), []byte("dropped too\n"), 0o644)
	writeFile(t, filepath.Join(dir, "keep/x.txt"), []byte("dropped; the directory is kept for a file of the admin\n"), 0o644)
	writeFile(t, filepath.Join(dir, "old.txt"), []byte("dropped\n"), 0o644)
	writeFile(t, filepath.Join(dir, "ro/stay.txt"), []byte("stays\n"), 0o444)
	writeFile(t, filepath.Join(dir, "ro/gone.txt"), []byte("dropped from a read-only directory\n"), 0o444)
	writeFile(t, filepath.Join(dir, "swap/inner.txt"), []byte("swap is a directory in rev 1\n"), 0o644)
	writeFile(t, filepath.Join(dir, "flip"), []byte("flip is a file in rev 1\n"), 0o644)
	symlink(t, "bin/app", filepath.Join(dir, "link"))
	chmod(t, filepath.Join(dir, "ro"), 0o555)
	return dir
}

func rev2Tree(t *testing.T) string {
	dir := tempDir(t)
	app := binary(1, 300<<10)
	app[150<<10] ^= 0xff
	app = append(app, binary(2, 1000)...)
	writeFile(t, filepath.Join(dir, "bin/app"), app, 0o755)
	writeFile(t, filepath.Join(dir, "etc/app.conf"), []byte("listen = 8080\n"), 0o640)
	writeFile(t, filepath.Join(dir, "new.txt"), []byte("new in rev 2\n"), 0o600)
	writeFile(t, filepath.Join(dir, "ro/stay.txt"), []byte("stays\n"), 0o444)
	writeFile(t, filepath.Join(dir, "swap"), []byte("swap is a file in rev 2\n"), 0o644)
	writeFile(t, filepath.Join(dir, "flip/f.txt"), []byte("flip is a directory in rev 2\n"), 0o644)
	symlink(t, "etc/app.conf", filepath.Join(dir, "link"))
	chmod(t, filepath.Join(dir, "ro"), 0o555)
	return dir
}

// handPlaced are the paths placeByHand adds to a target, relative to it.
var handPlaced = []string{"bin/local.conf", "handmade.txt", "keep", "keep/mine.txt"}

// placeByHand adds files TED never installed to an installed rev1 target.
func placeByHand(t *testing.T, target string) {
	t.Helper()
	writeFile(t, filepath.Join(target, "handmade.txt"), []byte("mine\n"), 0o600)
	writeFile(t, filepath.Join(target, "keep/mine.txt"), []byte("mine too\n"), 0o600)
	writeFile(t, filepath.Join(target, "bin/local.conf"), []byte("local = yes\n"), 0o600)
}

// listing describes a tree: type, mode, and the SHA-256 of the whole
// content or the target of each path, so equal listings mean equal bytes.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %s", filepath.ToSlash(rel), info.Mode())
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			line += " " + hex.EncodeToString(sum[:])
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// assertExactly checks that target holds exactly revision m built from src,
// plus the extra paths, which must be there.
func assertExactly(t *testing.T, m *distribution.Manifest, src, target string, extra []string) {
	t.Helper()
	if err := VerifyTree(context.Background(), m, target); err != nil {
		t.Error(err)
	}
	var got []string
	found := make(map[string]bool)
	for _, line := range listing(t, target) {
		p, _, _ := strings.Cut(line, " ")
		if slices.Contains(extra, p) {
			found[p] = true
			continue
		}
		got = append(got, line)
	}
	want := listing(t, src)
	if !slices.Equal(got, want) {
		t.Errorf("target %s differs from %s@%d:\ngot  %s\nwant %s", target, m.Name, m.Revision,
			strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	for _, p := range extra {
		if !found[p] {
			t.Errorf("%s placed by hand is gone", p)
		}
	}
}

func assertInstalled(t *testing.T, in *Installer, name string, rev uint64, target string) {
	t.Helper()
	got, ok, err := in.InstalledRevision(name)
	if err != nil || !ok || got.Revision != rev || got.Target != target || got.Version != fmt.Sprintf("1.%d", rev) || got.Installed.IsZero() {
		t.Errorf("InstalledRevision(%s) = %+v, %v, %v; want revision %d in %s", name, got, ok, err, rev, target)
	}
	all, err := in.Installed()
	if err != nil || !slices.ContainsFunc(all, func(i Installed) bool { return i.Name == name && i.Revision == rev }) {
		t.Errorf("Installed() = %+v, %v; want %s@%d in it", all, err, name, rev)
	}
}

func assertPending(t *testing.T, in *Installer, want []JournalEntry) {
	t.Helper()
	got, err := in.Pending()
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i].Started.IsZero() {
			t.Errorf("pending %s has no start time", got[i].Name)
		}
		got[i].Started = time.Time{}
	}
	if !slices.Equal(got, want) {
		t.Errorf("Pending() = %+v, want %+v", got, want)
	}
}

func TestInstallFirstRevision(t *testing.T) {
	f := newFixture(t)
	src := rev1Tree(t)
	m := f.publish("web", 1, "opt/web", src)
	in := f.installer(f.store, "")
	f.install(in, m)
	assertExactly(t, m, src, filepath.Join(f.root, "opt/web"), nil)
	assertInstalled(t, in, "web", 1, "opt/web")
	assertPending(t, in, nil)
	all, err := in.Installed()
	if err != nil || len(all) != 1 {
		t.Errorf("Installed() = %+v, %v; want only web@1", all, err)
	}
}

func TestInstalledSortedByName(t *testing.T) {
	f := newFixture(t)
	src := rev1Tree(t)
	in := f.installer(f.store, "")
	for _, name := range []string{"web", "api", "db"} {
		f.install(in, f.publish(name, 1, name, src))
	}
	all, err := in.Installed()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range all {
		names = append(names, i.Name)
	}
	if !slices.Equal(names, []string{"api", "db", "web"}) {
		t.Errorf("Installed() names %v, want api db web", names)
	}
	if _, ok, err := in.InstalledRevision("cache"); ok || err != nil {
		t.Errorf("InstalledRevision(cache) = %v, %v; want none", ok, err)
	}
	if _, _, err := in.InstalledRevision("../web"); err == nil {
		t.Error("InstalledRevision(../web) accepted the name")
	}
}

func TestUpgradeOverlay(t *testing.T) {
	f := newFixture(t)
	src1, src2 := rev1Tree(t), rev2Tree(t)
	m1 := f.publish("web", 1, "web", src1)
	m2 := f.publish("web", 2, "web", src2)
	in := f.installer(f.store, "")
	f.install(in, m1)
	target := filepath.Join(f.root, "web")
	placeByHand(t, target)
	f.install(in, m2)

	assertExactly(t, m2, src2, target, handPlaced)
	for _, gone := range []string{"docs", "old.txt", "keep/x.txt", "ro/gone.txt"} {
		if _, err := os.Lstat(filepath.Join(target, gone)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s dropped by rev 2 is still there (%v)", gone, err)
		}
	}
	assertInstalled(t, in, "web", 2, "web")
	assertPending(t, in, nil)
}

func TestUpgradeMovesTarget(t *testing.T) {
	f := newFixture(t)
	src1, src2 := rev1Tree(t), rev2Tree(t)
	m1 := f.publish("web", 1, "web", src1)
	m2 := f.publish("web", 2, "srv/web", src2)
	in := f.installer(f.store, "")
	f.install(in, m1)
	placeByHand(t, filepath.Join(f.root, "web"))
	f.install(in, m2)

	assertExactly(t, m2, src2, filepath.Join(f.root, "srv/web"), nil)
	// Only what TED did not install is left of the old target.
	got := listing(t, filepath.Join(f.root, "web"))
	var paths []string
	for _, line := range got {
		p, _, _ := strings.Cut(line, " ")
		paths = append(paths, p)
	}
	if want := []string{"bin", "bin/local.conf", "handmade.txt", "keep", "keep/mine.txt"}; !slices.Equal(paths, want) {
		t.Errorf("old target holds %v, want %v", paths, want)
	}
	assertInstalled(t, in, "web", 2, "srv/web")
}

func TestRecoverAfterCrash(t *testing.T) {
	tests := []struct {
		point   string // where the installer stops, as a crash would
		step    Step   // recorded in the journal then
		forward bool   // recovery completes rev 2; else it rolls back to rev 1
	}{
		{"begin", StepBegin, false},
		{"backup", StepBackup, false},
		{"write", StepWrite, false},
		{"write+1", StepWrite, false},
		{"remove", StepRemove, false},
		{"commit", StepCommit, true},
		{"post", StepPost, true},
	}
	for _, tt := range tests {
		t.Run(tt.point, func(t *testing.T) {
			f := newFixture(t)
			src1, src2 := rev1Tree(t), rev2Tree(t)
			m1 := f.publish("web", 1, "web", src1)
			m2 := f.publish("web", 2, "web", src2)
			target := filepath.Join(f.root, "web")
			f.install(f.installer(f.store, ""), m1)
			placeByHand(t, target)
			before := listing(t, f.root)

			in := f.installer(f.store, Step(tt.point))
			if err := in.Install(context.Background(), m2, nil); !errors.Is(err, errCrash) {
				t.Fatalf("Install: %v, want the crash", err)
			}
			if tt.point == "write+1" && slices.Equal(before, listing(t, f.root)) {
				t.Fatal("the write did not get halfway")
			}
			assertPending(t, in, []JournalEntry{{Name: "web", From: 1, To: 2, Version: "1.2", Target: "web", Step: tt.step}})
			if tt.step == StepPost {
				assertInstalled(t, in, "web", 2, "web")
			} else {
				assertInstalled(t, in, "web", 1, "web")
			}

			restarted := f.installer(f.store, "")
			afterRuns := 0
			after := func(_ context.Context, name string, rev uint64) error {
				if name != "web" || rev != 2 {
					t.Errorf("after ran for %s@%d", name, rev)
				}
				afterRuns++
				return nil
			}
			if err := restarted.Recover(context.Background(), after, nil); err != nil {
				t.Fatal(err)
			}
			assertPending(t, restarted, nil)
			if tt.forward {
				assertExactly(t, m2, src2, target, handPlaced)
				assertInstalled(t, restarted, "web", 2, "web")
				if afterRuns != 1 {
					t.Errorf("after ran %d times on recovery, want 1", afterRuns)
				}
				return
			}
			assertSameTree(t, before, listing(t, f.root))
			assertInstalled(t, restarted, "web", 1, "web")
			if afterRuns != 0 {
				t.Errorf("after ran %d times for a rolled back revision", afterRuns)
			}
			// And rev 2 installs cleanly afterwards.
			f.install(restarted, m2)
			assertExactly(t, m2, src2, target, handPlaced)
		})
	}
}

// assertSameTree compares two listings of a tree.
func assertSameTree(t *testing.T, want, got []string) {
	t.Helper()
	if slices.Equal(want, got) {
		return
	}
	var missing, extra []string
	for _, l := range want {
		if !slices.Contains(got, l) {
			missing = append(missing, l)
		}
	}
	for _, l := range got {
		if !slices.Contains(want, l) {
			extra = append(extra, l)
		}
	}
	t.Errorf("tree differs:\nmissing %s\nextra   %s", strings.Join(missing, "\n        "), strings.Join(extra, "\n        "))
}

func TestResumeByInstallingAgain(t *testing.T) {
	f := newFixture(t)
	src1, src2 := rev1Tree(t), rev2Tree(t)
	m1 := f.publish("web", 1, "web", src1)
	m2 := f.publish("web", 2, "web", src2)
	target := filepath.Join(f.root, "web")
	f.install(f.installer(f.store, ""), m1)
	placeByHand(t, target)
	if err := f.installer(f.store, StepRemove).Install(context.Background(), m2, nil); !errors.Is(err, errCrash) {
		t.Fatalf("Install: %v, want the crash", err)
	}
	// Without a Recover: the next Install settles the journal first.
	in := f.installer(f.store, "")
	f.install(in, m2)
	assertExactly(t, m2, src2, target, handPlaced)
	assertInstalled(t, in, "web", 2, "web")
	assertPending(t, in, nil)
}

func TestRecoverWithNothingPending(t *testing.T) {
	f := newFixture(t)
	src := rev1Tree(t)
	m := f.publish("web", 1, "web", src)
	in := f.installer(f.store, "")
	noAfter := func(_ context.Context, name string, rev uint64) error {
		t.Errorf("Recover ran the after-step of %s@%d with nothing pending", name, rev)
		return nil
	}
	if err := in.Recover(context.Background(), noAfter, nil); err != nil {
		t.Fatal(err)
	}
	f.install(in, m)
	before := listing(t, f.root)
	if err := in.Recover(context.Background(), noAfter, nil); err != nil {
		t.Fatal(err)
	}
	if after := listing(t, f.root); !slices.Equal(before, after) {
		t.Errorf("Recover changed the tree:\n%v\n%v", before, after)
	}
	assertInstalled(t, in, "web", 1, "web")
}

func TestFailingAfterRollsBack(t *testing.T) {
	f := newFixture(t)
	src1, src2 := rev1Tree(t), rev2Tree(t)
	m1 := f.publish("web", 1, "web", src1)
	m2 := f.publish("web", 2, "web", src2)
	in := f.installer(f.store, "")
	failing := func(context.Context, string, uint64) error { return errors.New(`post-action "restart" exited 1`) }

	// A first installation rolls back to nothing.
	emptyRoot := listing(t, f.root)
	err := in.Install(context.Background(), m1, failing)
	if want := `post: post-action "restart" exited 1; rolled back to nothing installed`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Install: %v; want %q", err, want)
	}
	assertSameTree(t, emptyRoot, listing(t, f.root))
	if _, ok, _ := in.InstalledRevision("web"); ok {
		t.Error("web recorded as installed")
	}

	f.install(in, m1)
	placeByHand(t, filepath.Join(f.root, "web"))
	before := listing(t, f.root)
	err = in.Install(context.Background(), m2, failing)
	if want := `rolled back to web@1`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Install: %v; want %q", err, want)
	}
	assertSameTree(t, before, listing(t, f.root))
	assertInstalled(t, in, "web", 1, "web")
	assertPending(t, in, nil)

	// After a crash in the after-step, a failing after-step on recovery
	// rolls back too.
	if err := f.installer(f.store, StepPost).Install(context.Background(), m2, nil); !errors.Is(err, errCrash) {
		t.Fatalf("Install: %v, want the crash", err)
	}
	restarted := f.installer(f.store, "")
	if err := restarted.Recover(context.Background(), failing, nil); err == nil || !strings.Contains(err.Error(), "rolled back to web@1") {
		t.Fatalf("Recover: %v; want the after-step's failure and the rollback", err)
	}
	assertSameTree(t, before, listing(t, f.root))
	assertInstalled(t, restarted, "web", 1, "web")
	assertPending(t, restarted, nil)
}

func TestFailedExtractionRollsBack(t *testing.T) {
	f := newFixture(t)
	src1, src2 := rev1Tree(t), rev2Tree(t)
	m1 := f.publish("web", 1, "web", src1)
	m2 := f.publish("web", 2, "web", src2)
	// Rev 3 drops new.txt, which the failed extraction of rev 2 wrote.
	src3 := rev2Tree(t)
	if err := os.Remove(filepath.Join(src3, "new.txt")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src3, "three.txt"), []byte("rev 3\n"), 0o644)
	m3 := f.publish("web", 3, "web", src3)
	target := filepath.Join(f.root, "web")
	f.install(f.installer(f.store, ""), m1)
	placeByHand(t, target)
	before := listing(t, f.root)

	// The write fails halfway (after bin/app and new.txt).
	err := f.installer(failOn(f.store, m2, "swap"), "").Install(context.Background(), m2, nil)
	if !errors.Is(err, distribution.ErrChunkMissing) || !strings.Contains(err.Error(), "rolled back to web@1") {
		t.Fatalf("Install: %v, want ErrChunkMissing and a rollback", err)
	}
	assertSameTree(t, before, listing(t, f.root))
	in := f.installer(f.store, "")
	assertPending(t, in, nil)
	assertInstalled(t, in, "web", 1, "web")
	f.install(in, m3)
	assertExactly(t, m3, src3, target, handPlaced)
	assertInstalled(t, in, "web", 3, "web")
}

func TestInstallRefusesRevisionNotNewer(t *testing.T) {
	f := newFixture(t)
	m1 := f.publish("web", 1, "web", rev1Tree(t))
	m2 := f.publish("web", 2, "web", rev2Tree(t))
	in := f.installer(f.store, "")
	f.install(in, m2)
	before := listing(t, f.root)
	for _, tt := range []struct {
		m    *distribution.Manifest
		text string
	}{
		{m1, "web@1 is older than the installed web@2"},
		{m2, "web@2 is already installed"},
	} {
		err := in.Install(context.Background(), tt.m, nil)
		if !errors.Is(err, ErrNotNewer) || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("Install(web@%d): %v; want ErrNotNewer with %q", tt.m.Revision, err, tt.text)
		}
	}
	if after := listing(t, f.root); !slices.Equal(before, after) {
		t.Errorf("a refused install changed the tree")
	}
	assertInstalled(t, in, "web", 2, "web")
	assertPending(t, in, nil)
}

func TestInstallRefusesEscapingTarget(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, root, outside string)
		target string // set on the manifest after it is built
		want   error
		inText string
	}{
		{
			name: "relative symlink",
			setup: func(t *testing.T, root, outside string) {
				symlink(t, mustRel(t, root, outside), filepath.Join(root, "out"))
			},
			target: "out/web",
			inText: "install web@1: target out/web",
		},
		{
			name:   "absolute symlink",
			setup:  func(t *testing.T, root, outside string) { symlink(t, outside, filepath.Join(root, "out")) },
			target: "out/web",
			inText: "install web@1: target out/web",
		},
		{
			name:   "file in the way",
			setup:  func(t *testing.T, root, _ string) { writeFile(t, filepath.Join(root, "web"), []byte("mine\n"), 0o600) },
			target: "web",
			inText: "install web@1: target web is a file that TED did not install",
		},
		{name: "dot dot", target: "../web", want: distribution.ErrInvalidManifest, inText: "web@1"},
		{name: "root itself", target: ".", want: distribution.ErrInvalidManifest, inText: "web@1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			outside := tempDir(t)
			if tt.setup != nil {
				tt.setup(t, f.root, outside)
			}
			m := f.publish("web", 1, "web", rev1Tree(t))
			m.Target = tt.target
			in := f.installer(f.store, "")
			before := listing(t, f.root)
			err := in.Install(context.Background(), m, nil)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.inText) {
				t.Fatalf("Install: %v; want %v with %q", err, tt.want, tt.inText)
			}
			if got := listing(t, outside); len(got) != 0 {
				t.Errorf("written outside the root: %v", got)
			}
			if after := listing(t, f.root); !slices.Equal(before, after) {
				t.Errorf("a refused install changed the root")
			}
			if _, ok, _ := in.InstalledRevision("web"); ok {
				t.Error("web recorded as installed")
			}
			assertPending(t, in, nil)
		})
	}
}

func mustRel(t *testing.T, from, to string) string {
	t.Helper()
	rel, err := filepath.Rel(from, to)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

func TestVerifyTree(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, dir string)
		want   error  // wrapped, if set
		inText string // in the error; "" for none
	}{
		{name: "intact", change: func(*testing.T, string) {}},
		{
			name: "changed byte",
			change: func(t *testing.T, dir string) {
				p := filepath.Join(dir, "bin/app")
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				b[200<<10] ^= 1
				writeFile(t, p, b, 0o755)
			},
			want:   distribution.ErrChunkCorrupt,
			inText: "bin/app: chunk corrupt: bytes",
		},
		{
			name: "truncated file",
			change: func(t *testing.T, dir string) {
				if err := os.Truncate(filepath.Join(dir, "bin/app"), 1000); err != nil {
					t.Fatal(err)
				}
			},
			inText: "bin/app: 1000 bytes",
		},
		{
			name:   "changed mode",
			change: func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, "etc/app.conf"), 0o644) },
			inText: "etc/app.conf: mode -rw-r--r--, want -rw-r-----",
		},
		{
			name:   "changed directory mode",
			change: func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, "ro"), 0o755) },
			inText: "ro: mode",
		},
		{
			name: "missing file",
			change: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "docs/a.txt")); err != nil {
					t.Fatal(err)
				}
			},
			want:   fs.ErrNotExist,
			inText: "docs/a.txt",
		},
		{
			name: "wrong symlink target",
			change: func(t *testing.T, dir string) {
				p := filepath.Join(dir, "link")
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
				symlink(t, "etc/app.conf", p)
			},
			inText: `link: symlink to "etc/app.conf", want "bin/app"`,
		},
		{
			name: "file replaced by a symlink",
			change: func(t *testing.T, dir string) {
				p := filepath.Join(dir, "old.txt")
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
				symlink(t, "etc/app.conf", p)
			},
			inText: "old.txt: is a symlink, want a file",
		},
	}
	f := newFixture(t)
	m := f.publish("web", 1, "web", rev1Tree(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tempDir(t)
			if err := distribution.Materialize(context.Background(), m, f.store, dir, distribution.MaterializeOptions{}); err != nil {
				t.Fatal(err)
			}
			tt.change(t, dir)
			err := VerifyTree(context.Background(), m, dir)
			if tt.inText == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.inText) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("VerifyTree: %v; want %v with %q", err, tt.want, tt.inText)
			}
			if !strings.Contains(err.Error(), "web@1") {
				t.Errorf("error %q does not name the revision", err)
			}
		})
	}
}

func TestInstallStopsAtDirectoryInTheWay(t *testing.T) {
	f := newFixture(t)
	m1 := f.publish("web", 1, "web", rev1Tree(t))
	m2 := f.publish("web", 2, "web", rev2Tree(t))
	in := f.installer(f.store, "")
	f.install(in, m1)
	// Rev 2 has a file where rev 1 had the directory swap, which now
	// also holds a file TED did not install.
	mine := filepath.Join(f.root, "web/swap/mine.txt")
	writeFile(t, mine, []byte("mine\n"), 0o600)
	before := listing(t, f.root)
	err := in.Install(context.Background(), m2, nil)
	if want := "install web@2: write: web/swap: directory holds files TED did not install"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Install: %v; want %q", err, want)
	}
	assertSameTree(t, before, listing(t, f.root))
	assertInstalled(t, in, "web", 1, "web")
	assertPending(t, in, nil)
}

// tempDir is t.TempDir for trees with read-only directories: a subscriber
// that is not root could not remove them otherwise.
func tempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { // runs before TempDir's own cleanup
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	return dir
}
