package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// The store directory holds the marker, the lock file, badger's directory
// and the pack files (packs.go).
const (
	markerName = "TED-STORE"
	lockName   = "LOCK"
	badgerDir  = "badger"
	// storeFormat is the layout written by this code (badger_keys.go,
	// packs.go). Format 1 kept chunk bytes in badger's value log.
	storeFormat = 2
)

// marker is the content of the marker file: what says a directory is a TED
// store, and of which layout.
type marker struct {
	Format int `json:"format"`
}

// prepareDir checks that dir is a store of a format this code reads, or
// makes it one when create allows: a missing or empty directory.
func prepareDir(dir string, create bool) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !create {
			return fmt.Errorf("open store %s: directory does not exist", dir)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create store %s: %w", dir, err)
		}
		return writeMarker(dir)
	case err != nil:
		return fmt.Errorf("open store %s: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("open store %s: %w: not a directory", dir, ErrNotAStore)
	}

	b, err := os.ReadFile(filepath.Join(dir, markerName))
	switch {
	case err == nil:
		var m marker
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("open store %s: %s: %v", dir, markerName, err)
		}
		if m.Format != storeFormat {
			return fmt.Errorf("open store %s: store format %d, this version reads format %d", dir, m.Format, storeFormat)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("open store %s: %w", dir, err)
	}

	empty, err := isEmptyDir(dir)
	switch {
	case err != nil:
		return fmt.Errorf("open store %s: %w", dir, err)
	case !empty:
		return fmt.Errorf("open store %s: %w: the directory is not empty and has no %s file", dir, ErrNotAStore, markerName)
	case !create:
		return fmt.Errorf("open store %s: directory is empty, no store there", dir)
	}
	return writeMarker(dir)
}

// isEmptyDir reports whether dir holds nothing but, perhaps, the temporary
// marker of a creation that was interrupted.
func isEmptyDir(dir string) (bool, error) {
	names, err := readDirNames(dir, 2)
	if err != nil {
		return false, err
	}
	return len(names) == 0 || len(names) == 1 && names[0] == markerName+".tmp", nil
}

func readDirNames(dir string, n int) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(n)
	if errors.Is(err, io.EOF) {
		return nil, nil
	}
	return names, err
}

// writeMarker writes the marker file whole or not at all: to a temporary
// name, synced, then renamed, and the directory synced.
func writeMarker(dir string) error {
	b, err := json.Marshal(marker{Format: storeFormat})
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, markerName+".tmp")
	if err := writeSynced(tmp, append(b, '\n')); err != nil {
		return fmt.Errorf("create store %s: %w", dir, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, markerName)); err != nil {
		return fmt.Errorf("create store %s: %w", dir, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("create store %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("create store %s: sync directory: %w", dir, err)
	}
	return nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// diskBytes is the space the files under dir take: allocated blocks where
// the platform says, which is less than the size of badger's sparse,
// preallocated files.
func diskBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // badger removed it while we walked
		}
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		total += allocatedBytes(fi)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("disk usage of %s: %w", dir, err)
	}
	return total, nil
}
