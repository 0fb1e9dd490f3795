package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"path/filepath"

	"github.com/spf13/cobra"

	"ted/admin"
	"ted/pki"
	"ted/subscriber"
)

func newSubscriberCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "subscriber", Short: "Daemon on every server: receive, verify and extract revisions"}
	cmd.AddCommand(newSubscriberRunCommand(), newSubscriberStatusCommand(g), newSubscriberExtractCommand())
	return cmd
}

func newSubscriberRunCommand() *cobra.Command {
	var opts daemonOptions
	cmd := &cobra.Command{
		Use:   "run --config subscriber.yaml",
		Short: "Run the subscriber daemon until SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSubscriber(cmd.Context(), opts, cmd.ErrOrStderr())
		},
	}
	opts.AddFlags(cmd)
	return cmd
}

func runSubscriber(ctx context.Context, opts daemonOptions, stderr io.Writer) error {
	if err := requireFlag("config", opts.config); err != nil {
		return err
	}
	log, err := opts.log.logger(stderr)
	if err != nil {
		return err
	}
	file, err := loadSubscriberConfig(opts.config)
	if err != nil {
		return err
	}
	n, err := setUpNode(&file.nodeFile, pki.RoleSubscriber, log)
	if err != nil {
		return err
	}
	defer n.store.Close()
	cfg := subscriber.DefaultConfig()
	cfg.Name, cfg.Agent = file.Name, buildVersion().Version
	cfg.Parents, cfg.Trust = n.parents, n.trust
	cfg.Channels = file.Channels
	cfg.Root = file.Root
	cfg.KeepRevisions = *file.KeepRevisions
	cfg.DataDir, cfg.MinFreeDisk = file.DataDir, file.minFree
	if cfg.Schedules, err = loadSchedules(&file.nodeFile, map[string]string{file.Extract: "extract"}); err != nil {
		return err
	}
	n.schedules = cfg.Schedules
	cfg.Extract = file.Extract
	if err := cfg.Validate(); err != nil {
		return usageError{fmt.Errorf("%s: %w", opts.config, err)}
	}
	inst, err := subscriber.NewInstaller(file.Root, filepath.Join(file.DataDir, "installed"), n.store, log)
	if err != nil {
		return err
	}
	s, err := subscriber.New(cfg, n.store, inst, log)
	if err != nil {
		return err
	}
	log.Info("subscriber running", "node", file.Name, "parents", file.Parents, "channels", file.Channels, "root", file.Root, "data_dir", file.DataDir)
	return n.serve(ctx, "subscriber", daemonAdmin{
		status: func() any { return s.Status() }, health: s.Health, registry: s.Registry(),
		actions: map[string]admin.Action{
			"extract": func(ctx context.Context, _ url.Values) (any, error) {
				if err := s.ExtractNow(ctx); err != nil {
					return nil, err
				}
				return s.Status(), nil
			},
		},
	}, func(ctx context.Context) error { return s.Run(ctx, n.dial) })
}

func newSubscriberStatusCommand(g *globalOptions) *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "status --config subscriber.yaml",
		Short: "Show a running subscriber's revisions and their states",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSubscriberStatus(cmd.Context(), config, g.json, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "the daemon's config file")
	addJSONFlag(cmd, g)
	return cmd
}

func runSubscriberStatus(ctx context.Context, config string, asJSON bool, w io.Writer) error {
	if err := requireFlag("config", config); err != nil {
		return err
	}
	file, err := loadSubscriberConfig(config)
	if err != nil {
		return err
	}
	var st subscriber.Status
	if err := admin.Get(ctx, daemonSocket(file.DataDir), "/api/status", &st); err != nil {
		return err
	}
	return printResult(w, asJSON, st, func(p *printer) { printSubscriberStatus(p, st) })
}

func printSubscriberStatus(p *printer, st subscriber.Status) {
	parent := st.Parent
	if parent == "" {
		parent = "(none reachable)"
	}
	p.linef("subscriber %s  role %s  parent %s", st.Node, st.Role, parent)
	p.linef("")
	p.linef("%-20s %8s %-10s %-11s %s", "DISTRIBUTION", "REVISION", "VERSION", "STATE", "DETAIL")
	for _, d := range st.Distributions {
		for _, r := range d.Revisions {
			detail := r.Reason
			if r.Error != "" {
				detail = r.Error
			}
			if r.State == subscriber.StateReceiving && r.Chunks > 0 {
				detail = fmt.Sprintf("%d/%d chunks", r.HaveChunks, r.Chunks)
			}
			p.linef("%-20s %8d %-10s %-11s %s", d.Name, r.Revision, r.Version, r.State, detail)
		}
	}
}

func newSubscriberExtractCommand() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "extract --config subscriber.yaml",
		Short: "Extract every received revision now, ignoring the extract window",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlag("config", config); err != nil {
				return err
			}
			file, err := loadSubscriberConfig(config)
			if err != nil {
				return err
			}
			var st subscriber.Status
			if err := admin.Post(cmd.Context(), daemonSocket(file.DataDir), "extract", nil, &st); err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), false, st, func(p *printer) { printSubscriberStatus(p, st) })
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "the daemon's config file")
	return cmd
}
