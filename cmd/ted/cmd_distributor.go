package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"ted/admin"
	"ted/distributor"
	"ted/pki"
	"ted/transport"
)

func newDistributorCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "distributor", Short: "Relay daemon: receive revisions, store them, offer them to children"}
	cmd.AddCommand(newDistributorRunCommand(), newDistributorStatusCommand(g))
	return cmd
}

type daemonOptions struct {
	config string
	log    logOptions
}

func (o *daemonOptions) AddFlags(f *cobra.Command) {
	f.Flags().StringVar(&o.config, "config", "", "config file (YAML)")
	o.log.AddFlags(f.Flags())
}

func newDistributorRunCommand() *cobra.Command {
	var opts daemonOptions
	cmd := &cobra.Command{
		Use:   "run --config distributor.yaml",
		Short: "Run the distributor daemon until SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDistributor(cmd.Context(), opts, cmd.ErrOrStderr())
		},
	}
	opts.AddFlags(cmd)
	return cmd
}

func runDistributor(ctx context.Context, opts daemonOptions, stderr io.Writer) error {
	if err := requireFlag("config", opts.config); err != nil {
		return err
	}
	log, err := opts.log.logger(stderr)
	if err != nil {
		return err
	}
	file, err := loadDistributorConfig(opts.config)
	if err != nil {
		return err
	}
	n, err := setUpNode(&file.nodeFile, pki.RoleDistributor, log)
	if err != nil {
		return err
	}
	defer n.store.Close()
	cfg := distributor.DefaultConfig()
	cfg.Name, cfg.Agent = file.Name, buildVersion().Version
	cfg.Parents, cfg.Trust = n.parents, n.trust
	cfg.KeepRevisions = *file.KeepRevisions
	cfg.DataDir, cfg.MinFreeDisk = file.DataDir, file.minFree
	cfg.Channels = map[string]distributor.Channel{}
	sends := map[string]string{}
	for name, ch := range file.Channels {
		cfg.Channels[name] = distributor.Channel{Publishers: ch.Publishers, Children: ch.Children, Send: ch.Send}
		if ch.Send != "" {
			sends[ch.Send] = "channels." + name + ".send"
		}
	}
	cfg.Clusters = file.clusters()
	if cfg.Schedules, err = loadSchedules(&file.nodeFile, sends); err != nil {
		return err
	}
	n.schedules = cfg.Schedules
	if err := cfg.Validate(); err != nil {
		return configErrors(opts.config, err)
	}
	d, err := distributor.New(cfg, n.store, log)
	if err != nil {
		return err
	}
	ln, err := transport.Listen(file.Listen, n.cred, d.Accept, n.quic)
	if err != nil {
		return bindError(opts.config, "listen", file.Listen, "udp", err)
	}
	defer ln.Close()
	log.Info("distributor running", "node", file.Name, "listen", ln.Addr().String(), "data_dir", file.DataDir, "parents", file.Parents, "status_listen", file.StatusListen)
	return n.serve(ctx, "distributor", daemonAdmin{
		status: func() any { return d.Status() }, health: d.Health, registry: d.Registry(),
	}, func(ctx context.Context) error { return d.Run(ctx, ln, n.dial) })
}

func newDistributorStatusCommand(g *globalOptions) *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "status --config distributor.yaml",
		Short: "Show a running distributor's revisions and children",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDistributorStatus(cmd.Context(), config, g.json, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "the daemon's config file")
	addJSONFlag(cmd, g)
	return cmd
}

func runDistributorStatus(ctx context.Context, config string, asJSON bool, w io.Writer) error {
	if err := requireFlag("config", config); err != nil {
		return err
	}
	file, err := loadDistributorConfig(config)
	if err != nil {
		return err
	}
	var st distributor.Status
	if err := admin.Get(ctx, daemonSocket(file.DataDir), "/api/status", &st); err != nil {
		return err
	}
	return printResult(w, asJSON, st, func(p *printer) {
		parent := st.Parent
		if parent == "" {
			parent = "-"
		}
		p.linef("distributor %s  parent %s", st.Node, parent)
		p.linef("")
		p.linef("%-20s %8s %-10s %8s %10s", "DISTRIBUTION", "REVISION", "VERSION", "FILES", "BYTES")
		for _, r := range st.Distributions {
			p.linef("%-20s %8d %-10s %8d %10s", r.Name, r.Revision, r.Version, r.Files, humanBytes(r.Bytes))
		}
		for _, r := range st.Incoming {
			p.linef("%-20s %8d %-10s %8d %10s  receiving from %s", r.Name, r.Revision, r.Version, r.Files, humanBytes(r.Bytes), r.From)
		}
		p.linef("")
		p.linef("%-16s %-11s %-9s %-24s %s", "CHILD", "ROLE", "ONLINE", "ADDR", "REVISIONS")
		for _, c := range st.Children {
			online := "no"
			if c.Connected {
				online = "yes"
			}
			name := c.Name
			if c.ActiveNode != "" && c.ActiveNode != c.Name {
				name += " (" + c.ActiveNode + ")" // a cluster and its active node
			}
			p.linef("%-16s %-11s %-9s %-24s %s", name, c.Role, online, c.Addr, revisionSummary(c.Revisions))
		}
	})
}

// revisionSummary says in one line what a child holds.
func revisionSummary(revs []transport.RevisionState) string {
	if len(revs) == 0 {
		return "-"
	}
	s := ""
	for i, r := range revs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s@%d %s", r.Name, r.Revision, r.State)
		if r.State == "receiving" && r.Chunks > 0 {
			s += fmt.Sprintf(" %d%%", 100*r.HaveChunks/r.Chunks)
		}
	}
	return s
}
