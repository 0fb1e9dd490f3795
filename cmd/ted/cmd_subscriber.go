package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"ted/admin"
	"ted/distribution"
	"ted/pki"
	"ted/subscriber"
	"ted/transport"
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
	keys, err := pki.LoadPublicKeys(file.Trust)
	if err != nil {
		return fmt.Errorf("%s: trust: %w", opts.config, err)
	}
	cred, err := loadCredentials(opts.config, file.Name, file.TLS, pki.RoleSubscriber)
	if err != nil {
		return err
	}
	cfg := subscriber.DefaultConfig()
	cfg.Name, cfg.Agent = file.Name, buildVersion().Version
	cfg.Parents.Addrs = file.Parents
	cfg.Channels = file.Channels
	cfg.Trust = distribution.NewTrust(keys...)
	cfg.Root = file.Root
	cfg.KeepRevisions = *file.KeepRevisions
	cfg.DataDir, cfg.MinFreeDisk = file.DataDir, file.minFree
	qcfg := transport.DefaultQUICConfig()
	qcfg.Logger = log
	file.Link.apply(&qcfg, &cfg.Parents)
	if err := cfg.Validate(); err != nil {
		return usageError{fmt.Errorf("%s: %w", opts.config, err)}
	}
	if err := os.MkdirAll(file.DataDir, 0o700); err != nil {
		return fmt.Errorf("%s: data_dir: %w", opts.config, err)
	}
	st, err := openDaemonStore(file.DataDir, log)
	if err != nil {
		return err
	}
	defer st.Close()
	inst, err := subscriber.NewInstaller(file.Root, filepath.Join(file.DataDir, "installed"), st, log)
	if err != nil {
		return err
	}
	s, err := subscriber.New(cfg, st, inst, log)
	if err != nil {
		return err
	}
	srv, err := startAdmin(file.DataDir, file.StatusListen, daemonAdmin{
		status: func() any { return s.Status() }, health: s.Health, registry: s.Registry(),
		actions: map[string]admin.Action{
			"extract": func(ctx context.Context, _ url.Values) (any, error) {
				if err := s.ExtractNow(ctx); err != nil {
					return nil, err
				}
				return s.Status(), nil
			},
		},
	}, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	dial := func(ctx context.Context, addr string) (transport.Session, error) {
		return transport.Dial(ctx, addr, cred, pki.RoleDistributor, qcfg)
	}
	log.Info("subscriber running", "node", file.Name, "parents", file.Parents, "channels", file.Channels, "root", file.Root, "data_dir", file.DataDir)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx) })
	g.Go(func() error { return s.Run(gctx, dial) })
	err = g.Wait()
	log.Info("subscriber stopped", "node", file.Name)
	if ctx.Err() != nil {
		return nil
	}
	return err
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
