package distribution

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// MaterializeOptions tune Materialize.
type MaterializeOptions struct {
	// Progress, if set, is called after each file.
	Progress func(BuildProgress)
	// Fence, if set, is called before every change under dest (each
	// directory made, each rename, each removal, each mode set); an error
	// stops the work there, before that change. A cluster node checks
	// there that it still holds its lease.
	Fence func() error
	// From is how many of m's entries are in place already (a write a
	// checkpoint recorded): they are not written again, but directories
	// among them still get their final mode.
	From int
	// Checkpoint, if set, is called about every CheckpointEvery with the
	// number of entries in place: everything before that entry is written
	// and its directory synced, so a later Materialize with From set to it
	// can go on from there. An error stops the work.
	Checkpoint      func(next int) error
	CheckpointEvery time.Duration
}

// Materialize writes the content of m under dest, creating dest if needed.
//
// Every write goes through an os.Root on dest, so nothing outside dest is
// touched, whatever symlinks dest already holds. Files are written to a
// temporary name beside their destination, synced and renamed over it, so no
// reader ever sees half a file and a running program's binary can be
// replaced. Paths of dest that m does not name are left alone. Every chunk is
// checked against its id before a byte of it is written.
func Materialize(ctx context.Context, m *Manifest, src ChunkSource, dest string, opts MaterializeOptions) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("extract %s to %s: %w", m.label(), dest, err)
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return fmt.Errorf("extract %s to %s: %w", m.label(), dest, err)
	}
	defer root.Close()
	w := &materializer{ctx: ctx, m: m, src: src, root: root, opts: opts}
	if err := w.run(); err != nil {
		return fmt.Errorf("extract %s to %s: %w", m.label(), dest, err)
	}
	return nil
}

type materializer struct {
	ctx      context.Context
	m        *Manifest
	src      ChunkSource
	root     *os.Root
	opts     MaterializeOptions
	progress BuildProgress
	// fenced: Fence refused a change; nothing more is changed, not even
	// a temporary file removed.
	fenced bool
}

func (w *materializer) run() error {
	w.progress.TotalFiles, w.progress.TotalBytes, _ = w.m.Totals()
	// Directories are created writable by us and get their final mode at
	// the end, deepest first, so read-only directories can be filled.
	var dirs []*Entry
	touched := map[string]struct{}{".": {}}
	from := min(max(w.opts.From, 0), len(w.m.Entries))
	for i := range w.m.Entries[:from] {
		if e := &w.m.Entries[i]; e.Type == TypeDir {
			dirs = append(dirs, e)
		}
	}
	lastCheckpoint := time.Now()
	for i := from; i < len(w.m.Entries); i++ {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		if w.opts.Checkpoint != nil && i > from && time.Since(lastCheckpoint) >= w.opts.CheckpointEvery {
			// Everything before entry i is renamed into place; it is in
			// place for good once its directories are synced.
			if err := w.syncDirs(touched); err != nil {
				return err
			}
			touched = map[string]struct{}{".": {}}
			if err := w.opts.Checkpoint(i); err != nil {
				return err
			}
			lastCheckpoint = time.Now()
		}
		e := &w.m.Entries[i]
		touched[path.Dir(e.Path)] = struct{}{}
		var err error
		switch e.Type {
		case TypeDir:
			err = w.dir(e)
			dirs = append(dirs, e)
		case TypeFile:
			err = w.file(e)
		case TypeSymlink:
			err = w.symlink(e)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", e.Path, err)
		}
	}
	// Renames are durable only once their directory is synced; sync while
	// the directories are still open to us, before their final modes.
	if err := w.syncDirs(touched); err != nil {
		return err
	}
	for _, e := range slices.Backward(dirs) {
		if err := w.fence(); err != nil {
			return err
		}
		if err := w.root.Chmod(e.Path, FileMode(e.Mode)); err != nil {
			return fmt.Errorf("%s: %w", e.Path, unwrapPath(err))
		}
	}
	return nil
}

func (w *materializer) syncDirs(dirs map[string]struct{}) error {
	for dir := range dirs {
		if err := SyncDir(w.root, dir); err != nil {
			return fmt.Errorf("%s: sync: %w", dir, err)
		}
	}
	return nil
}

// dropTemp removes a temporary file that will not be renamed into place,
// unless the work is stopping (ctx ended, or Fence refused a change): a
// removal is a change too, and the next run sweeps temporary files.
func (w *materializer) dropTemp(tmp string) {
	if w.fenced || w.ctx.Err() != nil || w.fence() != nil {
		return
	}
	_ = w.root.Remove(tmp)
}

// fence asks Fence, if set, whether the next change may be made.
func (w *materializer) fence() error {
	if w.opts.Fence == nil {
		return nil
	}
	err := w.opts.Fence()
	w.fenced = w.fenced || err != nil
	return err
}

func (w *materializer) dir(e *Entry) error {
	info, err := w.root.Lstat(e.Path)
	switch {
	case err == nil && info.IsDir():
		// An existing directory must be writable by us while it is
		// filled (a read-only one from an earlier revision, for a
		// subscriber not running as root); it gets its final mode at the
		// end.
		if info.Mode().Perm()&0o700 != 0o700 {
			if err := w.fence(); err != nil {
				return err
			}
			return unwrapPath(w.root.Chmod(e.Path, info.Mode().Perm()|0o700))
		}
		return nil
	case err == nil:
		// A file or symlink stands where this revision has a directory.
		if err := w.fence(); err != nil {
			return err
		}
		if err := w.root.Remove(e.Path); err != nil {
			return unwrapPath(err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return unwrapPath(err)
	}
	if err := w.fence(); err != nil {
		return err
	}
	return unwrapPath(w.root.Mkdir(e.Path, 0o700))
}

func (w *materializer) file(e *Entry) error {
	tmp, err := TempName(e.Path)
	if err != nil {
		return err
	}
	if err := w.fence(); err != nil {
		return err
	}
	f, err := w.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return unwrapPath(err)
	}
	err = w.writeChunks(f, e)
	if err == nil {
		err = f.Chmod(FileMode(e.Mode))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = w.replace(tmp, e.Path)
	}
	if err != nil {
		w.dropTemp(tmp)
		return unwrapPath(err)
	}
	w.progress.Files++
	if w.opts.Progress != nil {
		w.opts.Progress(w.progress)
	}
	return nil
}

func (w *materializer) writeChunks(f *os.File, e *Entry) error {
	for _, c := range e.Chunks {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		plain, err := readChunk(w.src, c)
		if err != nil {
			return err
		}
		if _, err := f.Write(plain); err != nil {
			return err
		}
		w.progress.Bytes += int64(len(plain))
	}
	return nil
}

func (w *materializer) symlink(e *Entry) error {
	tmp, err := TempName(e.Path)
	if err != nil {
		return err
	}
	if err := w.fence(); err != nil {
		return err
	}
	if err := w.root.Symlink(e.Target, tmp); err != nil {
		return unwrapPath(err)
	}
	if err := w.replace(tmp, e.Path); err != nil {
		w.dropTemp(tmp)
		return unwrapPath(err)
	}
	return nil
}

// replace renames tmp over p. A directory in the way is an error: it may
// hold files TED never installed.
func (w *materializer) replace(tmp, p string) error {
	if info, err := w.root.Lstat(p); err == nil && info.IsDir() {
		return errors.New("a directory is in the way")
	}
	// Checked again right before the rename: writing the file may have
	// taken long enough for the lease to end.
	if err := w.fence(); err != nil {
		return err
	}
	return w.root.Rename(tmp, p)
}

// IsTempName reports whether a file name (not a path) is one TempName
// makes: a file a crash left half written.
func IsTempName(name string) bool {
	hexPart, ok := strings.CutPrefix(name, ".ted-")
	if !ok {
		return false
	}
	hexPart, ok = strings.CutSuffix(hexPart, ".tmp")
	if !ok || len(hexPart) != 12 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil
}

// TempName returns a fresh hidden name beside the slash-separated path p,
// for a file written there and then renamed over p.
func TempName(p string) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	base := ".ted-" + hex.EncodeToString(b[:]) + ".tmp"
	if dir := path.Dir(p); dir != "." {
		return dir + "/" + base, nil
	}
	return base, nil
}

// SyncDir makes the entries of directory dir of root durable: renames and
// removals in it survive a crash only once it is synced.
func SyncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return unwrapPath(err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// ContentProblem is one defect found by CheckContent.
type ContentProblem struct {
	Path  string  // the first file that uses the chunk
	Chunk ChunkID // the chunk at fault
	Err   error   // wraps ErrChunkMissing or ErrChunkCorrupt
}

// CheckContent reads every distinct chunk m references from src and checks
// it against its id and size, calling problem for each defect. It returns the
// number of problems, or an error if ctx ends first.
func CheckContent(ctx context.Context, m *Manifest, src ChunkSource, problem func(ContentProblem)) (int, error) {
	checked := make(map[ChunkID]struct{})
	problems := 0
	for i := range m.Entries {
		e := &m.Entries[i]
		for _, c := range e.Chunks {
			if _, ok := checked[c.ID]; ok {
				continue
			}
			if err := ctx.Err(); err != nil {
				return problems, err
			}
			checked[c.ID] = struct{}{}
			if _, err := readChunk(src, c); err != nil {
				problems++
				if problem != nil {
					problem(ContentProblem{Path: e.Path, Chunk: c.ID, Err: err})
				}
			}
		}
	}
	return problems, nil
}

// readChunk fetches a chunk and returns its plain bytes, checked against the
// id and the size the manifest gives.
// ReadFile returns the content of file entry e from src, every chunk
// checked, refusing a file of more than max bytes.
func ReadFile(src ChunkSource, e *Entry, max int64) ([]byte, error) {
	if e.Type != TypeFile {
		return nil, fmt.Errorf("%s: a %s, not a file", e.Path, e.Type)
	}
	if e.Size > max {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", e.Path, e.Size, max)
	}
	out := make([]byte, 0, e.Size)
	for _, c := range e.Chunks {
		plain, err := readChunk(src, c)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Path, err)
		}
		out = append(out, plain...)
	}
	return out, nil
}

func readChunk(src ChunkSource, c ChunkRef) ([]byte, error) {
	encoded, err := src.Chunk(c.ID)
	if err != nil {
		return nil, err
	}
	plain, err := DecodeChunk(c.ID, encoded)
	if err != nil {
		return nil, err
	}
	if len(plain) != int(c.Size) {
		return nil, fmt.Errorf("%w: chunk %s has %d bytes, manifest says %d", ErrChunkCorrupt, c.ID.Short(), len(plain), c.Size)
	}
	return plain, nil
}
