package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"ted/distribution"
)

// VerifyTree checks that dir holds revision m: it re-reads every entry and
// checks its type and mode, a symlink's target, a file's size and the
// SHA-256 of each of its chunks (spans of the sizes the manifest gives).
// Paths m does not name are not looked at. It returns an error naming the
// first path that differs; a content mismatch wraps
// distribution.ErrChunkCorrupt. Reads go through an os.Root on dir.
func VerifyTree(ctx context.Context, m *distribution.Manifest, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("verify %s@%d in %s: %w", m.Name, m.Revision, dir, err)
	}
	defer root.Close()
	v := verifier{ctx: ctx, root: root}
	for i := range m.Entries {
		e := &m.Entries[i]
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := v.entry(e); err != nil {
			return fmt.Errorf("verify %s@%d in %s: %s: %w", m.Name, m.Revision, dir, e.Path, err)
		}
	}
	return nil
}

type verifier struct {
	ctx  context.Context
	root *os.Root
	buf  []byte // one chunk, reused
}

func (v *verifier) entry(e *distribution.Entry) error {
	info, err := v.root.Lstat(e.Path)
	if err != nil {
		return unwrapPath(err)
	}
	if !isType(info.Mode(), e.Type) {
		return fmt.Errorf("is a %s, want a %s", typeName(info.Mode()), e.Type)
	}
	if e.Type == distribution.TypeSymlink {
		// A symlink's own mode is not carried over (Linux has none).
		target, err := v.root.Readlink(e.Path)
		if err != nil {
			return unwrapPath(err)
		}
		if target != e.Target {
			return fmt.Errorf("symlink to %q, want %q", target, e.Target)
		}
		return nil
	}
	const modeBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	if got, want := info.Mode()&modeBits, e.FileMode()&modeBits; got != want {
		return fmt.Errorf("mode %v, want %v", got, want)
	}
	if e.Type == distribution.TypeFile {
		return v.content(e)
	}
	return nil
}

func (v *verifier) content(e *distribution.Entry) error {
	f, err := v.root.Open(e.Path)
	if err != nil {
		return unwrapPath(err)
	}
	defer f.Close()
	// The file open now is the one to check, whatever Lstat saw.
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("is a %s, want a file", typeName(info.Mode()))
	}
	if info.Size() != e.Size {
		return fmt.Errorf("%d bytes, want %d", info.Size(), e.Size)
	}
	var offset int64
	for i, c := range e.Chunks {
		if err := v.ctx.Err(); err != nil {
			return err
		}
		if cap(v.buf) < int(c.Size) {
			v.buf = make([]byte, c.Size, max(int(c.Size), distribution.ChunkMaxBytes))
		}
		span := v.buf[:c.Size]
		if _, err := io.ReadFull(f, span); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: shorter than chunk %d (%s) at byte %d", distribution.ErrChunkCorrupt, i, c.ID.Short(), offset)
			}
			return err
		}
		if distribution.SumChunk(span) != c.ID {
			return fmt.Errorf("%w: bytes %d to %d differ from chunk %d (%s)", distribution.ErrChunkCorrupt, offset, offset+int64(c.Size), i, c.ID.Short())
		}
		offset += int64(c.Size)
	}
	return nil
}
