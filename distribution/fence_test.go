package distribution

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// cancellingChunks cancels the work at its first chunk, as a cluster
// node's Interrupt does when another goroutine's fence check was refused
// (the lease ended, or another epoch is on disk): from then on the fence
// refuses every change.
type cancellingChunks struct {
	memChunks
	cancel context.CancelFunc
	ended  *atomic.Bool
}

func (c cancellingChunks) Chunk(id ChunkID) ([]byte, error) {
	c.ended.Store(true)
	c.cancel()
	return c.memChunks.Chunk(id)
}

// The fence is asked before every change under dest, also the removal of
// a temporary file when the work stops because ctx ended (a cluster node
// interrupted after a check refused elsewhere): then nothing is removed.
func TestMaterializeStoppedLeavesTemp(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "big"), randomBytes(1, 300<<10), 0o644)
	chunks := memChunks{}
	m, _, err := BuildDir(context.Background(), src, buildOpts(1), chunks)
	if err != nil {
		t.Fatal(err)
	}
	m.KeyID = "test"
	dest := t.TempDir()
	var ended atomic.Bool
	refusedThenChanged := false
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fence := func() error {
		if ended.Load() {
			return errors.New("lease ended")
		}
		return nil
	}
	err = Materialize(ctx, m, cancellingChunks{memChunks: chunks, cancel: cancel, ended: &ended}, dest, MaterializeOptions{Fence: fence})
	if err == nil {
		t.Fatal("Materialize went through a cancelled context")
	}
	names, _ := os.ReadDir(dest)
	temps := 0
	for _, n := range names {
		if strings.HasPrefix(n.Name(), ".ted-") {
			temps++
		}
	}
	if temps == 0 {
		refusedThenChanged = true
	}
	if refusedThenChanged {
		t.Errorf("the temporary file was removed after the fence would refuse any change (Materialize: %v)", err)
	}
}
