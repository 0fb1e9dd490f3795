package distribution

import (
	"bufio"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFileAtomic writes the file name through write: to a temporary file
// beside it (named .NAME.*.tmp), synced, given perm, and renamed over
// name, whose directory is then synced. A crash leaves the old file or the
// new one, never half of one. It returns the size written.
func WriteFileAtomic(name string, perm fs.FileMode, write func(io.Writer) error) (int64, error) {
	dir := filepath.Dir(name)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(name)+".*.tmp")
	if err != nil {
		return 0, err
	}
	size, err := writeTemp(tmp, perm, write)
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return 0, err
	}
	// The rename is durable once the directory is synced.
	d, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return size, err
}

// writeTemp fills, syncs and closes a temporary file.
func writeTemp(tmp *os.File, perm fs.FileMode, write func(io.Writer) error) (int64, error) {
	bw := bufio.NewWriterSize(tmp, 1<<20)
	err := write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	var size int64
	if err == nil {
		var info fs.FileInfo
		if info, err = tmp.Stat(); err == nil {
			size = info.Size()
		}
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	return size, err
}
