// Edge cases of rollback found by a second reading of the installer, each
// a test that failed before its fix.

package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"ted/distribution"
)

// panicSource dies (like kill -9, nothing deferred in Materialize cleans
// up) when a chunk of one file is read: the temporary file Materialize
// opened for it is left, as after a real crash mid-file.
type panicSource struct {
	distribution.ChunkSource
	die map[distribution.ChunkID]bool
}

func (s panicSource) Chunk(id distribution.ChunkID) ([]byte, error) {
	if s.die[id] {
		panic("kill -9")
	}
	return s.ChunkSource.Chunk(id)
}

// a crash while Materialize writes a file leaves .ted-*.tmp in the
// root; Recover neither removes it nor the directory holding it.
func TestRecoverRemovesHalfWrittenFile(t *testing.T) {
	f := newFixture(t)
	src1 := tempDir(t)
	writeFile(t, filepath.Join(src1, "a.txt"), []byte("a1\n"), 0o644)
	src2 := tempDir(t)
	writeFile(t, filepath.Join(src2, "a.txt"), []byte("a2\n"), 0o644)
	writeFile(t, filepath.Join(src2, "newdir/b.txt"), binary(9, 200<<10), 0o644)
	m1 := f.publish("web", 1, "web", src1)
	m2 := f.publish("web", 2, "web", src2)
	f.install(f.installer(f.store, ""), m1)
	before := listing(t, f.root)

	die := map[distribution.ChunkID]bool{}
	for _, e := range m2.Entries {
		if e.Path == "newdir/b.txt" {
			die[e.Chunks[0].ID] = true
		}
	}
	func() {
		defer func() { _ = recover() }()
		_ = f.installer(panicSource{f.store, die}, "").Install(context.Background(), m2, nil)
	}()
	in := f.installer(f.store, "")
	if err := in.Recover(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	assertSameTree(t, before, listing(t, f.root))
}

// A target reached through a symlink inside the root (web ->
// releases/web) is refused: the records would not say where the files
// went, and a rollback could not follow them.
func TestSymlinkedTargetRefused(t *testing.T) {
	f := newFixture(t)
	if err := os.MkdirAll(filepath.Join(f.root, "releases/web"), 0o755); err != nil {
		t.Fatal(err)
	}
	symlink(t, "releases/web", filepath.Join(f.root, "web"))
	in := f.installer(f.store, "")
	src := tempDir(t)
	writeFile(t, filepath.Join(src, "a.txt"), []byte("a1\n"), 0o644)
	before := listing(t, f.root)
	err := in.Install(context.Background(), f.publish("web", 1, "web/app", src), nil)
	if err == nil || !strings.Contains(err.Error(), "target web/app: web is a symlink") {
		t.Fatalf("Install: %v; want the symlink named", err)
	}
	assertSameTree(t, before, listing(t, f.root))
}

// the rollback puts back the mode of a target ancestor TED never
// installed (an admin's opt/), undoing the admin's later chmod.
func TestRollbackKeepsForeignAncestorMode(t *testing.T) {
	f := newFixture(t)
	if err := os.Mkdir(filepath.Join(f.root, "opt"), 0o755); err != nil {
		t.Fatal(err)
	}
	in := f.installer(f.store, "")
	src := tempDir(t)
	writeFile(t, filepath.Join(src, "a.txt"), []byte("a\n"), 0o644)
	f.install(in, f.publish("web", 1, "opt/web", src))
	chmod(t, filepath.Join(f.root, "opt"), 0o711) // the admin, later
	if _, err := in.Rollback(context.Background(), RollbackOptions{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(filepath.Join(f.root, "opt")); info.Mode().Perm() != 0o711 {
		t.Errorf("opt (not TED's) has mode %v after the rollback, the admin set 0711", info.Mode().Perm())
	}
}

// not running as root, a rollback fails when an ancestor of the
// target belongs to someone else: phase 3 chmods it even to its own mode.
func TestRollbackNonRootUnderForeignAncestor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set up, then drops to nobody")
	}
	f := newFixture(t)
	base, err := os.MkdirTemp("", "ted-review-")
	if err != nil {
		t.Fatal(err)
	}
	chmod(t, base, 0o777)
	f.root, f.state = filepath.Join(base, "root"), filepath.Join(base, "state")
	for _, d := range []string{f.root, f.state} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	// srv/ is root's (0755); srv/web was made for the subscriber by the admin.
	if err := os.Mkdir(filepath.Join(f.root, "srv"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(f.root, "srv/web"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(f.root, "srv/web"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	src := tempDir(t)
	writeFile(t, filepath.Join(src, "a.txt"), []byte("a\n"), 0o644)
	m := f.publish("web", 1, "srv/web", src)

	runtime.LockOSThread() // Setres*id apply to every thread anyway
	if err := syscall.Setresgid(65534, 65534, 0); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setresuid(65534, 65534, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setresuid(0, 0, 0); _ = syscall.Setresgid(0, 0, 0); _ = os.RemoveAll(base) })

	in := f.installer(f.store, "")
	f.install(in, m)
	if _, err := in.Rollback(context.Background(), RollbackOptions{Name: "web"}); err != nil {
		t.Errorf("Rollback as a non-root subscriber: %v", err)
	}
	if p, _ := in.Pending(); len(p) > 0 {
		t.Errorf("pending after the rollback: %+v", p)
	}
}

// with the state on another file system (copies), a file the
// installation never replaced is overwritten by its old copy at rollback,
// losing what was written to it since. Here: rev 1 had a symlink x, the
// admin replaced it with a file; rev 2 drops x, which remove leaves (not
// TED's type); the admin edits x; rollback of rev 2 copies the old x back.
func TestRollbackLeavesUntouchedFile(t *testing.T) {
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
	src1 := tempDir(t)
	writeFile(t, filepath.Join(src1, "a.txt"), []byte("a\n"), 0o644)
	symlink(t, "a.txt", filepath.Join(src1, "x"))
	src2 := tempDir(t)
	writeFile(t, filepath.Join(src2, "a.txt"), []byte("a\n"), 0o644)
	f.install(in, f.publish("web", 1, "web", src1))
	x := filepath.Join(f.root, "web/x")
	if err := os.Remove(x); err != nil {
		t.Fatal(err)
	}
	writeFile(t, x, []byte("admin v1\n"), 0o644)
	f.install(in, f.publish("web", 2, "web", src2))
	writeFile(t, x, []byte("admin v2\n"), 0o644) // in place, after the install
	if _, err := in.Rollback(context.Background(), RollbackOptions{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(x); !strings.Contains(string(got), "v2") {
		t.Errorf("web/x, a file the installation never touched, is %q after the rollback", got)
	}
}

// Rollback checks only the dependants of what it takes away, not the
// requirements of the revision it installs again.
func TestRollbackChecksRestoredRequirements(t *testing.T) {
	f := newFixture(t)
	in := f.installer(f.store, "")
	src := tempDir(t)
	writeFile(t, filepath.Join(src, "a.txt"), []byte("a\n"), 0o644)
	pub := func(name string, rev uint64, requires ...string) *distribution.Manifest {
		return f.publishWith(src, distribution.BuildOptions{Name: name, Revision: rev,
			Version: fmt.Sprintf("1.%d.0", rev), Target: name, Requires: requires})
	}
	f.install(in, pub("lib", 1))
	f.install(in, pub("app", 1, "lib"))
	f.install(in, pub("app", 2)) // app 1.2.0 no longer needs lib
	// lib may go: nothing extracted requires it now.
	if _, err := in.Rollback(context.Background(), RollbackOptions{Name: "lib"}); err != nil {
		t.Fatal(err)
	}
	// app back to 1.1.0, which requires lib, not installed: not refused.
	if res, err := in.Rollback(context.Background(), RollbackOptions{Name: "app"}); !errors.Is(err, ErrRequired) || !strings.Contains(err.Error(), "requires lib, which is not extracted") {
		t.Errorf("Rollback(app) = %+v: app 1.1.0 requires lib, which is not installed", res)
	}
}

// the old target of a moved installation is not among the undo
// record's paths, so nothing checks it is still a directory: through a
// symlink put there since, the rollback overwrites a file TED never
// installed (and with a symlink out of the root, os.Link by name creates
// the temporary link outside it before the os.Root check removes it).
func TestRollbackNotThroughSymlinkedOldTarget(t *testing.T) {
	f := newFixture(t)
	in := f.installer(f.store, "")
	src := tempDir(t)
	writeFile(t, filepath.Join(src, "a.txt"), []byte("TED rev 1\n"), 0o644)
	f.install(in, f.publish("web", 1, "web", src))
	f.install(in, f.publish("web", 2, "srv/web", src))
	// The admin reuses the name: web -> data, data/a.txt is theirs.
	// The old target went with rev 2 (it was empty); if not, it goes now.
	if err := os.Remove(filepath.Join(f.root, "web")); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(f.root, "data/a.txt"), []byte("the admin's\n"), 0o600)
	symlink(t, "data", filepath.Join(f.root, "web"))
	_, err := in.Rollback(context.Background(), RollbackOptions{Name: "web"})
	if got, _ := os.ReadFile(filepath.Join(f.root, "data/a.txt")); string(got) != "the admin's\n" {
		t.Errorf("Rollback: %v; data/a.txt, never TED's, is now %q", err, got)
	}
}

// with web -> a directory outside the root, restoreFile's os.Link by
// name creates a link outside the root (seen with inotify), removed again
// only because the os.Root check after it fails.
func TestRollbackNeverLinksOutsideRoot(t *testing.T) {
	f := newFixture(t)
	in := f.installer(f.store, "")
	src := tempDir(t)
	writeFile(t, filepath.Join(src, "a.txt"), []byte("TED rev 1\n"), 0o644)
	f.install(in, f.publish("web", 1, "web", src))
	f.install(in, f.publish("web", 2, "srv/web", src))
	outside := t.TempDir()
	// The old target went with rev 2 (it was empty); if not, it goes now.
	if err := os.Remove(filepath.Join(f.root, "web")); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	symlink(t, outside, filepath.Join(f.root, "web"))
	fd, err := syscall.InotifyInit()
	if err != nil {
		t.Skip(err)
	}
	defer syscall.Close(fd)
	if _, err := syscall.InotifyAddWatch(fd, outside, syscall.IN_CREATE); err != nil {
		t.Skip(err)
	}
	_, rerr := in.Rollback(context.Background(), RollbackOptions{Name: "web"})
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if n, _ := syscall.Read(fd, buf); n > 0 {
		name := strings.TrimRight(string(buf[syscall.SizeofInotifyEvent:n]), "\x00")
		t.Errorf("Rollback (%v) created %s in %s, outside the root", rerr, name, outside)
	}
}

// when os.Link fails on the same file system (EPERM from
// protected_hardlinks for a file the subscriber does not own, or EMLINK),
// backup copies the file with copyTo (mode 0600, fresh mtime, no owner),
// and restore then links that copy back as is: copyBack, which puts mode,
// owner and mtime back, runs only when the restore's own link fails.
func TestRollbackAfterRefusedLinkKeepsMode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set up, then drops to nobody")
	}
	if b, _ := os.ReadFile("/proc/sys/fs/protected_hardlinks"); strings.TrimSpace(string(b)) != "1" {
		t.Skip("protected_hardlinks off")
	}
	f := newFixture(t)
	base, err := os.MkdirTemp("", "ted-review-")
	if err != nil {
		t.Fatal(err)
	}
	chmod(t, base, 0o777)
	f.root, f.state = filepath.Join(base, "root"), filepath.Join(base, "state")
	for _, d := range []string{f.root, f.state, filepath.Join(f.root, "web")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	// The admin's file, root's, where the revision puts its own.
	conf := filepath.Join(f.root, "web/app.conf")
	writeFile(t, conf, []byte("admin's\n"), 0o644)
	src := tempDir(t)
	writeFile(t, filepath.Join(src, "app.conf"), []byte("TED's\n"), 0o644)
	m := f.publish("web", 1, "web", src)
	if err := syscall.Setresgid(65534, 65534, 0); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setresuid(65534, 65534, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setresuid(0, 0, 0); _ = syscall.Setresgid(0, 0, 0); _ = os.RemoveAll(base) })
	before := listing(t, f.root)
	in := f.installer(f.store, "")
	f.install(in, m)
	if _, err := in.Rollback(context.Background(), RollbackOptions{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	assertSameTree(t, before, listing(t, f.root))
}

// a Rollback that finds an installation interrupted in its after-step
// first undoes it (settle with unfinished), then undoes one more.
func TestRollbackOfPendingPostUndoesOne(t *testing.T) {
	f := newFixture(t)
	src := tempDir(t)
	writeFile(t, filepath.Join(src, "a.txt"), []byte("a\n"), 0o644)
	in := f.installer(f.store, "")
	f.install(in, f.publish("web", 1, "web", src))
	f.install(in, f.publish("web", 2, "web", src))
	m3 := f.publish("web", 3, "web", src)
	if err := f.installer(f.store, StepPost).Install(context.Background(), m3, nil); err == nil {
		t.Fatal("no crash")
	}
	in = f.installer(f.store, "")
	res, err := in.Rollback(context.Background(), RollbackOptions{Name: "web"})
	got, _, _ := in.InstalledRevision("web")
	t.Logf("Rollback = %+v, %v; installed now %d", res, err, got.Revision)
	if got.Revision != 2 {
		t.Errorf("one rollback of web@3 left web@%d installed", got.Revision)
	}
}
