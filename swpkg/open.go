package swpkg

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"ted/distribution"
)

// Open verifies the .cpk file cpk and unpacks it into dir, which must be
// empty or absent, and returns its descriptor.
//
// It reads the file twice: first to check the digest, so a damaged file
// writes nothing, then to check every entry and unpack it through an os.Root
// on dir, so nothing is ever written outside dir. Every error that says the
// file is bad wraps ErrInvalidPackage and names the file; on any error, what
// Open wrote is removed.
func Open(cpk, dir string) (*Package, error) {
	f, err := os.Open(cpk)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	existed, err := emptyOrAbsent(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s into %s: %w", cpk, dir, err)
	}
	sum, err := scan(f, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cpk, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("%s: %w", cpk, err)
	}
	if !existed {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("open %s: %w", cpk, err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cpk, err)
	}
	defer root.Close()
	u := &unpacker{root: root}
	again, err := scan(f, u.entry)
	if err == nil {
		err = u.finish()
	}
	if err == nil && again != sum {
		err = fmt.Errorf("%w: the file changed while it was being opened", ErrInvalidPackage)
	}
	if err != nil {
		if existed {
			for _, name := range []string{DescriptorPath, ComponentsDir, ScriptsDir} {
				root.RemoveAll(name)
			}
		} else {
			os.RemoveAll(dir)
		}
		return nil, fmt.Errorf("%s: %w", cpk, err)
	}
	return u.pkg, nil
}

// emptyOrAbsent reports whether dir exists, and fails if it holds anything.
func emptyOrAbsent(dir string) (existed bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case len(entries) > 0:
		return true, fmt.Errorf("%s is not empty", dir)
	}
	return true, nil
}

// bad is an error that says the file breaks the .cpk rules.
func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidPackage, fmt.Sprintf(format, args...))
}

var errTruncated = bad("truncated (the file ends early)")

// blockSize is the tar block size; a ustar header is one block.
const blockSize = 512

// scan reads a .cpk stream, calls visit (if not nil) with every entry before
// the digest entry, and checks the digest and that the stream ends exactly as
// Compile ends it. It returns the digest.
func scan(r io.Reader, visit func(*tar.Header, io.Reader) error) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	hr := &hashReader{r: r, h: sha256.New()}
	tr := tar.NewReader(hr)
	var lastContent int64 // bytes of the previous entry's content
	for entries := 0; ; entries++ {
		before := hr.n
		hdr, err := tr.Next()
		switch {
		case err == io.EOF:
			return sum, bad("no %s entry at the end: truncated, or not a .cpk", digestPath)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return sum, errTruncated
		case err != nil:
			return sum, bad("damaged: %v", err)
		}
		if entries > distribution.MaxEntries+1 {
			return sum, bad("more than %d entries", distribution.MaxEntries+1)
		}
		if hdr.Name == digestPath {
			// Only the previous entry's padding and one header block may
			// lie between it and the digest's header.
			if hr.n-before != padding(lastContent)+blockSize {
				return sum, bad("the %s entry has extended headers", digestPath)
			}
			return hr.trailer()
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink:
		default:
			return sum, bad("entry %q: special file (tar type %q); a package holds only directories, regular files and symlinks", hdr.Name, hdr.Typeflag)
		}
		start := hr.n
		if visit != nil {
			if err := visit(hdr, tr); err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) {
					return sum, errTruncated
				}
				return sum, err
			}
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return sum, errTruncated
			}
			return sum, bad("damaged: %v", err)
		}
		lastContent = hr.n - start
	}
}

func padding(n int64) int64 {
	return -n & (blockSize - 1)
}

// hashReader hashes what is read through it, one block behind: the last
// block read is held back, so when it turns out to be the digest's header
// the digest of everything before it is still at hand.
type hashReader struct {
	r       io.Reader
	h       hash.Hash
	n       int64  // bytes read
	pending []byte // the last min(n, blockSize) bytes read, not hashed yet
}

func (hr *hashReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.n += int64(n)
	b := p[:n]
	if len(b) >= blockSize {
		hr.h.Write(hr.pending)
		hr.h.Write(b[:len(b)-blockSize])
		hr.pending = append(hr.pending[:0], b[len(b)-blockSize:]...)
	} else if extra := len(hr.pending) + len(b) - blockSize; extra > 0 {
		hr.h.Write(hr.pending[:extra])
		hr.pending = append(hr.pending[:copy(hr.pending, hr.pending[extra:])], b...)
	} else {
		hr.pending = append(hr.pending, b...)
	}
	return n, err
}

// trailer is called with the digest entry's header just read: it checks that
// the rest of the stream is exactly what Compile writes for the digest of
// everything before that header.
func (hr *hashReader) trailer() ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	hr.h.Sum(sum[:0])
	var want bytes.Buffer
	if err := writeTrailer(tar.NewWriter(&want), hr.h); err != nil {
		return sum, err
	}
	got := make([]byte, want.Len()+1) // one more, to see extra data
	n := copy(got, hr.pending)
	m, err := io.ReadFull(hr.r, got[n:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && err != io.EOF {
		return sum, err
	}
	got = got[:n+m]
	if bytes.Equal(got, want.Bytes()) {
		return sum, nil
	}
	wantHex := want.Bytes()[blockSize : blockSize+2*sha256.Size]
	if len(got) < len(wantHex)+blockSize {
		return sum, errTruncated
	}
	if gotHex := got[blockSize : blockSize+len(wantHex)]; !bytes.Equal(gotHex, wantHex) {
		if !isLowerHex(string(gotHex), len(wantHex)) {
			return sum, bad("the %s entry does not hold a SHA-256 in hex", digestPath)
		}
		return sum, bad("digest mismatch: the %s entry says %.16s..., the content hashes to %.16s...: the file was altered or damaged", digestPath, gotHex, hex.EncodeToString(sum[:]))
	}
	switch {
	case len(got) < want.Len():
		return sum, errTruncated
	case len(got) > want.Len():
		return sum, bad("data after the end of the archive")
	}
	return sum, bad("damaged: the %s entry or the end of the archive was altered", digestPath)
}

// unpacker checks each entry of a .cpk against the descriptor and the rules,
// and writes it under root.
type unpacker struct {
	root       *os.Root
	pkg        *Package
	components map[string]bool // descriptor components -> folder seen
	prev       string          // the previous entry's path, after the descriptor
	dirs       map[string]fs.FileMode
	order      []string // dirs in the order made
	entries    int
	total      int64
}

func (u *unpacker) entry(hdr *tar.Header, content io.Reader) error {
	name := hdr.Name
	if hdr.Typeflag == tar.TypeDir {
		name = strings.TrimSuffix(name, "/")
	}
	if err := distribution.ValidPath(name); err != nil {
		return bad("entry %q: %v", hdr.Name, err)
	}
	mode := distribution.FileMode(uint32(hdr.Mode & 0o7777))
	if u.pkg == nil {
		return u.descriptor(hdr, name, content)
	}
	switch {
	case name == DescriptorPath || name == u.prev:
		return bad("entry %q: duplicate", hdr.Name)
	case name < u.prev:
		return bad("entry %q: out of order (after %q)", hdr.Name, u.prev)
	}
	u.prev = name
	if u.entries++; u.entries > distribution.MaxEntries {
		return bad("more than %d entries", distribution.MaxEntries)
	}

	top, rest, _ := strings.Cut(name, "/")
	var section string // the folder this entry belongs to
	switch top {
	case ComponentsDir:
		comp, _, _ := strings.Cut(rest, "/")
		if comp == "" {
			return bad("entry %q: not inside a component's folder", hdr.Name)
		}
		if _, ok := u.components[comp]; !ok {
			return bad("entry %q: component %q is not in the descriptor", hdr.Name, comp)
		}
		section = ComponentsDir + "/" + comp
	case ScriptsDir:
		section = ScriptsDir
	default:
		return bad("entry %q: outside %s, %s/ and %s/", hdr.Name, DescriptorPath, ComponentsDir, ScriptsDir)
	}
	if name == section {
		if hdr.Typeflag != tar.TypeDir {
			return bad("entry %q: must be a directory", hdr.Name)
		}
		if top == ComponentsDir {
			u.components[rest] = true
			if _, ok := u.dirs[ComponentsDir]; !ok {
				if err := u.mkdir(ComponentsDir, 0o755); err != nil {
					return err
				}
			}
		}
	} else if _, ok := u.dirs[path.Dir(name)]; !ok {
		// This is what stops a path from going through a symlink.
		return bad("entry %q: %q is not a directory entry before it", hdr.Name, path.Dir(name))
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		return u.mkdir(name, mode)
	case tar.TypeSymlink:
		if err := distribution.ValidSymlinkTarget(strings.TrimPrefix(name, section+"/"), hdr.Linkname); err != nil {
			return bad("entry %q: %v", hdr.Name, err)
		}
		return u.root.Symlink(hdr.Linkname, name)
	}
	if hdr.Size < 0 || hdr.Size > distribution.MaxFileBytes {
		return bad("entry %q: size %d outside 0 to %d", hdr.Name, hdr.Size, int64(distribution.MaxFileBytes))
	}
	if u.total += hdr.Size; u.total > distribution.MaxTotalBytes {
		return bad("content over the limit of %d bytes", int64(distribution.MaxTotalBytes))
	}
	return u.file(name, mode, hdr.Size, content)
}

func (u *unpacker) descriptor(hdr *tar.Header, name string, content io.Reader) error {
	if name != DescriptorPath || hdr.Typeflag != tar.TypeReg {
		return bad("first entry is %q, want the descriptor %s", hdr.Name, DescriptorPath)
	}
	if hdr.Size > MaxDescriptorBytes {
		return bad("descriptor of %d bytes, over the limit of %d", hdr.Size, MaxDescriptorBytes)
	}
	b, err := io.ReadAll(content)
	if err != nil {
		return err
	}
	pkg, err := DecodePackage(b)
	if err != nil {
		return err
	}
	u.pkg = pkg
	u.components = make(map[string]bool, len(pkg.Components))
	for _, c := range pkg.Components {
		u.components[c.Name] = false
	}
	u.dirs = make(map[string]fs.FileMode)
	return u.file(DescriptorPath, 0o644, hdr.Size, bytes.NewReader(b))
}

// file writes a new regular file; it may not exist yet.
func (u *unpacker) file(name string, mode fs.FileMode, size int64, content io.Reader) error {
	f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.CopyN(f, content, size)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// mkdir makes a directory writable by us; finish gives it its mode.
func (u *unpacker) mkdir(name string, mode fs.FileMode) error {
	if err := u.root.Mkdir(name, 0o700); err != nil {
		return err
	}
	u.dirs[name] = mode
	u.order = append(u.order, name)
	return nil
}

// finish checks that every component has its folder and sets the
// directories' modes, deepest first, so read-only ones could be filled.
func (u *unpacker) finish() error {
	if u.pkg == nil {
		return bad("no descriptor entry %s", DescriptorPath)
	}
	for _, c := range u.pkg.Components {
		if !u.components[c.Name] {
			return bad("component %q has no folder %s/%s", c.Name, ComponentsDir, c.Name)
		}
	}
	for _, name := range slices.Backward(u.order) {
		if err := u.root.Chmod(name, u.dirs[name]); err != nil {
			return err
		}
	}
	return nil
}
