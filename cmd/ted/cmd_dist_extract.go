package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ted/distribution"
	"ted/pki"
)

type distExtractOptions struct {
	Store string
	To    string
	Trust []string
}

func (o *distExtractOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Store, "store", "", "store directory")
	f.StringVar(&o.To, "to", "", "directory to extract into (created if missing; paths the revision does not name are left alone)")
	f.StringArrayVar(&o.Trust, "trust", nil, "also check the manifest signature against this public key file (repeatable)")
}

type distExtractResult struct {
	Name     string `json:"name"`
	Revision uint64 `json:"revision"`
	Version  string `json:"version"`
	To       string `json:"to"`
	Files    int    `json:"files"`
	Bytes    int64  `json:"bytes"`
}

func newDistExtractCommand(g *globalOptions) *cobra.Command {
	var opts distExtractOptions
	cmd := &cobra.Command{
		Use:   "extract NAME[@REV] --to DIR",
		Short: "Write a revision's content to a directory, checking every chunk",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseRevisionRef(args[0])
			if err != nil {
				return err
			}
			res, err := runDistExtract(cmd.Context(), opts, ref, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), g.json, res, func(p *printer) {
				p.linef("extracted %s@%d (%d files, %s) to %s", res.Name, res.Revision, res.Files, humanBytes(res.Bytes), res.To)
			})
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

func runDistExtract(ctx context.Context, opts distExtractOptions, ref revisionRef, stderr io.Writer) (*distExtractResult, error) {
	if err := requireFlag("to", opts.To); err != nil {
		return nil, err
	}
	st, err := openStore(opts.Store, false)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	signed, m, err := loadSigned(st, ref)
	if err != nil {
		return nil, err
	}
	if len(opts.Trust) > 0 {
		keys, err := pki.LoadPublicKeys(opts.Trust)
		if err != nil {
			return nil, err
		}
		if m, err = distribution.NewTrust(keys...).Verify(signed); err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
	}
	var bar progress
	err = distribution.Materialize(ctx, m, st, opts.To, distribution.MaterializeOptions{
		Progress: func(p distribution.BuildProgress) {
			if bar == nil {
				bar = newProgress(stderr, "extract "+m.Name, p.TotalBytes)
			}
			bar.update(p.Bytes)
		},
	})
	files, bytes, _ := m.Totals()
	if bar != nil {
		bar.finish(bytes)
	}
	if err != nil {
		return nil, err
	}
	return &distExtractResult{Name: m.Name, Revision: m.Revision, Version: m.Version, To: opts.To, Files: files, Bytes: bytes}, nil
}
