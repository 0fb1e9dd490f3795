package swpkg

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"ted/distribution"
)

// CompileResult says what Compile wrote.
type CompileResult struct {
	Name, Version string
	Components    int   // components in the package
	Files         int   // regular files of the components and scripts
	Bytes         int64 // size of the .cpk written
	Out           string
}

// Compile writes spec as a .cpk file at out; an empty out means
// NAME-VERSION.cpk in the current folder. The file appears whole or not at
// all: it is written to a temporary file, synced and renamed.
//
// Source trees may hold directories, regular files and symlinks whose
// targets stay inside their folder; anything else is refused, naming it.
func Compile(spec *Spec, out string) (CompileResult, error) {
	pkg := spec.Package
	pkg.Format = PackageFormat
	if out == "" {
		out = pkg.Name + "-" + pkg.Version + ".cpk"
	}
	res := CompileResult{Name: pkg.Name, Version: pkg.Version, Components: len(pkg.Components), Out: out}
	fail := func(err error) (CompileResult, error) {
		return res, fmt.Errorf("compile %s: %w", spec.File, err)
	}
	if err := pkg.Validate(); err != nil {
		return fail(err)
	}
	descriptor, err := pkg.Marshal()
	if err != nil {
		return fail(err)
	}
	if len(descriptor) > MaxDescriptorBytes {
		return fail(fmt.Errorf("descriptor of %d bytes, over the limit of %d", len(descriptor), MaxDescriptorBytes))
	}

	// Collect every entry before writing, so the output never lists itself.
	var sources []source
	defer func() {
		for _, s := range sources {
			if s.root != nil {
				s.root.Close()
			}
		}
	}()
	for _, c := range pkg.Components {
		from, ok := spec.From[c.Name]
		if !ok {
			return fail(fmt.Errorf("component %q has no source folder", c.Name))
		}
		sources = append(sources, source{folder: from, prefix: ComponentsDir + "/" + c.Name, what: "component folder"})
	}
	if spec.Scripts != "" {
		sources = append(sources, source{folder: spec.Scripts, prefix: ScriptsDir, what: "scripts folder"})
	}
	absOut, err := filepath.Abs(out)
	if err != nil {
		return fail(err)
	}
	if realOutDir, err := filepath.EvalSymlinks(filepath.Dir(absOut)); err == nil {
		realOut := filepath.Join(realOutDir, filepath.Base(absOut))
		for _, s := range sources {
			if real, err := filepath.EvalSymlinks(s.folder); err == nil && within(real, realOut) {
				return fail(fmt.Errorf("output %s is inside the %s %s: it would pack itself", out, s.what, s.folder))
			}
		}
	}
	var entries []srcEntry
	for i := range sources {
		s := &sources[i]
		if s.root, err = os.OpenRoot(s.folder); err != nil {
			return fail(err)
		}
		if entries, err = s.collect(entries); err != nil {
			return fail(err)
		}
	}
	slices.SortFunc(entries, func(a, b srcEntry) int { return strings.Compare(a.name, b.name) })
	for _, e := range entries {
		if e.typ == tar.TypeReg {
			res.Files++
		}
	}

	size, err := distribution.WriteFileAtomic(out, 0o644, func(w io.Writer) error {
		return writeCPK(w, descriptor, entries)
	})
	if err != nil {
		return fail(err)
	}
	res.Bytes = size
	return res, nil
}

// source is one folder that goes into the .cpk under prefix.
type source struct {
	folder string // absolute
	prefix string // components/NAME or scripts
	what   string // for errors: "component folder", "scripts folder"
	root   *os.Root
}

// srcEntry is one entry to write.
type srcEntry struct {
	name   string // path in the .cpk
	rel    string // path under its source's folder
	typ    byte   // tar.TypeDir, TypeReg or TypeSymlink
	mode   int64
	target string // symlinks
	src    *source
}

// collect appends the entries of s's folder to list, refusing special files
// and symlinks that leave the folder.
func (s *source) collect(list []srcEntry) ([]srcEntry, error) {
	err := fs.WalkDir(s.root.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		full := filepath.Join(s.folder, filepath.FromSlash(rel))
		if err != nil {
			return err
		}
		name := s.prefix
		if rel != "." {
			name += "/" + rel
		}
		if err := distribution.ValidPath(name); err != nil {
			return fmt.Errorf("%s: %v", full, err)
		}
		if len(list) >= distribution.MaxEntries {
			return fmt.Errorf("more than %d entries", distribution.MaxEntries)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := srcEntry{name: name, rel: rel, mode: int64(distribution.UnixMode(info.Mode())), src: s}
		switch t := info.Mode().Type(); {
		case t == 0:
			e.typ = tar.TypeReg
			if info.Size() > distribution.MaxFileBytes {
				return fmt.Errorf("%s: %d bytes, over the limit of %d", full, info.Size(), int64(distribution.MaxFileBytes))
			}
		case t == fs.ModeDir:
			e.typ = tar.TypeDir
		case t == fs.ModeSymlink:
			e.typ = tar.TypeSymlink
			if e.target, err = s.root.Readlink(rel); err != nil {
				return err
			}
			if err := distribution.ValidSymlinkTarget(rel, e.target); err != nil {
				return fmt.Errorf("%s: symlink must stay inside the %s %s: %v", full, s.what, s.folder, err)
			}
			e.mode = 0o777
		default:
			return fmt.Errorf("%s: special file (%v); a package holds only directories, regular files and symlinks", full, t)
		}
		list = append(list, e)
		return nil
	})
	return list, err
}

// epoch is every entry's modification time: the same tree always compiles
// to the same bytes.
var epoch = time.Unix(0, 0)

// header is the deterministic tar header of an entry.
func header(name string, typ byte, mode, size int64, target string) *tar.Header {
	if typ == tar.TypeDir {
		name += "/"
	}
	return &tar.Header{Typeflag: typ, Name: name, Linkname: target, Mode: mode, Size: size, ModTime: epoch}
}

// writeCPK writes the tar stream: descriptor, entries, then the digest of
// everything before the digest's header.
func writeCPK(w io.Writer, descriptor []byte, entries []srcEntry) error {
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(w, h))
	if err := tw.WriteHeader(header(DescriptorPath, tar.TypeReg, 0o644, int64(len(descriptor)), "")); err != nil {
		return err
	}
	if _, err := tw.Write(descriptor); err != nil {
		return err
	}
	for _, e := range entries {
		if err := writeEntry(tw, e); err != nil {
			return err
		}
	}
	// Flush writes the last entry's padding, which the digest covers.
	if err := tw.Flush(); err != nil {
		return err
	}
	return writeTrailer(tar.NewWriter(w), h)
}

// writeTrailer writes the digest entry for the bytes hashed into h and ends
// the archive. Open builds the same bytes to compare with.
func writeTrailer(tw *tar.Writer, h hash.Hash) error {
	sum := hex.EncodeToString(h.Sum(nil))
	if err := tw.WriteHeader(header(digestPath, tar.TypeReg, 0o644, int64(len(sum)), "")); err != nil {
		return err
	}
	if _, err := io.WriteString(tw, sum); err != nil {
		return err
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, e srcEntry) error {
	full := filepath.Join(e.src.folder, filepath.FromSlash(e.rel))
	if e.typ != tar.TypeReg {
		return tw.WriteHeader(header(e.name, e.typ, e.mode, 0, e.target))
	}
	f, err := e.src.root.Open(e.rel)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s: changed while compiling (now %v)", full, info.Mode().Type())
	}
	if err := tw.WriteHeader(header(e.name, e.typ, int64(distribution.UnixMode(info.Mode())), info.Size(), "")); err != nil {
		return fmt.Errorf("%s: %w", full, err)
	}
	if _, err := io.CopyN(tw, f, info.Size()); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: shrank while compiling", full)
		}
		return fmt.Errorf("%s: %w", full, err)
	}
	return nil
}
