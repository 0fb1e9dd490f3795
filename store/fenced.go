package store

import (
	"errors"
	"fmt"

	"ted/distribution"
)

// ErrFenced is wrapped by the error of a change a fenced store refused.
var ErrFenced = errors.New("store change fenced off")

// Fenced returns st with every change guarded by check: PutChunk,
// AddRevision, Prune, RepairChunk, Sync and Close call check first, and an
// error it returns is returned instead of making the change. A cluster
// node's store in the shared directory is fenced by its lease
// (subscriber/cluster): a node whose lease has ended writes nothing more
// there.
//
// Close of a fenced store whose check fails does not close it: closing
// writes (badger flushes its memtable). It returns the error and leaves
// the files as a crash would; the process is expected to exit without
// writing anything more (a self-fence), and the next holder recovers the
// store as after a crash.
func Fenced(st Store, check func() error) Store {
	return &fenced{Store: st, fence: check}
}

type fenced struct {
	Store
	fence func() error
}

func (f *fenced) check() error {
	if err := f.fence(); err != nil {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return nil
}

var _ Store = (*fenced)(nil)

func (f *fenced) PutChunk(id distribution.ChunkID, encoded []byte) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.PutChunk(id, encoded)
}

func (f *fenced) AddRevision(s *distribution.Signed, m *distribution.Manifest) (RevisionInfo, error) {
	if err := f.check(); err != nil {
		return RevisionInfo{}, err
	}
	return f.Store.AddRevision(s, m)
}

func (f *fenced) Prune(name string, keep int) (PruneResult, error) {
	if err := f.check(); err != nil {
		return PruneResult{}, err
	}
	return f.Store.Prune(name, keep)
}

func (f *fenced) RepairChunk(id distribution.ChunkID, encoded []byte) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.RepairChunk(id, encoded)
}

func (f *fenced) Sync() error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.Sync()
}

func (f *fenced) Close() error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.Close()
}
