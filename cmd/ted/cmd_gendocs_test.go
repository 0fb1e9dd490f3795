package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// commandsDir is docs/commands as seen from this package's directory, where
// go test runs.
var commandsDir = filepath.Join("..", "..", "docs", "commands")

// runGendocs runs `ted gendocs ARGS` through a fresh root command, as the
// binary does: cobra adds its completion command only when the root is
// executed, so calling the generator on newRootCommand() directly would
// miss those pages.
func runGendocs(t *testing.T, args ...string) error {
	t.Helper()
	root := newRootCommand()
	root.SetArgs(append([]string{"gendocs"}, args...))
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	return root.Execute()
}

// readDir returns the regular files of dir by name.
func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	files := make(map[string][]byte, len(entries))
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

// TestCommandReference fails when docs/commands is not what gendocs writes
// for the commands as they are now: a page missing, left over from a
// removed command, or changed. TED_UPDATE_DOCS=1 rewrites the pages.
func TestCommandReference(t *testing.T) {
	if os.Getenv("TED_UPDATE_DOCS") == "1" {
		if err := runGendocs(t, "--markdown", commandsDir); err != nil {
			t.Fatal(err)
		}
	}
	fresh := t.TempDir()
	if err := runGendocs(t, "--markdown", fresh); err != nil {
		t.Fatal(err)
	}
	want, got := readDir(t, fresh), readDir(t, commandsDir)
	if len(want) == 0 || want["ted.md"] == nil {
		t.Fatalf("gendocs wrote %d files and no ted.md", len(want))
	}
	var problems []string
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			problems = append(problems, "missing: "+name)
		case !bytes.Equal(g, w):
			problems = append(problems, "changed: "+name)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			problems = append(problems, "not a command page: "+name)
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		t.Errorf("docs/commands is out of date with the commands:\n  %s\nupdate it with:\n  %s\nor:\n  TED_UPDATE_DOCS=1 go test ./cmd/ted -run TestCommandReference",
			strings.Join(problems, "\n  "), regenerateDocsCommand)
	}
}

// TestGendocsPages checks what the generator is relied on for: hidden
// commands have no page, pages carry no date, a page of a command that is
// gone is removed on regeneration (while other files stay), and man pages
// are written one per command.
func TestGendocsPages(t *testing.T) {
	md, man := t.TempDir(), t.TempDir()
	stale := filepath.Join(md, "ted_removed_command.md")
	other := filepath.Join(md, "notes.txt")
	for _, f := range []string{stale, other} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("SOURCE_DATE_EPOCH", "0")
	if err := runGendocs(t, "--markdown", md, "--man", man); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale page %s survived regeneration (err %v)", stale, err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a file that is no command page was touched: %v", err)
	}
	pages := readDir(t, md)
	if _, ok := pages["ted_gendocs.md"]; ok {
		t.Error("the hidden gendocs command has a page")
	}
	for _, name := range []string{"ted.md", "ted_version.md", "ted_subscriber_run.md", "ted_completion_bash.md"} {
		if _, ok := pages[name]; !ok {
			t.Errorf("no page %s", name)
		}
	}
	for name, b := range pages {
		if bytes.Contains(b, []byte("Auto generated")) {
			t.Errorf("%s has cobra's dated auto-generated line", name)
		}
	}
	if !bytes.Contains(pages["ted.md"], []byte("(ted_subscriber.md)")) {
		t.Error("ted.md does not link to ted_subscriber.md")
	}

	mans := readDir(t, man)
	run, ok := mans["ted-subscriber-run.1"]
	if !ok {
		t.Fatalf("no man page ted-subscriber-run.1 among %d", len(mans))
	}
	if !bytes.Contains(run, []byte(`.TH "TED-SUBSCRIBER-RUN" "1" "Jan 1970"`)) {
		t.Errorf("ted-subscriber-run.1 header is not titled after its command and dated by SOURCE_DATE_EPOCH:\n%s", firstLines(run, 3))
	}
	if len(mans) != len(pages)-1 { // pages has notes.txt too
		t.Errorf("%d man pages for %d Markdown pages", len(mans), len(pages)-1)
	}
}

func TestGendocsWantsADirectory(t *testing.T) {
	if err := runGendocs(t); exitCode(err) != exitUsage {
		t.Errorf("gendocs without flags: err %v, want a usage error", err)
	}
}

func firstLines(b []byte, n int) string {
	lines := strings.SplitN(string(b), "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
