package main

import (
	"errors"

	"github.com/spf13/cobra"

	"ted/swpkg"
)

func newPackageCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "package", Short: "Software packages: compile a spec (.spk) into a package file (.cpk)"}
	cmd.AddCommand(newPackageCompileCommand(g))
	return cmd
}

func newPackageCompileCommand(g *globalOptions) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "compile SPEC.spk --out FILE.cpk",
		Short: "Gather a package's components and scripts into one verifiable file",
		Long: `Read a package spec (docs/reference/package.md), check it, and write one .cpk holding its
descriptor, every component's files and the scripts its commands use, with a
SHA-256 over the whole file. Publish it with
  ted dist build --package FILE.cpk --channel C --sign-key K`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag("out", out); err != nil {
				return err
			}
			spec, err := swpkg.ParseSpec(args[0])
			if se, ok := errors.AsType[*swpkg.SpecError](err); ok {
				return usageError{se}
			}
			if err != nil {
				return err
			}
			res, err := swpkg.Compile(spec, out)
			if err != nil {
				return err
			}
			doc := packageCompileResult{Name: res.Name, Version: res.Version, Components: res.Components, Files: res.Files, Bytes: res.Bytes, Out: res.Out}
			return printResult(cmd.OutOrStdout(), g.json, doc, func(p *printer) {
				p.linef("%s %s: %d components, %d files, %s written to %s", res.Name, res.Version, res.Components, res.Files, humanBytes(res.Bytes), res.Out)
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the package file to write")
	addJSONFlag(cmd, g)
	return cmd
}

// packageCompileResult is `ted package compile --json`.
type packageCompileResult struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	Components int    `json:"components"`
	Files      int    `json:"files"`
	Bytes      int64  `json:"bytes"`
	Out        string `json:"out"`
}
