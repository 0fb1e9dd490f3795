package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

func TestFence(t *testing.T) {
	dir := t.TempDir()
	var valid atomic.Bool
	valid.Store(true)
	stale := 0
	a, err := Claim(dir, Holder{Epoch: 5, Node: "a", Instance: "i1", PID: 1}, valid.Load, func(error) { stale++ })
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Check(); err != nil {
		t.Fatalf("check of the holder: %v", err)
	}
	h, err := ReadHolder(dir)
	if err != nil || h.Epoch != 5 || h.Node != "a" || h.Previous != nil {
		t.Fatalf("epoch record %+v, %v", h, err)
	}

	// The lease ends by this node's clock: no change, but nobody else
	// writes yet, so no self-fence.
	valid.Store(false)
	if err := a.Check(); !errors.Is(err, ErrFenced) || stale != 0 {
		t.Fatalf("check past the lease: %v (stale called %d times)", err, stale)
	}
	valid.Store(true)

	// Another node takes over with a later epoch: a's checks fail and
	// call stale once, whatever its clock says.
	b, err := Claim(dir, Holder{Epoch: 7, Node: "b", Instance: "i2", PID: 2}, func() bool { return true }, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := a.Check(); !errors.Is(err, ErrFenced) {
			t.Fatalf("check of a after b claimed: %v", err)
		}
	}
	if stale != 1 {
		t.Errorf("stale called %d times, want once", stale)
	}
	if p := b.Previous(); p == nil || p.Node != "a" || p.Epoch != 5 || p.PID != 1 {
		t.Errorf("b's record of the previous holder: %+v", p)
	}
	// a cannot claim again with its older epoch.
	if _, err := Claim(dir, Holder{Epoch: 5, Node: "a", Instance: "i1"}, func() bool { return true }, nil); !errors.Is(err, ErrFenced) {
		t.Errorf("claim with an older epoch: %v", err)
	}
	// b claims again under the same lease (its act restarted): it keeps
	// the record of who was before.
	b2, err := Claim(dir, Holder{Epoch: 7, Node: "b", Instance: "i2"}, func() bool { return true }, nil)
	if err != nil || b2.Previous() == nil || b2.Previous().Node != "a" {
		t.Fatalf("claim again under the same epoch: %v, previous %+v", err, b2.Previous())
	}
	// An unreadable record allows nothing.
	if err := os.WriteFile(filepath.Join(dir, EpochFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.Check(); !errors.Is(err, ErrFenced) {
		t.Errorf("check with a corrupt record: %v", err)
	}
	// A lease not valid any more when claimed is refused.
	if _, err := Claim(t.TempDir(), Holder{Epoch: 9, Node: "c"}, func() bool { return false }, nil); !errors.Is(err, ErrFenced) {
		t.Errorf("claim of an ended lease: %v", err)
	}
}
