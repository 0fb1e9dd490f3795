package distribution

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// BuildOptions describe the revision to build. Name, Version, Channels and
// Revision are required; the rest have defaults.
type BuildOptions struct {
	Name     string
	Revision uint64
	Version  string
	Channels []string
	Kind     Kind     // default KindFiles
	Platform string   // an agent's GOOS/GOARCH (KindAgent only)
	Target   string   // default Name
	Requires []string // dependency constraints
	Pre      []string // actions before extraction
	Post     []string // actions after extraction
	Created  time.Time

	// SkipUnsupported skips entries that cannot be distributed (special
	// files, symlinks leaving the tree, unreadable files and directories,
	// unsafe names) instead of failing the build. Each one is reported to
	// Skipped, so a partial distribution is never silent.
	SkipUnsupported bool
	Skipped         func(path string, reason error)

	// Progress, if set, is called after each file and every few MiB.
	Progress func(BuildProgress)
}

// BuildProgress reports how far a build has come.
type BuildProgress struct {
	Files, TotalFiles int
	Bytes, TotalBytes int64
}

// BuildStats sums up a build.
type BuildStats struct {
	Files     int   // regular files
	Bytes     int64 // their plain bytes
	Chunks    int   // chunk references
	NewChunks int   // chunks the sink did not hold
	NewBytes  int64 // encoded bytes of the new chunks
	Skipped   int   // entries skipped under SkipUnsupported
}

// ErrUnsupportedEntry is wrapped by the errors for entries that cannot be
// distributed.
var ErrUnsupportedEntry = errors.New("cannot be distributed")

// BuildDir builds a revision from the directory dir. Reads go through an
// os.Root, so nothing outside dir is read even if the tree changes during the
// build.
func BuildDir(ctx context.Context, dir string, opts BuildOptions, sink ChunkSink) (*Manifest, BuildStats, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, BuildStats{}, fmt.Errorf("source %s: %w", dir, err)
	}
	if !info.IsDir() {
		return nil, BuildStats{}, fmt.Errorf("source %s: not a directory", dir)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, BuildStats{}, fmt.Errorf("source %s: %w", dir, err)
	}
	defer root.Close()
	fsys, ok := root.FS().(fs.ReadLinkFS)
	if !ok {
		return nil, BuildStats{}, errors.New("os.Root file system cannot read symlinks")
	}
	m, stats, err := Build(ctx, fsys, opts, sink)
	if err != nil {
		return nil, stats, fmt.Errorf("build %s from %s: %w", opts.Name, dir, err)
	}
	return m, stats, nil
}

// Build builds a revision from the tree fsys: it scans and checks the whole
// tree first, then chunks every file, putting the chunks that sink does not
// hold yet. The manifest is validated but not signed.
func Build(ctx context.Context, fsys fs.ReadLinkFS, opts BuildOptions, sink ChunkSink) (*Manifest, BuildStats, error) {
	m, err := newManifest(opts)
	if err != nil {
		return nil, BuildStats{}, err
	}
	b := &builder{ctx: ctx, fsys: fsys, opts: opts, sink: sink}
	if err := b.scan(m); err != nil {
		return nil, b.stats, err
	}
	if err := b.content(m); err != nil {
		return nil, b.stats, err
	}
	if err := validateUnsigned(m); err != nil {
		return nil, b.stats, err
	}
	return m, b.stats, nil
}

// Validate checks the metadata of the options (names, version, channels,
// target, dependencies, actions) without reading any content.
func (o BuildOptions) Validate() error {
	o.Revision = max(o.Revision, 1) // assigned by the caller later
	_, err := newManifest(o)
	return err
}

func newManifest(opts BuildOptions) (*Manifest, error) {
	m := &Manifest{
		Format:   ManifestFormat,
		Name:     opts.Name,
		Revision: opts.Revision,
		Version:  opts.Version,
		Kind:     opts.Kind,
		Platform: opts.Platform,
		Target:   opts.Target,
		Requires: opts.Requires,
		Pre:      opts.Pre,
		Post:     opts.Post,
		Created:  opts.Created.Unix(),
	}
	if m.Kind == "" {
		m.Kind = KindFiles
	}
	if m.Target == "" {
		m.Target = m.Name
	}
	if opts.Created.IsZero() {
		m.Created = time.Now().Unix()
	}
	// Channels are a set: sorted and unique, so the same set always
	// encodes the same way.
	m.Channels = append([]string(nil), opts.Channels...)
	sort.Strings(m.Channels)
	m.Channels = compactStrings(m.Channels)
	// Check the metadata now, before reading a byte of content.
	if err := validateUnsigned(m); err != nil {
		return nil, err
	}
	return m, nil
}

// validateUnsigned validates a manifest that has no key id yet (Sign sets
// it).
func validateUnsigned(m *Manifest) error {
	check := *m
	if check.KeyID == "" {
		check.KeyID = "unsigned"
	}
	return check.Validate()
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

type builder struct {
	ctx    context.Context
	fsys   fs.ReadLinkFS
	opts   BuildOptions
	sink   ChunkSink
	storer *storer
	stats  BuildStats
	total  BuildProgress
}

// unsupported fails the build, or skips the entry when the options allow it.
func (b *builder) unsupported(p string, reason error) error {
	if !b.opts.SkipUnsupported {
		return fmt.Errorf("%s: %w: %v (skip such entries with --skip-unsupported)", p, ErrUnsupportedEntry, reason)
	}
	b.stats.Skipped++
	if b.opts.Skipped != nil {
		b.opts.Skipped(p, reason)
	}
	return nil
}

// scan walks the tree and fills m.Entries with everything but chunk lists.
func (b *builder) scan(m *Manifest) error {
	err := fs.WalkDir(b.fsys, ".", func(p string, d fs.DirEntry, walkErr error) error {
		if err := b.ctx.Err(); err != nil {
			return err
		}
		if walkErr != nil {
			if p == "." {
				return walkErr
			}
			if err := b.unsupported(p, fmt.Errorf("unreadable: %w", unwrapPath(walkErr))); err != nil {
				return err
			}
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if p == "." {
			return nil
		}
		if err := ValidPath(p); err != nil {
			return b.skipEntry(p, d, err)
		}
		info, err := d.Info()
		if err != nil {
			return b.skipEntry(p, d, fmt.Errorf("unreadable: %w", unwrapPath(err)))
		}
		e := Entry{Path: p, Mode: UnixMode(info.Mode())}
		switch mode := info.Mode(); {
		case mode.IsDir():
			e.Type = TypeDir
		case mode.IsRegular():
			e.Type = TypeFile
			e.Size = info.Size()
			if e.Size > MaxFileBytes {
				return b.unsupported(p, fmt.Errorf("%d bytes, over the limit of %d", e.Size, int64(MaxFileBytes)))
			}
			b.total.TotalFiles++
			b.total.TotalBytes += e.Size
		case mode&fs.ModeSymlink != 0:
			target, err := b.fsys.ReadLink(p)
			if err != nil {
				return b.unsupported(p, fmt.Errorf("unreadable symlink: %w", unwrapPath(err)))
			}
			target, err = cleanSymlinkTarget(p, target)
			if err != nil {
				return b.unsupported(p, err)
			}
			e.Type, e.Target, e.Mode = TypeSymlink, target, 0o777
		default:
			return b.unsupported(p, fmt.Errorf("special file (%s)", fileTypeName(mode)))
		}
		if len(m.Entries) >= MaxEntries {
			return fmt.Errorf("%s: more than %d entries in the tree", p, MaxEntries)
		}
		m.Entries = append(m.Entries, e)
		return nil
	})
	if err != nil {
		return err
	}
	// WalkDir visits in lexical order per directory; manifests sort by
	// the whole path ("a-b" before "a/b").
	sort.Slice(m.Entries, func(i, j int) bool { return m.Entries[i].Path < m.Entries[j].Path })
	return nil
}

func (b *builder) skipEntry(p string, d fs.DirEntry, reason error) error {
	if err := b.unsupported(p, reason); err != nil {
		return err
	}
	if d.IsDir() {
		return fs.SkipDir
	}
	return nil
}

// cleanSymlinkTarget accepts a relative symlink that stays inside the tree.
// A target whose ".." elements all lead is put in clean form (dropping "."
// and doubled slashes does not change where it points); any other ".."
// could be resolved through another symlink, so it is refused.
func cleanSymlinkTarget(linkPath, target string) (string, error) {
	if strings.HasPrefix(target, "/") {
		return "", fmt.Errorf("symlink to absolute path %q leaves the tree", target)
	}
	// A trailing slash means "must be a directory"; the clean form would
	// lose it, so the link would not be reproduced exactly.
	if strings.HasSuffix(target, "/") {
		return "", fmt.Errorf("symlink target %q ends in a slash", target)
	}
	leading := true
	for elem := range strings.SplitSeq(target, "/") {
		switch {
		case elem == "..":
			if !leading {
				return "", fmt.Errorf("symlink target %q has .. after a name", target)
			}
		case elem != "" && elem != ".":
			leading = false
		}
	}
	clean := path.Clean(target)
	if err := ValidSymlinkTarget(linkPath, clean); err != nil {
		return "", err
	}
	return clean, nil
}

// content chunks every file, in manifest order.
func (b *builder) content(m *Manifest) (err error) {
	b.storer = newStorer(b.sink)
	defer func() {
		// Wait for every chunk handed over, so none is stored after Build
		// returns and the counts are final.
		if serr := b.storer.close(); serr != nil && (err == nil || errors.Is(err, errStorerFailed)) {
			err = serr
		}
		b.stats.NewChunks, b.stats.NewBytes = b.storer.newChunks, b.storer.newBytes
	}()
	chunker := NewChunker(nil)
	progress := b.total
	kept := m.Entries[:0]
	for _, e := range m.Entries {
		if e.Type != TypeFile {
			kept = append(kept, e)
			continue
		}
		chunks, size, err := b.file(chunker, e.Path, &progress)
		if errors.Is(err, errSkipped) {
			continue
		}
		if err != nil {
			return err
		}
		e.Chunks, e.Size = chunks, size
		b.stats.Files++
		b.stats.Bytes += size
		b.stats.Chunks += len(chunks)
		progress.Files++
		if b.opts.Progress != nil {
			b.opts.Progress(progress)
		}
		kept = append(kept, e)
	}
	m.Entries = kept
	return nil
}

var errSkipped = errors.New("skipped")

// progressEvery is how often a long file reports progress.
const progressEvery = 8 << 20

func (b *builder) file(chunker *Chunker, p string, progress *BuildProgress) ([]ChunkRef, int64, error) {
	f, err := b.fsys.Open(p)
	if err != nil {
		if err := b.unsupported(p, fmt.Errorf("unreadable: %w", unwrapPath(err))); err != nil {
			return nil, 0, err
		}
		return nil, 0, errSkipped
	}
	defer f.Close()
	// The tree may change between scan and read: a file replaced by
	// something else is an error, not silently different content.
	if info, err := f.Stat(); err != nil || !info.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s: changed during the build (no longer a regular file)", p)
	}
	chunker.Reset(f)
	var (
		refs     []ChunkRef
		size     int64
		reported int64
	)
	for {
		if err := b.ctx.Err(); err != nil {
			return nil, 0, err
		}
		chunk, err := chunker.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("%s: read: %w", p, unwrapPath(err))
		}
		id := SumChunk(chunk)
		// The sink says what it holds, chunks of this build included: no
		// second set of ids here, whose memory would grow with the build.
		if err := b.storer.put(p, id, chunk); err != nil {
			return nil, 0, err
		}
		refs = append(refs, ChunkRef{ID: id, Size: uint32(len(chunk))})
		size += int64(len(chunk))
		if size > MaxFileBytes {
			return nil, 0, fmt.Errorf("%s: grew over the limit of %d bytes during the build", p, int64(MaxFileBytes))
		}
		progress.Bytes += int64(len(chunk))
		if b.opts.Progress != nil && size-reported >= progressEvery {
			reported = size
			b.opts.Progress(*progress)
		}
	}
	return refs, size, nil
}

// storerDepth is how many chunks may wait for the storer: enough to ride
// out a slow store write, little memory (depth x ChunkMaxBytes).
const storerDepth = 16

// storer checks, encodes and stores chunks on a goroutine of its own, so
// that chunking and hashing the next chunk overlaps with compressing and
// storing this one. Only its goroutine calls the sink.
type storer struct {
	sink  ChunkSink
	jobs  chan storeJob
	free  chan []byte // recycled chunk buffers
	done  chan struct{}
	err   error // first error; read after done is closed
	ended chan struct{}

	newChunks int
	newBytes  int64
}

type storeJob struct {
	path string // the file the chunk came from, for errors
	id   ChunkID
	buf  []byte // a free byte for the codec, then the plain chunk
}

func newStorer(sink ChunkSink) *storer {
	s := &storer{
		sink:  sink,
		jobs:  make(chan storeJob, storerDepth),
		free:  make(chan []byte, storerDepth+1),
		done:  make(chan struct{}),
		ended: make(chan struct{}),
	}
	for range storerDepth + 1 {
		s.free <- make([]byte, 0, 1+ChunkMaxBytes)
	}
	go s.run()
	return s
}

func (s *storer) run() {
	defer close(s.done)
	var enc []byte
	for job := range s.jobs {
		if s.err == nil {
			enc, s.err = s.store(job, enc)
			if s.err != nil {
				close(s.ended) // tell put to stop handing over
			}
		}
		s.free <- job.buf[:0]
	}
}

func (s *storer) store(job storeJob, enc []byte) ([]byte, error) {
	has, err := s.sink.HasChunk(job.id)
	if err != nil {
		return enc, fmt.Errorf("%s: look up chunk %s: %w", job.path, job.id.Short(), err)
	}
	if has {
		return enc, nil
	}
	encoded, enc := encodeInPlace(job.buf, enc)
	if err := s.sink.PutChunk(job.id, encoded); err != nil {
		return enc, fmt.Errorf("%s: store chunk %s: %w", job.path, job.id.Short(), err)
	}
	s.newChunks++
	s.newBytes += int64(len(encoded))
	return enc, nil
}

// put copies plain and queues it. It fails once the storer has failed.
func (s *storer) put(path string, id ChunkID, plain []byte) error {
	var buf []byte
	select {
	case buf = <-s.free:
	case <-s.ended:
		return errStorerFailed
	}
	select {
	case s.jobs <- storeJob{path: path, id: id, buf: append(append(buf, 0), plain...)}:
		return nil
	case <-s.ended:
		return errStorerFailed
	}
}

var errStorerFailed = errors.New("storing chunks failed")

// close waits for every queued chunk and returns the first error.
func (s *storer) close() error {
	close(s.jobs)
	<-s.done
	return s.err
}

// UnixMode converts Go's portable mode bits to the Unix bits a manifest
// (or a tar header) carries: permissions, setuid, setgid and sticky.
func UnixMode(m fs.FileMode) uint32 {
	mode := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// FileMode returns the entry's type and mode as Go's fs.FileMode.
func (e *Entry) FileMode() fs.FileMode {
	m := FileMode(e.Mode)
	switch e.Type {
	case TypeDir:
		m |= fs.ModeDir
	case TypeSymlink:
		m |= fs.ModeSymlink
	}
	return m
}

// FileMode converts Unix mode bits (a manifest's, a tar header's) back to
// Go's; bits other than permissions, setuid, setgid and sticky are ignored.
func FileMode(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func fileTypeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeIrregular != 0:
		return "irregular file"
	}
	return m.Type().String()
}

// unwrapPath drops the *PathError wrapper, whose path is relative to the
// fs.FS and would repeat the one the caller names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
