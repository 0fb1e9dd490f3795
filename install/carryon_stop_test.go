package install

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// An extraction fenced off mid-write is meant to go on from its
// checkpoint on the next active node. If that node's context ends at the
// wrong moment (its own stand-down, a handover, an Interrupt after a
// refused check, SIGTERM) just as it reaches the interrupted journal,
// resumable() returns nil for "ctx ended" and the caller rolls the write
// back instead of leaving the journal: the restore step is recorded and
// the files written so far are removed (restore's removal loop does not
// look at ctx), so the next node starts from scratch.
func TestStopDuringCarryOnLeavesTheJournal(t *testing.T) {
	f := newFixture(t)
	m1 := f.publish("web", 1, "web", manyFiles(t, 50, 1))
	src2 := manyFiles(t, 300, 1000)
	m2 := f.publish("web", 2, "web", src2)
	f.install(f.installer(f.store, ""), m1)
	target := filepath.Join(f.root, "web")

	a, _ := f.fencedInstaller("a", 5, 400)
	if err := a.InstallParts(context.Background(), filesInstallation(m2), nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("InstallParts: %v, want it stopped by the fence", err)
	}
	j, _, err := a.state.readJournal("web")
	if err != nil || j.Step != StepWrite || j.Written == 0 {
		t.Fatalf("journal: %+v, %v", j, err)
	}
	early, earlyInode := writtenBefore(t, m2, j.Written, target)

	// Node b starts; its context ends just as it gets to the journal.
	b, _ := f.fencedInstaller("b", 6, -1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = b.InstallParts(ctx, filesInstallation(m2), nil)

	after, _, err := b.state.readJournal("web")
	if err != nil {
		t.Fatal(err)
	}
	if after.Step != StepWrite {
		t.Errorf("a stop turned the resumable write into a rollback: journal step %s (was write, %d of %d written)",
			after.Step, j.Written, len(m2.Entries))
	}
	if _, err := os.Lstat(early); err != nil {
		t.Errorf("%s, written before the checkpoint, was removed by a stop: %v", early, err)
	} else if inode(t, early) != earlyInode {
		t.Errorf("%s, written before the checkpoint, was replaced by a stop", early)
	}
}
