package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ted/distribution"
	"ted/pki"
)

//go:embed demodata/site
var demoSite embed.FS

// demoBinaryBytes is the size of the generated binary the demo adds to the
// sample site, so chunking and delta builds have something to show.
const demoBinaryBytes = 8 << 20

type demoOptions struct {
	Dir  string
	Keep bool
}

func (o *demoOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Dir, "dir", "", "work directory (must be empty or absent; default a temporary one)")
	f.BoolVar(&o.Keep, "keep", false, "keep the work directory afterwards")
}

type demoResult struct {
	Dir   string      `json:"dir"`
	Steps []demoStep  `json:"steps"`
	Kept  bool        `json:"kept"`
	Final *demoFigure `json:"final"`
}

type demoStep struct {
	Step   string `json:"step"`
	Detail string `json:"detail"`
}

type demoFigure struct {
	Revisions      int   `json:"revisions"`
	Bytes          int64 `json:"bytes"`
	DeltaNewChunks int   `json:"delta_new_chunks"`
	DeltaNewBytes  int64 `json:"delta_new_bytes"`
}

func newDemoCommand(g *globalOptions) *cobra.Command {
	var opts demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Build, verify, change and extract a sample distribution on this machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var live io.Writer = cmd.OutOrStdout()
			if g.json {
				live = io.Discard
			}
			res, err := runDemo(cmd.Context(), opts, live, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if g.json {
				return printResult(cmd.OutOrStdout(), true, res, nil)
			}
			return nil
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

// runDemo walks through the life of a distribution on one machine, saying
// what happens at each step on out.
func runDemo(ctx context.Context, opts demoOptions, out, stderr io.Writer) (res *demoResult, err error) {
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "ted-demo-"); err != nil {
			return nil, err
		}
	} else if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, usageError{fmt.Errorf("--dir %s is not empty; the demo needs a directory of its own", dir)}
	}
	res = &demoResult{Dir: dir, Kept: opts.Keep}
	defer func() {
		if !opts.Keep {
			if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
				err = rerr
			}
		}
	}()
	say := func(step, format string, args ...any) {
		detail := fmt.Sprintf(format, args...)
		res.Steps = append(res.Steps, demoStep{Step: step, Detail: detail})
		fmt.Fprintf(out, "== %-9s %s\n", step, detail)
	}

	var (
		keyFile = filepath.Join(dir, "keys", "publisher.key")
		site    = filepath.Join(dir, "site")
		storeD  = filepath.Join(dir, "store")
		outDir  = filepath.Join(dir, "extracted")
	)
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
		return nil, err
	}
	pub, err := pki.GenerateSigningKey(keyFile, false)
	if err != nil {
		return nil, err
	}
	say("keys", "publisher signing key %s (key id %s)", keyFile, distribution.KeyID(pub))
	if err := writeDemoSite(site); err != nil {
		return nil, err
	}
	say("content", "sample web stack in %s: pages, config, a control script and an %s binary", site, humanBytes(demoBinaryBytes))

	build := distBuildOptions{
		Store: storeD, Name: "webstack", From: site, Version: "2.1.0", Channels: []string{"web"},
		Requires: []string{"runtime >=1.0"}, SignKey: keyFile, Keep: 3,
	}
	first, err := runDistBuild(ctx, build, stderr)
	if err != nil {
		return nil, err
	}
	say("build", "webstack@%d: %d files, %s in %d chunks, all %d new (%s stored after compression)",
		first.Revision, first.Files, humanBytes(first.Bytes), first.Chunks, first.NewChunks, humanBytes(first.NewBytes))

	again, err := runDistBuild(ctx, build, stderr)
	if err != nil {
		return nil, err
	}
	if !again.Unchanged {
		return nil, errors.New("demo: rebuilding unchanged content made a new revision")
	}
	say("rebuild", "same content again: unchanged, still webstack@%d, nothing stored", again.Revision)

	if err := patchDemoSite(site); err != nil {
		return nil, err
	}
	build.Version = "2.1.1"
	second, err := runDistBuild(ctx, build, stderr)
	if err != nil {
		return nil, err
	}
	say("patch", "webstack@%d (2.1.1): a patched binary and a config line; %d of %d chunks new, %s of %s to send",
		second.Revision, second.NewChunks, second.Chunks, humanBytes(second.NewBytes), humanBytes(second.Bytes))

	verified, err := runDistVerify(ctx, distVerifyOptions{Store: storeD, Trust: []string{keyFile + ".pub"}}, nil)
	if err != nil {
		return nil, err
	}
	if len(verified.Failures) > 0 {
		return nil, verifyError{fmt.Errorf("demo: verification failed: %s", verified.Failures[0].Error)}
	}
	say("verify", "%d revisions: signatures by the trusted key, every chunk matches its SHA-256", len(verified.Verified))

	extracted, err := runDistExtract(ctx, distExtractOptions{Store: storeD, To: outDir, Trust: []string{keyFile + ".pub"}},
		revisionRef{Name: "webstack"}, stderr)
	if err != nil {
		return nil, err
	}
	if err := sameTree(site, outDir); err != nil {
		return nil, fmt.Errorf("demo: extracted tree differs from the source: %w", err)
	}
	say("extract", "webstack@%d to %s: %d files, identical to the source (content, modes, symlinks)",
		extracted.Revision, outDir, extracted.Files)

	res.Final = &demoFigure{Revisions: len(verified.Verified), Bytes: second.Bytes, DeltaNewChunks: second.NewChunks, DeltaNewBytes: second.NewBytes}
	if opts.Keep {
		say("kept", "everything is in %s; try: ted dist list --store %s", dir, storeD)
	}
	return res, nil
}

// writeDemoSite writes the embedded sample site to dir, with a generated
// binary and a symlink.
func writeDemoSite(dir string) error {
	const root = "demodata/site"
	err := fs.WalkDir(demoSite, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dest := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(p, root)))
		if d.IsDir() {
			return os.MkdirAll(dest, 0o755)
		}
		b, err := demoSite.ReadFile(p)
		if err != nil {
			return err
		}
		// embed keeps no modes: what lives in bin/ is executable.
		mode := os.FileMode(0o644)
		if path.Base(path.Dir(p)) == "bin" {
			mode = 0o755
		}
		return os.WriteFile(dest, b, mode)
	})
	if err != nil {
		return fmt.Errorf("write demo site: %w", err)
	}
	bin := make([]byte, demoBinaryBytes)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range bin {
		bin[i] = byte(r.Uint32() >> 24)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "webstackd"), bin, 0o755); err != nil {
		return err
	}
	return os.Symlink("htdocs/index.html", filepath.Join(dir, "index.html"))
}

// patchDemoSite changes a few bytes of the binary and one config line, as a
// patch release would.
func patchDemoSite(dir string) error {
	bin := filepath.Join(dir, "bin", "webstackd")
	b, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	copy(b[len(b)/3:], "patched: fix CVE-2026-0001")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		return err
	}
	conf := filepath.Join(dir, "conf", "webstack.conf")
	c, err := os.ReadFile(conf)
	if err != nil {
		return err
	}
	return os.WriteFile(conf, []byte(strings.Replace(string(c), "workers   = 8", "workers   = 16", 1)), 0o644)
}

// sameTree compares two trees: paths, types, permission bits, file content
// and symlink targets.
func sameTree(a, b string) error {
	list := func(root string) (map[string]string, error) {
		out := map[string]string{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			info, err := os.Lstat(p)
			if err != nil {
				return err
			}
			desc := info.Mode().String()
			switch {
			case info.Mode()&fs.ModeSymlink != 0:
				t, err := os.Readlink(p)
				if err != nil {
					return err
				}
				desc += " -> " + t
			case info.Mode().IsRegular():
				c, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				desc += " " + distribution.SumChunk(c).String()
			}
			if rel != "." {
				out[filepath.ToSlash(rel)] = desc
			}
			return nil
		})
		return out, err
	}
	la, err := list(a)
	if err != nil {
		return err
	}
	lb, err := list(b)
	if err != nil {
		return err
	}
	for p, da := range la {
		if db, ok := lb[p]; !ok || da != db {
			return fmt.Errorf("%s: %q vs %q", p, da, db)
		}
	}
	if len(la) != len(lb) {
		return fmt.Errorf("%d entries vs %d", len(la), len(lb))
	}
	return nil
}
