package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"ted/admin"
	"ted/agent"
	"ted/console"
	"ted/distribution"
	"ted/distributor"
	"ted/fleet"
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
	// launch: started as `run` by a person or a service manager, so the
	// agent launcher decides which version runs (not in ted demo, which
	// runs daemons in its own process).
	launch bool
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
			opts.launch = true
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
	if opts.launch {
		// Before the config is read whole: the installed binary may be
		// older than the config the agent version running reads.
		if err := launchAgent(ctx, opts.config, os.Args, log); err != nil {
			return err
		}
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
	var sends map[string]string
	cfg.Channels, sends = file.channels()
	cfg.Clusters = file.clusters()
	cfg.Fleet.StaleAfter, cfg.Fleet.ForgetAfter = file.Fleet.StaleAfter, file.Fleet.ForgetAfter
	if !file.Fleet.History.Off {
		h, err := fleet.OpenHistory(fleet.HistoryConfig{Dir: filepath.Join(file.DataDir, "history"), MaxAge: file.Fleet.History.MaxAge, MaxBytes: file.Fleet.maxBytes, Log: log})
		if err != nil {
			return fmt.Errorf("%s: fleet.history: %w", opts.config, err)
		}
		defer h.Close()
		cfg.Fleet.History = h
	}
	keeper, cas, err := newRevocationKeeper(&file.nodeFile, n.cred, log)
	if err != nil {
		return err
	}
	cfg.Revocations, cfg.Self = keeper, n.cred.Self
	if a := file.Agent; a != nil && a.Upgrade != upgradeAlways && a.Upgrade != upgradeNever {
		if sends == nil {
			sends = map[string]string{}
		}
		sends[a.Upgrade] = "agent.upgrade"
	}
	if cfg.Schedules, err = loadSchedules(&file.nodeFile, sends); err != nil {
		return err
	}
	n.schedules = cfg.Schedules
	if err := cfg.Validate(); err != nil {
		return configErrors(opts.config, err)
	}
	ctx, restart := context.WithCancelCause(ctx)
	defer restart(nil)
	var u *upgrader
	var d *distributor.Distributor
	if file.Agent != nil {
		u = &upgrader{dir: agentDir(file.DataDir), file: file.Agent, kind: "distributor", config: opts.config, version: cfg.Agent,
			schedules: cfg.Schedules, src: n.store, restart: restart, log: log}
		defer u.stop()
		var offer func(m *distribution.Manifest, parentAgent string)
		offer = func(m *distribution.Manifest, parentAgent string) {
			if !slices.Contains(m.Channels, file.Agent.Channel) {
				return
			}
			state, reason := u.offer(ctx, m, parentAgent, func() { offer(m, d.ParentAgent()) })
			log.Info("agent revision", "dist", m.Name, "rev", m.Revision, "version", m.Version, "state", state, "reason", reason)
		}
		cfg.OnAgent = offer
		cfg.AgentState = u.state
	}
	d, err = distributor.New(cfg, n.store, log)
	if err != nil {
		return err
	}

	n.reloader = &configReloader{path: opts.config, log: log, keeper: keeper, crl: file.TLS.CRL,
		load: func() (*liveReload, error) { return distributorReload(opts.config, file, d, cas) }}
	enrollHandler, err := newEnrollHandler(file, n.cred, cas, log)
	if err != nil {
		return err
	}
	if enrollHandler.Signs() {
		n.signer = enrollHandler
	}
	d.Registry().MustRegister(enrollHandler.Collector())
	d.Registry().MustRegister(d.DiskGauges()...)
	ln, err := transport.Listen(file.Listen, n.cred, d.Accept, n.quic)
	if err != nil {
		return bindError(opts.config, "listen", file.Listen, "udp", err)
	}
	defer ln.Close()
	ln.HandleEnroll(enrollHandler.Serve)
	if u != nil {
		// On probation from here: listening, the store open.
		go u.probate(ctx, logShower{log, d.Report}, n.store, func(m *distribution.Manifest) { cfg.OnAgent(m, d.ParentAgent()) }, func() error {
			if err := d.Health(); err != nil {
				return err
			}
			if len(cfg.Parents.Addrs) > 0 && d.ParentAgent() == "" {
				return errors.New("no parent connected yet")
			}
			return nil
		})
	}
	log.Info("distributor running", "node", file.Name, "listen", ln.Addr().String(), "data_dir", file.DataDir, "parents", file.Parents, "status_listen", file.StatusListen)
	err = n.serve(ctx, "distributor", daemonAdmin{
		status: func() any { return d.Status() }, health: d.Health, registry: d.Registry(),
		views: distributorFleetViews(d),
		pages: console.New(d, log),
	}, func(ctx context.Context) error { return d.Run(ctx, ln, n.dial) })
	if errors.Is(context.Cause(ctx), agent.ErrRestart) {
		return agent.ErrRestart // main relaunches, once the store is closed
	}
	return err
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
	now := time.Now()
	return printResult(w, asJSON, st, func(p *printer) {
		parent := st.Parent
		if parent == "" {
			parent = "-"
		}
		cert := ""
		if st.Certificate != nil {
			cert = "  certificate " + certDays(st.Certificate.Expires, now)
		}
		p.linef("distributor %s  parent %s%s", st.Node, parent, cert)
		if st.ParentError != "" {
			p.linef("parent error: %s", st.ParentError)
		}
		p.linef("")
		p.linef("%-20s %8s %-10s %8s %10s", "DISTRIBUTION", "REVISION", "VERSION", "FILES", "BYTES")
		for _, r := range st.Distributions {
			p.linef("%-20s %8d %-10s %8d %10s", r.Name, r.Revision, r.Version, r.Files, humanBytes(r.Bytes))
		}
		for _, r := range st.Incoming {
			p.linef("%-20s %8d %-10s %8d %10s  receiving from %s", r.Name, r.Revision, r.Version, r.Files, humanBytes(r.Bytes), r.From)
		}
		p.linef("")
		p.linef("%-16s %-11s %-9s %-24s %-6s %s", "CHILD", "ROLE", "ONLINE", "ADDR", "CERT", "REVISIONS")
		for _, c := range st.Children {
			online := "no"
			if c.Connected {
				online = "yes"
			}
			name := c.Name
			if c.ActiveNode != "" && c.ActiveNode != c.Name {
				name += " (" + c.ActiveNode + ")" // a cluster and its active node
			}
			p.linef("%-16s %-11s %-9s %-24s %-6s %s", name, c.Role, online, c.Addr, certDays(c.CertificateExpires, now), revisionSummary(c.Revisions))
		}
	})
}

// certDays says how long a certificate that expires at expires has left,
// in days ("712d", "-3d" once expired; "-" if unknown): a short column.
func certDays(expires, now time.Time) string {
	if expires.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%dd", transport.DaysLeft(expires, now))
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

// channels returns the channels section as the distributor takes it, and
// the schedules their send names, each with the field that names it.
func (c *distributorFile) channels() (map[string]distributor.Channel, map[string]string) {
	channels := map[string]distributor.Channel{}
	sends := map[string]string{}
	for name, ch := range c.Channels {
		channels[name] = distributor.Channel{Publishers: ch.Publishers, Children: ch.Children, Send: ch.Send}
		if w := ch.Waves; w != nil {
			channels[name] = distributor.Channel{Publishers: ch.Publishers, Children: ch.Children, Send: ch.Send,
				Waves: &distributor.Waves{Canary: w.Canary, Soak: w.Soak, StopAfter: w.StopAfter}}
		}
		if ch.Send != "" {
			sends[ch.Send] = "channels." + name + ".send"
		}
	}
	return channels, sends
}

// distributorReload reads a running distributor's config file again and
// checks it as the daemon's start does: the file itself, its trusted keys,
// the schedules its channels name and its revocation list. Its channels,
// clusters and trusted keys change live (d.Reload); the keys that take a
// restart are named.
func distributorReload(config string, started *distributorFile, d *distributor.Distributor, cas []*x509.Certificate) (*liveReload, error) {
	file, err := loadDistributorConfig(config)
	if err != nil {
		return nil, err
	}
	keys, err := pki.LoadPublicKeys(file.Trust)
	if err != nil {
		return nil, configError(config, "trust", "%v", err)
	}
	channels, sends := file.channels()
	// The running schedule file (a new path takes a restart) must define
	// every schedule the channels name.
	schedFile := file.nodeFile
	schedFile.Schedules = started.Schedules
	if _, err := loadSchedules(&schedFile, sends); err != nil {
		return nil, err
	}
	revocations, err := loadRevocationList(config, file.TLS.CRL, cas)
	if err != nil {
		return nil, err
	}
	restart := restartKeys(&started.nodeFile, &file.nodeFile)
	if file.Listen != started.Listen {
		restart = append(restart, "listen")
	}
	if !reflect.DeepEqual(file.Agent, started.Agent) {
		restart = append(restart, "agent")
	}
	if !reflect.DeepEqual(file.Enroll, started.Enroll) {
		restart = append(restart, "enroll")
	}
	next := distributor.DefaultConfig()
	next.Channels, next.Clusters, next.Trust = channels, file.clusters(), distribution.NewTrust(keys...)
	return &liveReload{crl: file.TLS.CRL, revocations: revocations, restart: restart, apply: func() ([]string, error) {
		changes, err := d.Reload(next)
		if err != nil {
			return nil, configErrors(config, err)
		}
		return changes, nil
	}}, nil
}
