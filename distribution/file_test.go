package distribution

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f.cbor")
	write := func(s string) func(io.Writer) error {
		return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
	}
	if n, err := WriteFileAtomic(name, 0o640, write("first")); err != nil || n != 5 {
		t.Fatalf("WriteFileAtomic = %d, %v", n, err)
	}
	// A write that fails leaves the old file and no temporary one.
	failed := errors.New("disk full")
	if _, err := WriteFileAtomic(name, 0o640, func(w io.Writer) error { _, _ = io.WriteString(w, "half"); return failed }); !errors.Is(err, failed) {
		t.Fatalf("failing write: %v", err)
	}
	b, err := os.ReadFile(name)
	if err != nil || string(b) != "first" {
		t.Errorf("after a failed write: %q, %v", b, err)
	}
	info, err := os.Stat(name)
	if err != nil || info.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, %v; want 0640", info.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%d files in the directory, want only f.cbor", len(entries))
	}
}
