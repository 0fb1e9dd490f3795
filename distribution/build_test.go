package distribution

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// memChunks is a minimal ChunkSink and ChunkSource for these tests.
type memChunks map[ChunkID][]byte

func (m memChunks) HasChunk(id ChunkID) (bool, error) { _, ok := m[id]; return ok, nil }
func (m memChunks) PutChunk(id ChunkID, enc []byte) error {
	m[id] = bytes.Clone(enc)
	return nil
}
func (m memChunks) Chunk(id ChunkID) ([]byte, error) {
	b, ok := m[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrChunkMissing, id.Short())
	}
	return b, nil
}

func buildOpts(rev uint64) BuildOptions {
	return BuildOptions{Name: "app", Revision: rev, Version: "1.0.0", Channels: []string{"web"},
		Created: time.Unix(1700000000+int64(rev), 0)}
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// sampleTree makes a tree with the kinds of entries a distribution carries.
func sampleTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "bin/app"), randomBytes(1, 300<<10), 0o755)
	writeFile(t, filepath.Join(dir, "etc/app.conf"), []byte("listen = 8080\n"), 0o640)
	writeFile(t, filepath.Join(dir, "etc/empty"), nil, 0o600)
	writeFile(t, filepath.Join(dir, "share/doc/README"), bytes.Repeat([]byte("read me\n"), 10000), 0o644)
	writeFile(t, filepath.Join(dir, "a-b"), []byte("sorts before a/"), 0o644)
	writeFile(t, filepath.Join(dir, "a/b"), []byte("sorts after a-b"), 0o644)
	if err := os.Symlink("bin/app", filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../bin", filepath.Join(dir, "etc/bin")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "ro/file"), []byte("in a read-only directory"), 0o444)
	if err := os.Chmod(filepath.Join(dir, "ro"), 0o555); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "var"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "var"), 0o750); err != nil {
		t.Fatal(err)
	}
	return dir
}

// treeListing describes a tree: type, mode, content hash or target of each
// path.
func treeListing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %s", filepath.ToSlash(rel), info.Mode())
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += " " + SumChunk(b).Short()
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestBuildMaterializeRoundTrip(t *testing.T) {
	src := sampleTree(t)
	chunks := memChunks{}
	m, stats, err := BuildDir(context.Background(), src, buildOpts(1), chunks)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Files != 7 || stats.NewChunks == 0 || stats.NewChunks != len(chunks) {
		t.Fatalf("stats %+v with %d chunks stored", stats, len(chunks))
	}
	m.KeyID = "test"
	signed, err := Sign(m, testKey(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := signed.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if err := Materialize(context.Background(), got, chunks, dest, MaterializeOptions{}); err != nil {
		t.Fatal(err)
	}
	want, have := treeListing(t, src), treeListing(t, dest)
	// The root directory's own mode is not part of a revision.
	if strings.Join(want[1:], "\n") != strings.Join(have[1:], "\n") {
		t.Fatalf("extracted tree differs:\nwant\n%s\nhave\n%s", strings.Join(want, "\n"), strings.Join(have, "\n"))
	}
	// Extracting again over the first extraction gives the same tree,
	// read-only directories included.
	if err := Materialize(context.Background(), got, chunks, dest, MaterializeOptions{}); err != nil {
		t.Fatal(err)
	}
	if again := treeListing(t, dest); strings.Join(again, "\n") != strings.Join(have, "\n") {
		t.Fatalf("second extraction differs:\n%s", strings.Join(again, "\n"))
	}
	// No temporary files are left behind.
	for _, line := range have {
		if strings.Contains(line, ".ted-") {
			t.Fatalf("temporary file left: %s", line)
		}
	}
}

func TestRebuildUnchangedIsSameContent(t *testing.T) {
	src := sampleTree(t)
	chunks := memChunks{}
	first, _, err := BuildDir(context.Background(), src, buildOpts(1), chunks)
	if err != nil {
		t.Fatal(err)
	}
	second, stats, err := BuildDir(context.Background(), src, buildOpts(2), chunks)
	if err != nil {
		t.Fatal(err)
	}
	if stats.NewChunks != 0 || !first.SameContent(second) {
		t.Fatalf("unchanged rebuild: %d new chunks, same content %v", stats.NewChunks, first.SameContent(second))
	}
}

func TestOneByteChangeAddsFewChunks(t *testing.T) {
	src := t.TempDir()
	data := randomBytes(7, 16<<20)
	writeFile(t, filepath.Join(src, "big.bin"), data, 0o644)
	chunks := memChunks{}
	first, _, err := BuildDir(context.Background(), src, buildOpts(1), chunks)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	writeFile(t, filepath.Join(src, "big.bin"), data, 0o644)
	second, stats, err := BuildDir(context.Background(), src, buildOpts(2), chunks)
	if err != nil {
		t.Fatal(err)
	}
	if first.SameContent(second) {
		t.Fatal("change not seen")
	}
	_, _, total := second.Totals()
	if stats.NewChunks < 1 || stats.NewChunks > 2 {
		t.Fatalf("a 1-byte change in %d chunks stored %d new chunks", total, stats.NewChunks)
	}
}

func TestBuildRefusesUnsupported(t *testing.T) {
	tests := []struct {
		name string
		make func(t *testing.T, dir string)
		path string
		want string
	}{
		{"named pipe", func(t *testing.T, dir string) {
			if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
				t.Skip("mkfifo:", err)
			}
		}, "pipe", "named pipe"},
		{"absolute symlink", func(t *testing.T, dir string) {
			if err := os.Symlink("/etc/passwd", filepath.Join(dir, "passwd")); err != nil {
				t.Fatal(err)
			}
		}, "passwd", "absolute"},
		{"escaping symlink", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "sub/x"), nil, 0o644)
			if err := os.Symlink("../../outside", filepath.Join(dir, "sub/out")); err != nil {
				t.Fatal(err)
			}
		}, "sub/out", "escapes"},
		{"dotdot after name", func(t *testing.T, dir string) {
			if err := os.Symlink("sub/../x", filepath.Join(dir, "tricky")); err != nil {
				t.Fatal(err)
			}
		}, "tricky", ".. after a name"},
		{"trailing slash symlink", func(t *testing.T, dir string) {
			if err := os.Symlink("ok.txt/", filepath.Join(dir, "slash")); err != nil {
				t.Fatal(err)
			}
		}, "slash", "ends in a slash"},
		{"non-UTF-8 name", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "caf\xe9"), nil, 0o644)
		}, "caf\xe9", "UTF-8"},
		{"backslash name", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, `win\name`), nil, 0o644)
		}, `win\name`, "backslash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "ok.txt"), []byte("fine"), 0o644)
			tt.make(t, dir)
			chunks := memChunks{}
			_, _, err := BuildDir(context.Background(), dir, buildOpts(1), chunks)
			if !errors.Is(err, ErrUnsupportedEntry) || !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v: want ErrUnsupportedEntry naming %q and %q", err, tt.path, tt.want)
			}
			if len(chunks) != 0 {
				t.Fatalf("%d chunks stored before the refusal", len(chunks))
			}

			// With SkipUnsupported the entry is left out and reported.
			opts := buildOpts(1)
			opts.SkipUnsupported = true
			var skipped []string
			opts.Skipped = func(p string, _ error) { skipped = append(skipped, p) }
			m, stats, err := BuildDir(context.Background(), dir, opts, chunks)
			if err != nil {
				t.Fatal(err)
			}
			if len(skipped) != 1 || skipped[0] != tt.path || stats.Skipped != 1 {
				t.Fatalf("skipped %v (stats %d), want [%s]", skipped, stats.Skipped, tt.path)
			}
			for _, e := range m.Entries {
				if e.Path == tt.path {
					t.Fatalf("skipped entry %s is in the manifest", tt.path)
				}
			}
		})
	}
}

// failingFS makes one file unreadable, which root cannot do with chmod.
type failingFS struct {
	fs.ReadLinkFS
	fail string
}

func (f failingFS) Open(name string) (fs.File, error) {
	if name == f.fail {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	return f.ReadLinkFS.Open(name)
}

func TestBuildRefusesUnreadableFile(t *testing.T) {
	dir := sampleTree(t)
	fsys := failingFS{ReadLinkFS: os.DirFS(dir).(fs.ReadLinkFS), fail: "etc/app.conf"}
	_, _, err := Build(context.Background(), fsys, buildOpts(1), memChunks{})
	if !errors.Is(err, ErrUnsupportedEntry) || !strings.Contains(err.Error(), "etc/app.conf") || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("err %v: want the unreadable path named", err)
	}
}

func TestBuildRefusesBadMetadataBeforeReading(t *testing.T) {
	dir := sampleTree(t)
	opts := buildOpts(1)
	opts.Target = "../escape"
	chunks := memChunks{}
	if _, _, err := BuildDir(context.Background(), dir, opts, chunks); !errors.Is(err, ErrInvalidManifest) || len(chunks) != 0 {
		t.Fatalf("err %v with %d chunks stored", err, len(chunks))
	}
}

func TestBuildStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := BuildDir(ctx, sampleTree(t), buildOpts(1), memChunks{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

func TestMaterializeStaysInsideDest(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "etc/passwd"), []byte("ted\n"), 0o644)
	writeFile(t, filepath.Join(src, "link"), []byte("a file now\n"), 0o644)
	chunks := memChunks{}
	m, _, err := BuildDir(context.Background(), src, buildOpts(1), chunks)
	if err != nil {
		t.Fatal(err)
	}
	m.KeyID = "test"

	// The destination already holds symlinks that lead outside it, where
	// the revision has a directory and a file.
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "passwd"), []byte("root\n"), 0o644)
	writeFile(t, filepath.Join(outside, "target"), []byte("keep\n"), 0o644)
	dest := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dest, "etc")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "target"), filepath.Join(dest, "link")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dest, "untouched"), []byte("mine"), 0o600)
	if err := Materialize(context.Background(), m, chunks, dest, MaterializeOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		filepath.Join(outside, "passwd"):  "root\n",
		filepath.Join(outside, "target"):  "keep\n",
		filepath.Join(dest, "etc/passwd"): "ted\n",
		filepath.Join(dest, "link"):       "a file now\n",
		filepath.Join(dest, "untouched"):  "mine",
	} {
		b, err := os.ReadFile(name)
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", name, b, err, want)
		}
	}
	if info, err := os.Lstat(filepath.Join(dest, "etc")); err != nil || !info.IsDir() {
		t.Fatalf("etc is not a directory now: %v", err)
	}
}

func TestMaterializeRefusesCorruptChunk(t *testing.T) {
	src := sampleTree(t)
	chunks := memChunks{}
	m, _, err := BuildDir(context.Background(), src, buildOpts(1), chunks)
	if err != nil {
		t.Fatal(err)
	}
	m.KeyID = "test"
	for id, enc := range chunks {
		enc[len(enc)-1] ^= 1
		chunks[id] = enc
	}
	dest := t.TempDir()
	err = Materialize(context.Background(), m, chunks, dest, MaterializeOptions{})
	if !errors.Is(err, ErrChunkCorrupt) {
		t.Fatalf("err %v, want ErrChunkCorrupt", err)
	}
	n, err := CheckContent(context.Background(), m, chunks, nil)
	if err != nil || n != len(chunks) {
		t.Fatalf("CheckContent found %d problems (%v), want %d", n, err, len(chunks))
	}
}

// failingSink fails the nth PutChunk.
type failingSink struct {
	memChunks
	n int
}

func (f *failingSink) PutChunk(id ChunkID, enc []byte) error {
	f.n--
	if f.n == 0 {
		return errors.New("disk full")
	}
	return f.memChunks.PutChunk(id, enc)
}

func TestBuildReportsStoreFailure(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "big.bin"), randomBytes(9, 4<<20), 0o644)
	sink := &failingSink{memChunks: memChunks{}, n: 20}
	_, _, err := BuildDir(context.Background(), src, buildOpts(1), sink)
	if err == nil || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "big.bin") {
		t.Fatalf("err %v: want the store's error naming the file", err)
	}
}
