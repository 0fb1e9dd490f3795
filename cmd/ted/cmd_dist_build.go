package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ted/distribution"
	"ted/pki"
	"ted/publisher"
	"ted/swpkg"
)

type distBuildOptions struct {
	Store           string
	Name            string
	From            string
	Version         string
	Channels        []string
	Requires        []string
	Target          string
	Pre             []string
	Post            []string
	SignKey         string
	Keep            int
	SkipUnsupported bool
	// kind is set by runPackageBuild and runAgentBuild, platform by the
	// latter.
	kind     distribution.Kind
	platform string
	// Package is a .cpk (ted package compile): name, version, requires
	// and content come from it.
	Package string
	// Agent is a ted binary: a revision of kind agent for its platform,
	// named after it, its version read from it.
	Agent string
}

func (o *distBuildOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Store, "store", "", "store directory (created if missing)")
	f.StringVar(&o.Name, "name", "", "distribution name")
	f.StringVar(&o.From, "from", "", "directory whose content becomes the revision")
	f.StringVar(&o.Version, "version", "", "semantic version of this revision (1.4.0)")
	f.StringArrayVar(&o.Channels, "channel", nil, "channel to publish into (repeatable)")
	f.StringArrayVar(&o.Requires, "requires", nil, `dependency "NAME CONSTRAINT", e.g. "runtime >=2.0, <3" (repeatable)`)
	f.StringVar(&o.Target, "target", "", "where the content lands under a subscriber's root (default: the name)")
	f.StringArrayVar(&o.Pre, "pre", nil, "command to run before extraction (repeatable)")
	f.StringArrayVar(&o.Post, "post", nil, "command to run after extraction (repeatable)")
	f.StringVar(&o.SignKey, "sign-key", "", "ed25519 signing key file (from ted pki signing-key)")
	f.IntVar(&o.Keep, "keep", 3, "revisions of this distribution to keep; older ones and their unshared chunks are deleted")
	f.BoolVar(&o.SkipUnsupported, "skip-unsupported", false, "skip special files, escaping symlinks and unreadable entries, listing each, instead of failing")
	f.StringVar(&o.Package, "package", "", "a compiled package (.cpk): its name, version, requirements and files make the revision")
	f.StringVar(&o.Agent, "agent", "", "a ted binary: a revision of kind agent named ted-GOOS-GOARCH after its platform, its version read from it (docs/upgrade.md)")
}

// distBuildResult is the JSON document `dist build --json` prints.
type distBuildResult struct {
	Name          string         `json:"name"`
	Revision      uint64         `json:"revision"`
	Version       string         `json:"version"`
	Files         int            `json:"files"`
	Bytes         int64          `json:"bytes"`
	Chunks        int            `json:"chunks"`
	NewChunks     int            `json:"new_chunks"`
	NewBytes      int64          `json:"new_bytes"`
	ManifestBytes int            `json:"manifest_bytes"`
	Unchanged     bool           `json:"unchanged"`
	Skipped       []skippedEntry `json:"skipped"`
	Pruned        []uint64       `json:"pruned"`
	Warnings      []string       `json:"warnings"`
	Seconds       float64        `json:"seconds"`
	// Platform and Protocol describe an agent (--agent).
	Platform string `json:"platform,omitempty"`
	Protocol string `json:"protocol,omitempty"`
}

type skippedEntry struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

func newDistBuildCommand(g *globalOptions) *cobra.Command {
	var opts distBuildOptions
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build a signed revision of a distribution from a directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := runDistBuild(cmd.Context(), opts, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), g.json, res, func(p *printer) {
				if res.Unchanged {
					p.linef("%s@%d unchanged (%d files, %s)", res.Name, res.Revision, res.Files, humanBytes(res.Bytes))
					return
				}
				p.linef("%s@%d version %s: %d files, %s in %d chunks; %d new chunks (%s stored)",
					res.Name, res.Revision, res.Version, res.Files, humanBytes(res.Bytes), res.Chunks, res.NewChunks, humanBytes(res.NewBytes))
				if len(res.Pruned) > 0 {
					p.linef("pruned revisions %v", res.Pruned)
				}
			})
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

// validateVersion accepts a strict semantic version (1.4.0, 2.0.0-rc.1)
// and refuses the forms that would be completed silently (v1, 1.4).
func validateVersion(v string) (string, error) {
	version, err := distribution.ParseVersion(v)
	if err != nil {
		return "", usageError{fmt.Errorf("--version: %w", err)}
	}
	return version, nil
}

// validateNames checks the names given by flags, so that an error blames
// the flag rather than the manifest built from it.
func validateNames(name string, channels []string) error {
	if err := distribution.ValidName("distribution name", name); err != nil {
		return usageError{fmt.Errorf("--name: %w", err)}
	}
	for _, ch := range channels {
		if err := distribution.ValidName("channel", ch); err != nil {
			return usageError{fmt.Errorf("--channel: %w", err)}
		}
	}
	return nil
}

// publicKeyGiven explains a public key given where the private signing
// key belongs; name is how the user gave it (--sign-key, sign_key).
func publicKeyGiven(name, file string) string {
	msg := fmt.Sprintf("%s is a public key; %s wants the private signing key made by `ted pki signing-key`", file, name)
	if priv, ok := strings.CutSuffix(file, ".pub"); ok {
		if _, err := os.Stat(priv); err == nil {
			msg += "; did you mean " + priv + "?"
		}
	}
	return msg
}

// validateRequires checks "NAME" or "NAME CONSTRAINT" dependency strings.
func validateRequires(reqs []string) error {
	for _, r := range reqs {
		name, constraint, _ := strings.Cut(strings.TrimSpace(r), " ")
		if err := distribution.ValidName("--requires "+fmt.Sprintf("%q", r)+": distribution name", name); err != nil {
			return usageError{err}
		}
		if c := strings.TrimSpace(constraint); c != "" {
			if _, err := semver.NewConstraint(c); err != nil {
				return usageError{fmt.Errorf("--requires %q: constraint: %v", r, err)}
			}
		}
	}
	return nil
}

func runDistBuild(ctx context.Context, opts distBuildOptions, stderr io.Writer) (*distBuildResult, error) {
	if opts.Package != "" {
		return runPackageBuild(ctx, opts, stderr)
	}
	if opts.Agent != "" {
		return runAgentBuild(ctx, opts, stderr)
	}
	for _, req := range [][2]string{{"store", opts.Store}, {"name", opts.Name}, {"from", opts.From}, {"version", opts.Version}, {"sign-key", opts.SignKey}} {
		if err := requireFlag(req[0], req[1]); err != nil {
			return nil, err
		}
	}
	if len(opts.Channels) == 0 {
		return nil, usageError{errors.New("--channel is required (at least one)")}
	}
	if opts.Keep < 1 {
		return nil, usageError{fmt.Errorf("--keep %d: keep at least 1 revision", opts.Keep)}
	}
	if err := validateNames(opts.Name, opts.Channels); err != nil {
		return nil, err
	}
	version, err := validateVersion(opts.Version)
	if err != nil {
		return nil, err
	}
	if err := validateRequires(opts.Requires); err != nil {
		return nil, err
	}
	res := &distBuildResult{Name: opts.Name, Version: version, Skipped: []skippedEntry{}, Pruned: []uint64{}, Warnings: []string{}}
	start := time.Now()
	var bar progress
	build := distribution.BuildOptions{
		Name: opts.Name, Version: version, Channels: opts.Channels, Kind: opts.kind, Platform: opts.platform,
		Target: opts.Target, Requires: opts.Requires, Pre: opts.Pre, Post: opts.Post,
		Created:         start,
		SkipUnsupported: opts.SkipUnsupported,
		Skipped: func(path string, reason error) {
			res.Skipped = append(res.Skipped, skippedEntry{Path: path, Reason: reason.Error()})
			fmt.Fprintf(stderr, "skipped %s: %v\n", path, reason)
		},
		Progress: func(p distribution.BuildProgress) {
			if bar == nil {
				bar = newProgress(stderr, "build "+opts.Name, p.TotalBytes)
			}
			bar.update(p.Bytes)
		},
	}
	// Bad metadata is the command line's fault: refuse it before a store
	// is created or a byte is read.
	if err := build.Validate(); err != nil {
		return nil, usageError{err}
	}
	key, err := pki.LoadSigningKey(opts.SignKey)
	if errors.Is(err, pki.ErrPublicKey) {
		return nil, usageError{errors.New("--sign-key " + publicKeyGiven("--sign-key", opts.SignKey))}
	}
	if err != nil {
		return nil, err
	}
	// Check the source before a new store is created for it.
	if info, err := os.Stat(opts.From); err != nil {
		return nil, fmt.Errorf("--from: %w", err)
	} else if !info.IsDir() {
		return nil, fmt.Errorf("--from %s: not a directory", opts.From)
	}
	st, err := openStore(opts.Store, true)
	if err != nil {
		return nil, err
	}
	defer st.Close()

	built, err := publisher.Build(ctx, st, publisher.BuildOptions{From: opts.From, Manifest: build, Keep: opts.Keep}, key)
	if bar != nil {
		bar.finish(built.Stats.Bytes)
	}
	if errors.Is(err, publisher.ErrCycle) {
		return nil, usageError{err}
	}
	if err != nil {
		return nil, err
	}
	res.Warnings = built.Warnings
	for _, w := range built.Warnings {
		fmt.Fprintf(stderr, "warning: %s@%d: %s\n", opts.Name, built.Revision, w)
	}
	res.Revision, res.Unchanged = built.Revision, built.Unchanged
	res.Files, res.Bytes, res.Chunks = built.Stats.Files, built.Stats.Bytes, built.Stats.Chunks
	res.NewChunks, res.NewBytes = built.Stats.NewChunks, built.Stats.NewBytes
	res.ManifestBytes = built.ManifestBytes
	res.Pruned = append(res.Pruned, built.Pruned...)
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// runPackageBuild builds a revision of kind package from a .cpk: the
// package is verified and unpacked into a temporary folder, which is then
// built like any directory.
func runPackageBuild(ctx context.Context, opts distBuildOptions, stderr io.Writer) (*distBuildResult, error) {
	for flag, set := range map[string]bool{"name": opts.Name != "", "from": opts.From != "", "version": opts.Version != "",
		"requires": len(opts.Requires) > 0, "pre": len(opts.Pre) > 0, "post": len(opts.Post) > 0} {
		if set {
			return nil, usageError{fmt.Errorf("--%s with --package: the package says it (ted package compile)", flag)}
		}
	}
	if err := requireFlag("sign-key", opts.SignKey); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "ted-package-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	tree := filepath.Join(tmp, "tree")
	pkg, err := swpkg.Open(opts.Package, tree)
	if err != nil {
		return nil, verifyError{fmt.Errorf("--package: %w", err)}
	}
	opts.Package = ""
	opts.Name, opts.Version, opts.Requires, opts.From = pkg.Name, pkg.Version, pkg.Requires, tree
	opts.kind = distribution.KindPackage
	return runDistBuild(ctx, opts, stderr)
}
