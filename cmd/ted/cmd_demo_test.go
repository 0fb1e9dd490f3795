package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunDemoKeep: with --keep the directory stays, and the demo says
// where the configs are and removes nothing.
func TestRunDemoKeep(t *testing.T) {
	var out strings.Builder
	dir := filepath.Join(t.TempDir(), "demo")
	res, err := runDemo(context.Background(), demoOptions{Dir: dir, Keep: true}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dist-1.yaml")); err != nil {
		t.Fatalf("demo --keep did not keep its configs: %v", err)
	}
	if !res.Kept || !strings.Contains(out.String(), "configs in "+dir) || strings.Contains(out.String(), "== removed") {
		t.Errorf("demo --keep printed:\n%s\nwant the configs' directory %s and no removal", out.String(), dir)
	}
}
