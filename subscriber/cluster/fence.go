package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"ted/distribution"
)

// EpochFile is the record, in a cluster's shared directory, of the lease
// epoch the shared directory is written under: the node that holds the
// lease writes it before it changes anything there, and every change
// checks it first (Fence).
const EpochFile = "epoch.json"

// ErrFenced is wrapped by the error of a change a Fence refused.
var ErrFenced = errors.New("fenced off")

// Holder is what EpochFile says: who writes the shared directory, under
// which epoch, and who did before (for an operator looking for a process
// that still holds the store's lock).
type Holder struct {
	Epoch    uint64    `json:"epoch"`
	Node     string    `json:"node"`
	Instance string    `json:"instance"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Since    time.Time `json:"since"`
	Previous *Holder   `json:"previous,omitempty"`
}

func (h *Holder) String() string {
	return fmt.Sprintf("node %s (pid %d on %s, epoch %d)", h.Node, h.PID, h.Host, h.Epoch)
}

// ReadHolder reads the epoch record of a shared directory; nil, nil if
// there is none yet.
func ReadHolder(sharedDir string) (*Holder, error) {
	file := filepath.Join(sharedDir, EpochFile)
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var h Holder
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &h, nil
}

// Fence guards every change a node makes to its cluster's shared
// directory: Check passes only while the node's lease is valid by its own
// clock and the epoch on disk is still its own. A node that finds another
// epoch there has been replaced (it was paused, or cut off, past its
// lease): Check calls Stale once, which is expected to stop the process
// without writing anything more.
//
// What remains between a Check and the change it guards is the time
// between two instructions: a process paused exactly there (SIGSTOP, a
// frozen VM) makes that one change when it resumes. The store's own
// background work (badger's compactions) is not checked change by change;
// the daemon checks the fence every 100 ms besides, so a resumed node
// fences itself off within that. Both are safe because the next holder
// changes nothing under the root or in the store before it holds the
// store's lock, which the paused process holds until it exits: its late
// changes land before the next holder's recovery, which sees them as part
// of the interrupted step. Where the shared storage's locks are not
// coherent across hosts they can land after; docs/clusters.md says so.
type Fence struct {
	dir   string
	me    Holder
	valid func() bool
	stale func(error)
	once  sync.Once
}

// Claim records me.Epoch as the epoch the shared directory dir is written
// under, durably, and returns the fence of that epoch. valid reports
// whether the lease of me.Epoch is still valid by this node's clock; stale
// is called once when a Check finds another epoch on disk. A newer epoch
// on disk already is refused: this node's lease is stale.
func Claim(dir string, me Holder, valid func() bool, stale func(error)) (*Fence, error) {
	cur, err := ReadHolder(dir)
	if err != nil {
		return nil, fmt.Errorf("shared_dir: %w", err)
	}
	if cur != nil && cur.Epoch > me.Epoch {
		return nil, fmt.Errorf("%w: the shared directory is written under a newer epoch by %s; this node's epoch is %d", ErrFenced, cur, me.Epoch)
	}
	if !valid() {
		return nil, fmt.Errorf("%w: the lease of epoch %d ended before it was recorded", ErrFenced, me.Epoch)
	}
	if cur != nil && cur.Epoch != me.Epoch {
		prev := *cur
		prev.Previous = nil
		me.Previous = &prev
	} else if cur != nil {
		me.Previous = cur.Previous // the same lease again (act restarted)
	}
	b, err := json.MarshalIndent(me, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := distribution.WriteFileAtomic(filepath.Join(dir, EpochFile), 0o644, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	}); err != nil {
		return nil, fmt.Errorf("shared_dir: record the lease epoch: %w", err)
	}
	return &Fence{dir: dir, me: me, valid: valid, stale: stale}, nil
}

// Epoch is the epoch this fence guards.
func (f *Fence) Epoch() uint64 { return f.me.Epoch }

// Previous is who wrote the shared directory before this node's epoch, or
// nil.
func (f *Fence) Previous() *Holder { return f.me.Previous }

// Check returns nil if the next change to the shared directory may be
// made: the lease is valid by this node's clock and the epoch on disk is
// still this node's. Otherwise it returns an error wrapping ErrFenced.
func (f *Fence) Check() error {
	if !f.valid() {
		return fmt.Errorf("%w: the lease of epoch %d has ended by this node's clock", ErrFenced, f.me.Epoch)
	}
	cur, err := ReadHolder(f.dir)
	if err != nil || cur == nil {
		// Unreadable is not ours: no change without knowing.
		return fmt.Errorf("%w: cannot read the epoch record in %s: %v", ErrFenced, f.dir, err)
	}
	switch {
	case cur.Epoch > f.me.Epoch || (cur.Epoch == f.me.Epoch && cur.Instance != f.me.Instance):
		err := fmt.Errorf("%w: the shared directory is now written by %s; this node's epoch was %d", ErrFenced, cur, f.me.Epoch)
		f.once.Do(func() {
			if f.stale != nil {
				f.stale(err)
			}
		})
		return err
	case cur.Epoch < f.me.Epoch:
		// An older holder, paused between its lease check and its write
		// of the record, wrote over ours: it is the stale one (it finds
		// our epoch newer at its next check). Nothing is changed until we
		// claim again (act starts again and does).
		return fmt.Errorf("%w: the epoch record was overwritten by an older holder, %s; claiming it again", ErrFenced, cur)
	}
	return nil
}
