package install

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"ted/distribution"
)

// manyFiles writes a tree of n small files.
func manyFiles(t *testing.T, n int, seed uint64) string {
	t.Helper()
	dir := tempDir(t)
	for i := range n {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("d%02d/f%04d", i%10, i)), binary(seed+uint64(i), 200+i), 0o644)
	}
	return dir
}

// fencedInstaller is an installer writing under a lease epoch, whose fence
// lets allow changes through and refuses every one after.
func (f *fixture) fencedInstaller(node string, epoch uint64, allow int) (*Installer, *int) {
	f.t.Helper()
	calls := 0
	fence := func() error {
		calls++
		if allow >= 0 && calls > allow {
			return errors.New("lease ended")
		}
		return nil
	}
	log := slog.New(slog.NewTextHandler(f.t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	in, err := New(f.root, f.state, f.store, Options{Log: log, Fence: fence, Node: node, Epoch: epoch,
		CheckpointEvery: time.Nanosecond})
	if err != nil {
		f.t.Fatal(err)
	}
	return in, &calls
}

// filesInstallation is the installation of a distribution of files as the
// subscriber daemon hands over one without a pre-action (as all of these
// tests' revisions are): one part, which can be carried on after an
// interruption.
func filesInstallation(m *distribution.Manifest) *Installation {
	return &Installation{Name: m.Name, Revision: m.Revision, Version: m.Version, Kind: distribution.KindFiles,
		Requires: m.Requires, Parts: []Part{{M: m}}, Resumable: true}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Sys().(*syscall.Stat_t).Ino
}

// writtenBefore returns the last file of m among its first written
// entries, under target, and its inode.
func writtenBefore(t *testing.T, m *distribution.Manifest, written int, target string) (string, uint64) {
	t.Helper()
	var early string
	for _, e := range m.Entries[:written] {
		if e.Type == distribution.TypeFile {
			early = filepath.Join(target, e.Path)
		}
	}
	return early, inode(t, early)
}

// readHistory reads the journal's history in the state directory.
func readHistory(t *testing.T, stateDir string) []historyLine {
	t.Helper()
	f, err := os.Open(filepath.Join(stateDir, historyFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []historyLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l historyLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("journal history line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// A node fenced off in the middle of a write stops there, undoing nothing;
// the next node (a later epoch) carries the write on from the last
// checkpoint: what was written before it is not written again, nothing is
// rolled back, and the journal's history shows each step under the epoch
// that wrote it.
func TestFencedWriteGoesOnFromItsCheckpoint(t *testing.T) {
	for _, how := range []string{"recover", "install again"} {
		t.Run(how, func(t *testing.T) { testFencedWriteGoesOn(t, how) })
	}
}

func testFencedWriteGoesOn(t *testing.T, how string) {
	f := newFixture(t)
	m1 := f.publish("web", 1, "web", manyFiles(t, 50, 1))
	src2 := manyFiles(t, 300, 1000)
	m2 := f.publish("web", 2, "web", src2)
	f.install(f.installer(f.store, ""), m1)
	target := filepath.Join(f.root, "web")

	// Node a (epoch 5) loses its lease some way into writing rev 2.
	a, _ := f.fencedInstaller("a", 5, 400)
	err := a.InstallParts(context.Background(), filesInstallation(m2), nil)
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("InstallParts: %v, want it stopped by the fence", err)
	}
	pending, err := a.Pending()
	if err != nil || len(pending) != 1 || pending[0].Step != StepWrite {
		t.Fatalf("pending after the fence stopped the write: %+v, %v", pending, err)
	}
	j, _, err := a.state.readJournal("web")
	if err != nil {
		t.Fatal(err)
	}
	if j.Written == 0 || j.Written >= len(m2.Entries) || j.Epoch != 5 || j.Node != "a" || !j.Resumable {
		t.Fatalf("journal after the stop: written %d of %d, epoch %d, node %q, resumable %v", j.Written, len(m2.Entries), j.Epoch, j.Node, j.Resumable)
	}
	// A file written before the checkpoint, to see that it is not written
	// again.
	early, earlyInode := writtenBefore(t, m2, j.Written, target)

	// Node b (epoch 6) takes over: its recovery goes on from there.
	b, _ := f.fencedInstaller("b", 6, -1)
	if how == "recover" {
		resumed := 0
		resume := func(name string, rev uint64) (*Installation, error) {
			resumed++
			return filesInstallation(m2), nil
		}
		if err := b.Recover(context.Background(), nil, resume); err != nil {
			t.Fatal(err)
		}
		if resumed != 1 {
			t.Fatalf("resume called %d times", resumed)
		}
	} else if err := b.InstallParts(context.Background(), filesInstallation(m2), nil); err != nil {
		t.Fatal(err)
	}
	assertPending(t, b, nil)
	assertInstalled(t, b, "web", 2, "web")
	assertExactly(t, m2, src2, target, nil)
	if got := inode(t, early); got != earlyInode {
		t.Errorf("%s was written again after the checkpoint (inode %d, was %d)", early, got, earlyInode)
	}
	history := readHistory(t, f.state)
	var lastEpoch uint64
	steps := map[uint64][]string{}
	for _, l := range history {
		if l.Dist != "web" || l.To != 2 {
			continue
		}
		if l.Epoch < lastEpoch {
			t.Errorf("the journal's history goes back from epoch %d to %d: %+v", lastEpoch, l.Epoch, l)
		}
		lastEpoch = l.Epoch
		steps[l.Epoch] = append(steps[l.Epoch], l.Step)
		if l.Step == string(StepRestore) {
			t.Errorf("rev 2 was rolled back: %+v", l)
		}
	}
	if len(steps[5]) == 0 || len(steps[6]) == 0 || steps[6][len(steps[6])-1] != "done" {
		t.Errorf("history by epoch: %v; want a's steps under 5, then b's under 6 ending in done", steps)
	}
}

// A revision whose pre-action ran is not carried on but rolled back (the
// pre-action's effect is on the node that ran it), and a fence that
// refuses from the start changes nothing at all.
func TestResumeOnlyWhatIsResumable(t *testing.T) {
	f := newFixture(t)
	m1 := f.publish("web", 1, "web", manyFiles(t, 20, 1))
	m2 := f.publish("web", 2, "web", manyFiles(t, 200, 500))
	f.install(f.installer(f.store, ""), m1)
	before := listing(t, f.root)

	a, calls := f.fencedInstaller("a", 5, 1) // New asks once

	inst := filesInstallation(m2)
	if err := a.InstallParts(context.Background(), inst, nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("InstallParts under a closed fence: %v", err)
	}
	if *calls != 2 {
		t.Errorf("the fence was asked %d times up to the first change, want 2", *calls)
	}
	assertSameTree(t, before, listing(t, f.root))
	assertPending(t, a, nil)

	// Fenced off mid-write, not resumable (a pre-action ran): rolled back.
	a, _ = f.fencedInstaller("a", 5, 300)
	inst.Resumable = false
	if err := a.InstallParts(context.Background(), inst, nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("InstallParts: %v", err)
	}
	b, _ := f.fencedInstaller("b", 6, -1)
	if err := b.Recover(context.Background(), nil, func(string, uint64) (*Installation, error) {
		t.Error("resume asked for an installation that is not resumable")
		return filesInstallation(m2), nil
	}); err != nil {
		t.Fatal(err)
	}
	assertSameTree(t, before, listing(t, f.root))
	assertInstalled(t, b, "web", 1, "web")
}
