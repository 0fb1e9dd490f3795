package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type distShowOptions struct {
	Store string
}

func (o *distShowOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Store, "store", "", "store directory")
}

type distShowResult struct {
	Name          string      `json:"name"`
	Revision      uint64      `json:"revision"`
	Version       string      `json:"version"`
	Channels      []string    `json:"channels"`
	Kind          string      `json:"kind"`
	Target        string      `json:"target"`
	Requires      []string    `json:"requires"`
	Pre           []string    `json:"pre"`
	Post          []string    `json:"post"`
	Created       time.Time   `json:"created"`
	KeyID         string      `json:"key_id"`
	Files         int         `json:"files"`
	Bytes         int64       `json:"bytes"`
	Chunks        int         `json:"chunks"`
	ManifestBytes int         `json:"manifest_bytes"`
	Entries       []showEntry `json:"entries"`
}

type showEntry struct {
	Path   string `json:"path"`
	Type   string `json:"type"`
	Mode   string `json:"mode"`
	Size   int64  `json:"size"`
	Target string `json:"target,omitempty"`
	Chunks int    `json:"chunks"`
}

func newDistShowCommand(g *globalOptions) *cobra.Command {
	var opts distShowOptions
	cmd := &cobra.Command{
		Use:   "show NAME[@REV]",
		Short: "Show one revision: its metadata and entries",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseRevisionRef(args[0])
			if err != nil {
				return err
			}
			res, err := runDistShow(cmd.Context(), opts, ref)
			if err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), g.json, res, func(p *printer) {
				p.linef("%s@%d version %s (%s)", res.Name, res.Revision, res.Version, res.Kind)
				p.linef("channels: %s", strings.Join(res.Channels, ", "))
				p.linef("target:   %s", res.Target)
				if len(res.Requires) > 0 {
					p.linef("requires: %s", strings.Join(res.Requires, "; "))
				}
				for _, a := range res.Pre {
					p.linef("pre:      %s", a)
				}
				for _, a := range res.Post {
					p.linef("post:     %s", a)
				}
				p.linef("created:  %s by key %s", res.Created.Format(time.RFC3339), res.KeyID)
				p.linef("content:  %d files, %s in %d chunks; manifest %s", res.Files, humanBytes(res.Bytes), res.Chunks, humanBytes(int64(res.ManifestBytes)))
				for _, e := range res.Entries {
					line := fmt.Sprintf("%s %10d  %s", e.Mode, e.Size, e.Path)
					if e.Target != "" {
						line += " -> " + e.Target
					}
					p.linef("%s", line)
				}
			})
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

func runDistShow(_ context.Context, opts distShowOptions, ref revisionRef) (*distShowResult, error) {
	st, err := openStore(opts.Store, false)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	signed, m, err := loadSigned(st, ref)
	if err != nil {
		return nil, err
	}
	res := &distShowResult{
		Name: m.Name, Revision: m.Revision, Version: m.Version, Channels: m.Channels, Kind: string(m.Kind),
		Target: m.Target, Requires: nonNil(m.Requires), Pre: nonNil(m.Pre), Post: nonNil(m.Post),
		Created: m.CreatedTime(), KeyID: m.KeyID, ManifestBytes: len(signed.Body),
		Entries: make([]showEntry, 0, len(m.Entries)),
	}
	res.Files, res.Bytes, res.Chunks = m.Totals()
	for _, e := range m.Entries {
		res.Entries = append(res.Entries, showEntry{
			Path: e.Path, Type: e.Type.String(), Mode: e.FileMode().String(), Size: e.Size, Target: e.Target, Chunks: len(e.Chunks),
		})
	}
	return res, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
