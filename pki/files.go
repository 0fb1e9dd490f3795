package pki

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// ErrExists is returned when a file to be written already exists and the
// caller did not ask to overwrite it.
var ErrExists = errors.New("already exists; refusing to overwrite it")

// Modes of the files this package writes.
const (
	modePrivate fs.FileMode = 0o600
	modePublic  fs.FileMode = 0o644
)

// outFile is one file to be written.
type outFile struct {
	path string
	data []byte
	perm fs.FileMode
}

// writeFiles writes files as a set: either all are written or, as far as the
// file system allows, none are. Without force no existing file is touched:
// each is created with O_EXCL. With force each is first written to a
// temporary file beside it and then renamed over it. Every file has its
// final mode from the moment it is created, so a private key is never
// readable by others, not even while it is written.
func writeFiles(force bool, files ...outFile) error {
	if !force {
		for _, f := range files {
			if _, err := os.Lstat(f.path); err == nil {
				return fmt.Errorf("%s: %w", f.path, ErrExists)
			}
		}
		var created []string
		for _, f := range files {
			if err := createExclusive(f); err != nil {
				removeAll(created)
				return err
			}
			created = append(created, f.path)
		}
		return nil
	}
	var temps []string
	for _, f := range files {
		tmp, err := writeTemp(f)
		if err != nil {
			removeAll(temps)
			return err
		}
		temps = append(temps, tmp)
	}
	for i, f := range files {
		if err := os.Rename(temps[i], f.path); err != nil {
			removeAll(temps[i:])
			return fmt.Errorf("write %s: %w", f.path, err)
		}
		syncDir(filepath.Dir(f.path))
	}
	return nil
}

func createExclusive(f outFile) error {
	fh, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s: %w", f.path, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	// Chmod only widens a public file that the umask narrowed; a private
	// file was created 0600 and umask can only take bits away.
	err = errors.Join(fh.Chmod(f.perm), writeSync(fh, f.data), fh.Close())
	if err != nil {
		_ = os.Remove(f.path)
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	return nil
}

// writeTemp writes f to a new temporary file in f's directory and returns its
// name. os.CreateTemp creates it 0600.
func writeTemp(f outFile) (string, error) {
	dir, base := filepath.Split(f.path)
	if dir == "" {
		dir = "."
	}
	fh, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", f.path, err)
	}
	err = errors.Join(fh.Chmod(f.perm), writeSync(fh, f.data), fh.Close())
	if err != nil {
		_ = os.Remove(fh.Name())
		return "", fmt.Errorf("write %s: %w", f.path, err)
	}
	return fh.Name(), nil
}

func writeSync(fh *os.File, data []byte) error {
	if _, err := fh.Write(data); err != nil {
		return err
	}
	return fh.Sync()
}

// syncDir makes a rename in dir durable. It is best effort: some systems
// cannot sync a directory, and the file itself is already synced.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

func removeAll(paths []string) {
	for _, p := range paths {
		_ = os.Remove(p)
	}
}

// readPrivate reads a private key file, refusing one that its group or others
// may read or write, as ssh does.
func readPrivate(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	info, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	// Windows has no Unix permission bits to check.
	if perm := info.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("%s: private key is accessible by others (mode %04o); chmod 600 it", path, perm)
	}
	data, err := io.ReadAll(fh)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// decodePEM returns the first PEM block in data, which must be of type want.
func decodePEM(path string, data []byte, want string) (*pem.Block, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM data found", path)
	}
	if block.Type != want {
		return nil, fmt.Errorf("%s: PEM block is %q, want %q", path, block.Type, want)
	}
	return block, nil
}
