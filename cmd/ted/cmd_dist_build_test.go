package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestDistBuildRefusesByFlag: a bad name, channel, version or signing key
// is refused as the flag that gave it (exit 2), in words that say what is
// wanted, before a store is created.
func TestDistBuildRefusesByFlag(t *testing.T) {
	dir, key, src := buildSetup(t)
	good := distBuildOptions{Store: filepath.Join(dir, "store"), Name: "app", From: src, Version: "1.0.0",
		Channels: []string{"web"}, SignKey: key, Keep: 3}
	for _, tt := range []struct {
		name string
		edit func(*distBuildOptions)
		want string
	}{
		{"name not ASCII", func(o *distBuildOptions) { o.Name = "café" },
			`--name: distribution name "café": use ASCII letters a-z A-Z, digits and . _ + - (starting with a letter or digit)`},
		{"channel not ASCII", func(o *distBuildOptions) { o.Channels = []string{"web", "ünicode"} },
			`--channel: channel "ünicode": use ASCII letters a-z A-Z, digits and . _ + - (starting with a letter or digit)`},
		{"version v1", func(o *distBuildOptions) { o.Version = "v1" },
			`--version: "v1" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`},
		{"version 1", func(o *distBuildOptions) { o.Version = "1" },
			`--version: "1" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`},
		{"version 1.0", func(o *distBuildOptions) { o.Version = "1.0" },
			`--version: "1.0" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`},
		{"version word", func(o *distBuildOptions) { o.Version = "latest" },
			`--version: "latest" is not a semantic version MAJOR.MINOR.PATCH (such as 1.0.0 or 2.1.0-rc.1)`},
		{"public key", func(o *distBuildOptions) { o.SignKey = key + ".pub" },
			"--sign-key " + key + ".pub is a public key; --sign-key wants the private signing key made by `ted pki signing-key`; did you mean " + key + "?"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := good
			tt.edit(&opts)
			_, err := runDistBuild(context.Background(), opts, io.Discard)
			if err == nil || err.Error() != tt.want || exitCode(err) != exitUsage {
				t.Fatalf("%v (exit %d)\nwant %s (exit %d)", err, exitCode(err), tt.want, exitUsage)
			}
			if _, err := os.Stat(good.Store); !os.IsNotExist(err) {
				t.Errorf("a refused build made the store: %v", err)
			}
		})
	}
	// Strict versions pass as written, pre-release and build included.
	opts := good
	opts.Version = "2.0.0-rc.1+build.7"
	res, err := runDistBuild(context.Background(), opts, io.Discard)
	if err != nil || res.Version != "2.0.0-rc.1+build.7" {
		t.Fatalf("build of 2.0.0-rc.1+build.7: %+v, %v", res, err)
	}
}
