//go:build unix

package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// dirLock is an exclusive flock on the store's lock file, held while the
// store is open. Badger locks its own directory too, but its error cannot be
// told from others; this one can, and names the store.
type dirLock struct{ f *os.File }

func lockDir(dir string) (*dirLock, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store %s: lock: %w", dir, err)
	}
	// flock locks belong to the open file, so a second Open in this
	// process is refused as well as another process.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("open store %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open store %s: lock: %w", dir, err)
	}
	return &dirLock{f: f}, nil
}

// release unlocks; the file stays, as removing it would race with the next
// Open.
func (l *dirLock) release() error {
	if l.f == nil {
		return nil // not locked (Options.NoLock)
	}
	return l.f.Close()
}

// allocatedBytes is the space a file's blocks take.
func allocatedBytes(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}

// FreeBytes returns the space available to this process on the file system
// holding dir: what a node checks against its min_free_disk floor.
func FreeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
