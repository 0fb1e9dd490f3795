package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ted/distribution"
	"ted/pki"
	"ted/store"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("boom"), exitError},
		{usageError{errors.New("bad flag")}, exitUsage},
		{fmt.Errorf("verify: %w", distribution.ErrBadSignature), exitVerify},
		{fmt.Errorf("verify: %w", distribution.ErrUntrustedKey), exitVerify},
		{fmt.Errorf("extract: %w", distribution.ErrChunkCorrupt), exitVerify},
		{verifyError{errors.New("2 problems")}, exitVerify},
		{fmt.Errorf("show: %w", store.ErrNotFound), exitNotFound},
		{context.Canceled, exitInterrupted},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestParseRevisionRef(t *testing.T) {
	for arg, want := range map[string]revisionRef{"app": {Name: "app"}, "app@12": {Name: "app", Revision: 12}} {
		got, err := parseRevisionRef(arg)
		if err != nil || got != want {
			t.Errorf("parseRevisionRef(%q) = %+v, %v", arg, got, err)
		}
	}
	for _, bad := range []string{"", "@1", "app@", "app@0", "app@x", "a b", "app@-1"} {
		if _, err := parseRevisionRef(bad); exitCode(err) != exitUsage {
			t.Errorf("parseRevisionRef(%q): err %v, want a usage error", bad, err)
		}
	}
}

// buildSetup makes a folder with a signing key (pub.key) and an empty
// source folder (src) for dist build.
func buildSetup(t *testing.T) (dir, key, src string) {
	t.Helper()
	dir = t.TempDir()
	key = filepath.Join(dir, "pub.key")
	if _, err := pki.GenerateSigningKey(key, false); err != nil {
		t.Fatal(err)
	}
	src = filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, key, src
}

func TestRunDistBuildAndList(t *testing.T) {
	dir, key, src := buildSetup(t)
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := distBuildOptions{Store: filepath.Join(dir, "store"), Name: "app", From: src, Version: "1.2.0",
		Channels: []string{"web", "lab", "web"}, SignKey: key, Keep: 3}
	res, err := runDistBuild(context.Background(), opts, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision != 1 || res.Version != "1.2.0" || res.Files != 1 || res.Bytes != 5 || res.NewChunks != 1 {
		t.Fatalf("build: %+v", res)
	}
	list, err := runDistList(context.Background(), distListOptions{Store: opts.Store})
	if err != nil {
		t.Fatal(err)
	}
	if got := list.Distributions[0].Revisions[0].Channels; len(got) != 2 || got[0] != "lab" || got[1] != "web" {
		t.Fatalf("channels %v, want [lab web]", got)
	}

	opts.Requires = []string{"runtime >=2.0, <3", "certs"}
	if _, err := runDistBuild(context.Background(), opts, io.Discard); err != nil {
		t.Fatal(err)
	}
	opts.Requires = []string{"runtime >= banana"}
	if _, err := runDistBuild(context.Background(), opts, io.Discard); exitCode(err) != exitUsage {
		t.Fatalf("bad constraint: %v, want a usage error", err)
	}

	// app requires runtime (and certs, never built here: a warning), so a
	// runtime that requires app would close a cycle.
	if res.Warnings == nil {
		t.Error("warnings is null in the JSON, want a list")
	}
	cycle := opts
	cycle.Name, cycle.Requires = "runtime", []string{"app"}
	if _, err := runDistBuild(context.Background(), cycle, io.Discard); exitCode(err) != exitUsage || !strings.Contains(err.Error(), "app → runtime → app") {
		t.Fatalf("runtime requiring app: %v, want a usage error naming the cycle", err)
	}
}

func TestRunDemo(t *testing.T) {
	var out strings.Builder
	res, err := runDemo(context.Background(), demoOptions{Dir: filepath.Join(t.TempDir(), "demo")}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Final == nil || res.Final.Revisions != 2 || res.Final.DeltaNewChunks < 1 || res.Final.DeltaNewChunks > 4 {
		t.Fatalf("demo result %+v", res.Final)
	}
	if _, err := os.Stat(res.Dir); !os.IsNotExist(err) {
		t.Fatalf("demo left %s behind without --keep", res.Dir)
	}
	// The directory is gone: it is not offered as where the configs are,
	// and its removal is said.
	if strings.Contains(out.String(), "configs in") || !strings.Contains(out.String(), "== removed   "+res.Dir+" with its configs, keys and stores (--keep keeps them)\n") {
		t.Errorf("demo without --keep printed:\n%s\nwant no \"configs in\", and the removal of %s said", out.String(), res.Dir)
	}
}
