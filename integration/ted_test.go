// Package integration runs the real ted binary as separate processes, with
// real files and a real badger store, the way operators and scripts use it.
package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tedBinary is built once by TestMain.
var tedBinary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ted-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	noteSources()
	tedBinary = filepath.Join(dir, "ted")
	build := exec.Command("go", "build", "-o", tedBinary, "../cmd/ted")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build ted:", err)
		return 1
	}
	return m.Run()
}

// noteSources stats every Go source and module file of the project, so
// that `go test` caches this package's results only while none of them
// changes: the ted binary it runs is built from them, not imported.
func noteSources() {
	_ = filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && p != ".." {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum" || strings.Contains(p, "demodata") ||
			strings.Contains(p, filepath.Join("console", "static")) || strings.Contains(p, filepath.Join("console", "templates")) {
			_, _ = os.Stat(p)
		}
		return nil
	})
}

// result is one finished ted process.
type result struct {
	args   []string
	code   int
	stdout string
	stderr string
}

func (r result) String() string {
	return fmt.Sprintf("ted %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// ted runs the binary and returns what it did, whatever the exit code.
func ted(t *testing.T, args ...string) result {
	t.Helper()
	return runTed(t, exec.Command(tedBinary, args...), args)
}

// runTed runs cmd, the binary with args, and returns what it did.
func runTed(t *testing.T, cmd *exec.Cmd, args []string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run ted %v: %v", args, err)
	}
	return r
}

// mustTed runs the binary and fails the test unless it exits 0.
func mustTed(t *testing.T, args ...string) result {
	t.Helper()
	r := ted(t, args...)
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	return r
}

// tedJSON runs the binary with --json and decodes its one JSON document.
func tedJSON(t *testing.T, v any, args ...string) result {
	t.Helper()
	r := mustTed(t, append(args, "--json")...)
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode JSON of %s: %v", r, err)
	}
	if dec.More() {
		t.Fatalf("more than one JSON document: %s", r)
	}
	return r
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
