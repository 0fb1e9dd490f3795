package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ted/store"
)

type distListOptions struct {
	Store string
}

func (o *distListOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Store, "store", "", "store directory")
}

type distListResult struct {
	Distributions []distListEntry `json:"distributions"`
}

type distListEntry struct {
	Name      string               `json:"name"`
	Revisions []store.RevisionInfo `json:"revisions"`
}

func newDistListCommand(g *globalOptions) *cobra.Command {
	var opts distListOptions
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the distributions and revisions in a store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := runDistList(cmd.Context(), opts)
			if err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), g.json, res, func(p *printer) {
				if len(res.Distributions) == 0 {
					p.linef("no distributions")
				}
				for _, d := range res.Distributions {
					p.linef("%s", d.Name)
					for _, r := range d.Revisions {
						p.linef("  @%-4d %-12s %-20s %6d files %10s  %s", r.Revision, r.Version,
							strings.Join(r.Channels, ","), r.Files, humanBytes(r.Bytes), r.Created.Format("2006-01-02 15:04:05Z07:00"))
					}
				}
			})
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

func runDistList(_ context.Context, opts distListOptions) (*distListResult, error) {
	st, err := openStore(opts.Store, false)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	names, err := st.Distributions()
	if err != nil {
		return nil, err
	}
	res := &distListResult{Distributions: []distListEntry{}}
	for _, name := range names {
		revs, err := st.Revisions(name)
		if err != nil {
			return nil, err
		}
		res.Distributions = append(res.Distributions, distListEntry{Name: name, Revisions: revs})
	}
	return res, nil
}
