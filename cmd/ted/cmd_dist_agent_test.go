package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// --agent takes a ted binary only, and a version it can tell.
func TestDistBuildAgentRefuses(t *testing.T) {
	dir := t.TempDir()
	goTool, err := exec.LookPath("go") // a Go binary, not ted
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	notGo := filepath.Join(dir, "script")
	if err := os.WriteFile(notGo, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		opts distBuildOptions
		want string
	}{
		{distBuildOptions{Agent: notGo}, "not a Go executable"},
		// The go tool is Go, but its main package is not ted's.
		{distBuildOptions{Agent: goTool}, "not a ted binary"},
		{distBuildOptions{Agent: goTool, From: dir}, "--from with --agent"},
	} {
		tc.opts.Store, tc.opts.SignKey, tc.opts.Channels = filepath.Join(dir, "store"), filepath.Join(dir, "key"), []string{"agents"}
		_, err := runDistBuild(t.Context(), tc.opts, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.opts, err, tc.want)
		}
		if exitCode(err) != exitUsage {
			t.Errorf("%v: exit %d, want %d", err, exitCode(err), exitUsage)
		}
	}
}
