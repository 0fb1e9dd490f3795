package publisher

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ted/distribution"
	"ted/store"
)

// writeTree writes files (slash paths) under dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func buildOptions(from string, keep int, created time.Time) BuildOptions {
	return BuildOptions{From: from, Keep: keep, Manifest: distribution.BuildOptions{
		Name: "app", Version: "1.4.0", Channels: []string{"web"}, Created: created}}
}

func TestBuild(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{"index.html": "hello", "css/site.css": "body{}"})
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	ctx := t.Context()
	created := time.Unix(1_700_000_000, 0)

	first, err := Build(ctx, st, buildOptions(src, 2, created), publisherKey())
	if err != nil {
		t.Fatal(err)
	}
	if first.Revision != 1 || first.Unchanged || first.Stats.Files != 2 || first.Stats.NewChunks != 2 || first.Signed == nil {
		t.Fatalf("first build: %+v", first)
	}

	// The same tree, built later: no revision.
	again, err := Build(ctx, st, buildOptions(src, 2, created.Add(time.Hour)), publisherKey())
	if err != nil {
		t.Fatal(err)
	}
	if again.Revision != 1 || !again.Unchanged || again.Stats.NewChunks != 0 {
		t.Fatalf("unchanged rebuild: %+v, want revision 1 unchanged", again)
	}
	if string(again.Signed.Encode()) != string(first.Signed.Encode()) {
		t.Error("an unchanged rebuild gives another envelope than the stored one")
	}
	if revs, _ := st.Revisions("app"); len(revs) != 1 {
		t.Fatalf("store holds %d revisions after an unchanged rebuild, want 1", len(revs))
	}

	// A change is the next revision; metadata alone is a change too.
	writeTree(t, src, map[string]string{"index.html": "hello again"})
	second, err := Build(ctx, st, buildOptions(src, 2, created), publisherKey())
	if err != nil {
		t.Fatal(err)
	}
	if second.Revision != 2 || second.Unchanged || second.Stats.NewChunks != 1 || len(second.Pruned) != 0 {
		t.Fatalf("changed build: %+v, want revision 2 with one new chunk", second)
	}
	opts := buildOptions(src, 2, created)
	opts.Manifest.Version = "1.5.0"
	third, err := Build(ctx, st, opts, publisherKey())
	if err != nil {
		t.Fatal(err)
	}
	if third.Revision != 3 || third.Unchanged || third.Version != "1.5.0" {
		t.Fatalf("new version: %+v, want revision 3", third)
	}
	// Keep 2: revision 1 is pruned.
	if !slices.Equal(third.Pruned, []uint64{1}) {
		t.Errorf("pruned %v, want [1]", third.Pruned)
	}
	revs, err := st.Revisions("app")
	if err != nil {
		t.Fatal(err)
	}
	var kept []uint64
	for _, r := range revs {
		kept = append(kept, r.Revision)
	}
	if !slices.Equal(kept, []uint64{2, 3}) {
		t.Errorf("store keeps %v, want [2 3]", kept)
	}
}

func TestBuildRefuses(t *testing.T) {
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	src := t.TempDir()
	writeTree(t, src, map[string]string{"a": "a"})
	if _, err := Build(t.Context(), st, buildOptions(src, 0, time.Time{}), publisherKey()); err == nil {
		t.Error("Build with keep 0 succeeded")
	}
	if _, err := Build(t.Context(), st, buildOptions(filepath.Join(src, "missing"), 1, time.Time{}), publisherKey()); err == nil {
		t.Error("Build from a missing directory succeeded")
	}
	if _, err := st.Latest("app"); err == nil {
		t.Error("a failed build stored a revision")
	}
}

// TestBuildRefusesCycle: app requires runtime, so runtime may not require
// app; a requirement the store has never held is built with a warning.
func TestBuildRefusesCycle(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{"f": "x"})
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	named := func(name string, requires ...string) BuildOptions {
		o := buildOptions(src, 3, time.Unix(1_700_000_000, 0))
		o.Manifest.Name, o.Manifest.Requires = name, requires
		return o
	}
	app, err := Build(t.Context(), st, named("app", "runtime >=1.0"), publisherKey())
	if err != nil {
		t.Fatal(err)
	}
	if len(app.Warnings) != 1 || !strings.Contains(app.Warnings[0], "runtime") {
		t.Errorf("warnings %q, want one naming runtime, never held", app.Warnings)
	}
	if _, err := Build(t.Context(), st, named("lib"), publisherKey()); err != nil {
		t.Fatal(err)
	}
	_, err = Build(t.Context(), st, named("runtime", "lib", "app"), publisherKey())
	if !errors.Is(err, ErrCycle) || !strings.Contains(err.Error(), "app → runtime → app") {
		t.Fatalf("runtime requiring app: %v, want ErrCycle naming app → runtime → app", err)
	}
	if _, err := st.Latest("runtime"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused build stored something: %v", err)
	}
	if ok, err := Build(t.Context(), st, named("runtime", "lib"), publisherKey()); err != nil || len(ok.Warnings) != 0 {
		t.Fatalf("runtime requiring lib: %+v, %v; want built without warnings", ok, err)
	}
}
