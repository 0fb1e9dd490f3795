package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"ted/admin"
	"ted/agent"
	"ted/distribution"
	"ted/install"
	"ted/pki"
	"ted/store"
	"ted/subscriber"
)

func newSubscriberCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "subscriber", Short: "Daemon on every server: receive, verify and extract revisions"}
	cmd.AddCommand(newSubscriberRunCommand(), newSubscriberStatusCommand(g), newSubscriberExtractCommand(g), newSubscriberRollbackCommand(g), newSubscriberPackagesCommand(g), newSubscriberClusterCommand(g))
	return cmd
}

func newSubscriberRunCommand() *cobra.Command {
	var opts daemonOptions
	cmd := &cobra.Command{
		Use:   "run --config subscriber.yaml",
		Short: "Run the subscriber daemon until SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.launch = true
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
	if opts.launch {
		// Before the config is read whole: the installed binary may be
		// older than the config the agent version running reads.
		if err := launchAgent(ctx, opts.config, os.Args, log); err != nil {
			return err
		}
	}
	file, err := loadSubscriberConfig(opts.config)
	if err != nil {
		return err
	}
	if file.Cluster != nil {
		return runClusterSubscriber(ctx, opts.config, file, log)
	}
	n, err := setUpNode(&file.nodeFile, pki.RoleSubscriber, log)
	if err != nil {
		return err
	}
	defer n.store.Close()
	cfg, err := subscriberConfig(opts.config, file, n)
	if err != nil {
		return err
	}
	ctx, restart := context.WithCancelCause(ctx)
	defer restart(nil)
	var u *upgrader
	var s *subscriber.Subscriber
	var reconsider func(*distribution.Manifest)
	if file.Agent != nil {
		u = &upgrader{dir: agentDir(file.DataDir), file: file.Agent, kind: "subscriber", config: opts.config, version: cfg.Agent,
			schedules: cfg.Schedules, src: n.store, restart: restart, log: log}
		defer u.stop()
		cfg.Channels = file.channelsWithAgent()
		offer := func(ctx context.Context, m *distribution.Manifest, parentAgent string) (string, string) {
			return u.offer(ctx, m, parentAgent, func() { reconsider(m) })
		}
		reconsider = func(m *distribution.Manifest) {
			state, reason := offer(ctx, m, s.ParentAgent())
			s.SetAgentState(m, state, reason)
		}
		cfg.OnAgent = offer
	}
	s, err = newSubscriber(cfg, file, n.store, filepath.Join(file.DataDir, "installed"), log)
	if err != nil {
		return err
	}
	if u != nil {
		go u.probate(ctx, s, n.store, reconsider, func() error {
			if err := s.Health(); err != nil {
				return err
			}
			if s.ParentAgent() == "" {
				return errors.New("no parent connected yet")
			}
			return nil
		})
	}
	n.reloader = &configReloader{path: opts.config, log: log, keeper: cfg.Revocations, crl: file.TLS.CRL,
		load: func() (*liveReload, error) { return subscriberReload(opts.config, file, s) }}
	log.Info("subscriber running", "node", file.Name, "parents", file.Parents, "channels", file.Channels, "root", file.Root, "data_dir", file.DataDir)
	onActive := func(ctx context.Context, fn func(context.Context, *subscriber.Subscriber) error) error {
		return fn(ctx, s)
	}
	err = n.serve(ctx, "subscriber", daemonAdmin{
		status: func() any { return s.Status() }, health: s.Health, registry: s.Registry(),
		views: subscriberViews(onActive), actions: subscriberActions(onActive),
	}, func(ctx context.Context) error { return s.Run(ctx, n.dial) })
	if errors.Is(context.Cause(ctx), agent.ErrRestart) {
		return agent.ErrRestart // main relaunches, once the store is closed
	}
	return err
}

// subscriberConfig builds the daemon's configuration from its file.
func subscriberConfig(config string, file *subscriberFile, n *node) (subscriber.Config, error) {
	cfg := subscriber.DefaultConfig()
	cfg.Name, cfg.Agent = file.Name, buildVersion().Version
	cfg.Parents, cfg.Trust = n.parents, n.trust
	cfg.Channels = file.Channels
	cfg.Root = file.Root
	cfg.KeepRevisions = *file.KeepRevisions
	cfg.DataDir, cfg.MinFreeDisk = file.DataDir, file.minFree
	var err error
	names := map[string]string{file.Extract: "extract"}
	if a := file.Agent; a != nil && a.Upgrade != upgradeAlways && a.Upgrade != upgradeNever {
		names[a.Upgrade] = "agent.upgrade"
	}
	if cfg.Schedules, err = loadSchedules(&file.nodeFile, names); err != nil {
		return cfg, err
	}
	n.schedules = cfg.Schedules
	cfg.Extract = file.Extract
	if cfg.Revocations, _, err = newRevocationKeeper(&file.nodeFile, n.cred, n.log); err != nil {
		return cfg, err
	}
	cfg.Self = n.cred.Self
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{fmt.Errorf("%s: %w", config, err)}
	}
	return cfg, nil
}

// newSubscriber makes the installer (state in stateDir) and the daemon
// over an open store.
func newSubscriber(cfg subscriber.Config, file *subscriberFile, st store.Store, stateDir string, log *slog.Logger) (*subscriber.Subscriber, error) {
	inst, err := install.New(file.Root, stateDir, st,
		install.Options{Log: log, Keep: cfg.KeepRevisions, ActionTimeout: cfg.ActionTimeout,
			Fence: cfg.Fence, Node: cfg.Node, Epoch: cfg.Epoch})
	if err != nil {
		return nil, err
	}
	if point := os.Getenv(killAtEnv); point != "" {
		// Crash tests: die at a journal step as kill -9 would.
		log.Warn("fault injection: the daemon kills itself at an installer step", "env", killAtEnv, "point", point)
		inst.SetHook(func(at string) error {
			if at == point {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
			return nil
		})
	}
	return subscriber.New(cfg, st, inst, log)
}

// onActive runs fn on the subscriber that acts on this node, under a
// context that also ends when it stops acting (a cluster node losing its
// lease), and fails on a standby cluster node.
type onActive func(ctx context.Context, fn func(context.Context, *subscriber.Subscriber) error) error

// subscriberViews are the read-only admin endpoints.
func subscriberViews(on onActive) map[string]admin.Action {
	return map[string]admin.Action{
		"packages": func(ctx context.Context, _ url.Values) (any, error) {
			var pk subscriber.Packages
			err := on(ctx, func(_ context.Context, s *subscriber.Subscriber) error {
				var err error
				pk, err = s.Packages()
				return err
			})
			return pk, err
		},
	}
}

// subscriberActions are the admin actions.
func subscriberActions(on onActive) map[string]admin.Action {
	return map[string]admin.Action{
		"rollback": func(ctx context.Context, params url.Values) (any, error) {
			var out rollbackResult
			err := on(ctx, func(ctx context.Context, s *subscriber.Subscriber) error {
				res, err := s.Rollback(ctx, params.Get("name"), params.Get("force") == "true")
				if errors.Is(err, install.ErrNothingToRollBack) {
					return notFound{err}
				}
				out = rollbackResult{RolledBack: res, Status: s.Status()}
				return err
			})
			if err != nil {
				return nil, err
			}
			return out, nil
		},
		"extract": func(ctx context.Context, _ url.Values) (any, error) {
			var st subscriber.Status
			err := on(ctx, func(ctx context.Context, s *subscriber.Subscriber) error {
				if err := s.ExtractNow(ctx); err != nil {
					return err
				}
				st = s.Status()
				return nil
			})
			if err != nil {
				return nil, err
			}
			return st, nil
		},
	}
}

// killAtEnv names an installer fault point (a journal step, such as
// "write" or "restore+1") at which the subscriber daemon kills itself with
// SIGKILL: the crash tests' hook. Never set it in production.
const killAtEnv = "TED_TEST_KILL_AT"

// notFound makes an action's error answer "not found" (exit 4), its text
// unchanged.
type notFound struct{ error }

func (e notFound) Unwrap() []error { return []error{e.error, admin.ErrNotFound} }

// rollbackResult is what the rollback action answers.
type rollbackResult struct {
	RolledBack install.RolledBack `json:"rolled_back"`
	Status     subscriber.Status  `json:"status"`
}

func newSubscriberRollbackCommand(g *globalOptions) *cobra.Command {
	var config, name string
	var force bool
	cmd := &cobra.Command{
		Use:   "rollback --config subscriber.yaml [--name NAME] [--force]",
		Short: "Undo the most recent installation (of one distribution with --name), last in first out",
		Long: `Undo the most recent installation: every file it touched is put back exactly
as it was (content, modes, removed files back, added files gone) and the
revision it replaced is installed again. Without --name, the most recent
installation of any distribution is undone. The revisions rolled back are not
extracted again until a newer one arrives. A rollback that would take away
what an extracted distribution requires is refused, naming it, unless --force.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			socket, err := subscriberSocket(config)
			if err != nil {
				return err
			}
			params := url.Values{}
			if name != "" {
				params.Set("name", name)
			}
			if force {
				params.Set("force", "true")
			}
			var res rollbackResult
			if err := admin.Post(cmd.Context(), socket, "rollback", params, &res); err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), g.json, res, func(p *printer) {
				rb := res.RolledBack
				to := "nothing installed"
				if rb.To != 0 {
					to = fmt.Sprintf("%s@%d (%s)", rb.Name, rb.To, rb.ToVersion)
				}
				p.linef("rolled back %s@%d (%s) in %s; now %s", rb.Name, rb.From, rb.FromVersion, rb.Target, to)
				p.linef("")
				printSubscriberStatus(p, res.Status)
			})
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "the daemon's config file")
	cmd.Flags().StringVar(&name, "name", "", "the distribution to roll back (default: the most recent installation of any)")
	cmd.Flags().BoolVar(&force, "force", false, "roll back even if an extracted distribution requires what it takes away")
	addJSONFlag(cmd, g)
	return cmd
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
	socket, err := subscriberSocket(config)
	if err != nil {
		return err
	}
	var st subscriber.Status
	if err := admin.Get(ctx, socket, "/api/status", &st); err != nil {
		return err
	}
	return printResult(w, asJSON, st, func(p *printer) { printSubscriberStatus(p, st) })
}

func printSubscriberStatus(p *printer, st subscriber.Status) {
	parent := st.Parent
	if parent == "" {
		parent = "(none reachable)"
	}
	cert := ""
	if st.Certificate != nil {
		cert = "  certificate " + certDays(st.Certificate.Expires, time.Now())
	}
	p.linef("subscriber %s  role %s  active node %s  parent %s%s", st.Node, st.Role, st.ActiveNode, parent, cert)
	if st.ParentError != "" {
		p.linef("parent error: %s", st.ParentError)
	}
	if st.Problem != "" {
		p.linef("problem: %s", st.Problem)
	}
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

func newSubscriberExtractCommand(g *globalOptions) *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "extract --config subscriber.yaml",
		Short: "Extract every received revision now, ignoring the extract window",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSubscriberExtract(cmd.Context(), config, g.json, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "the daemon's config file")
	addJSONFlag(cmd, g)
	return cmd
}

// runSubscriberExtract asks the daemon to extract now and prints its
// state afterwards: with asJSON, the document subscriber status --json
// prints.
func runSubscriberExtract(ctx context.Context, config string, asJSON bool, w io.Writer) error {
	socket, err := subscriberSocket(config)
	if err != nil {
		return err
	}
	var st subscriber.Status
	if err := admin.Post(ctx, socket, "extract", nil, &st); err != nil {
		return err
	}
	return printResult(w, asJSON, st, func(p *printer) { printSubscriberStatus(p, st) })
}

func newSubscriberPackagesCommand(g *globalOptions) *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "packages --config subscriber.yaml",
		Short: "List installed packages in completion order; * marks the one rollback undoes next",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			socket, err := subscriberSocket(config)
			if err != nil {
				return err
			}
			var pk subscriber.Packages
			if err := admin.Get(cmd.Context(), socket, "/api/packages", &pk); err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), g.json, pk, func(p *printer) {
				if len(pk.Packages) == 0 {
					p.linef("no package installed")
					return
				}
				p.linef("  %-20s %8s %-10s %-9s %s", "PACKAGE", "REVISION", "VERSION", "STATE", "COMPONENTS")
				for _, pkg := range pk.Packages {
					mark := " "
					if pkg.NextRollback {
						mark = "*"
					}
					var comps []string
					for _, c := range pkg.Components {
						if c.Installed {
							comps = append(comps, c.Name+" -> "+c.Target)
						} else {
							comps = append(comps, c.Name+" skipped: "+c.Reason)
						}
					}
					p.linef("%s %-20s %8d %-10s %-9s %s", mark, pkg.Name, pkg.Revision, pkg.Version, pkg.State, strings.Join(comps, "; "))
				}
			})
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "the daemon's config file")
	addJSONFlag(cmd, g)
	return cmd
}

// subscriberSocket returns the admin socket of the subscriber that config
// (the --config flag) configures.
func subscriberSocket(config string) (string, error) {
	if err := requireFlag("config", config); err != nil {
		return "", err
	}
	file, err := loadSubscriberConfig(config)
	if err != nil {
		return "", err
	}
	return daemonSocket(file.DataDir), nil
}

// subscriberReload reads a running subscriber's config file again and
// checks it as the daemon's start does. Its channels and trusted keys
// change live (s.Reload); the keys that take a restart are named.
func subscriberReload(config string, started *subscriberFile, s *subscriber.Subscriber) (*liveReload, error) {
	file, err := loadSubscriberConfig(config)
	if err != nil {
		return nil, err
	}
	keys, err := pki.LoadPublicKeys(file.Trust)
	if err != nil {
		return nil, configError(config, "trust", "%v", err)
	}
	cas, err := pki.LoadCACertificates(started.TLS.CA)
	if err != nil {
		return nil, configError(config, "tls.ca", "%v", err)
	}
	revocations, err := loadRevocationList(config, file.TLS.CRL, cas)
	if err != nil {
		return nil, err
	}
	restart := restartKeys(&started.nodeFile, &file.nodeFile)
	if !reflect.DeepEqual(file.Agent, started.Agent) {
		restart = append(restart, "agent")
	}
	for _, f := range []struct {
		key  string
		a, b any
	}{{"root", started.Root, file.Root}, {"extract", started.Extract, file.Extract}, {"cluster", started.Cluster, file.Cluster}} {
		if !reflect.DeepEqual(f.a, f.b) {
			restart = append(restart, f.key)
		}
	}
	return &liveReload{crl: file.TLS.CRL, revocations: revocations, restart: restart, apply: func() ([]string, error) {
		changes, err := s.Reload(file.channelsWithAgent(), distribution.NewTrust(keys...))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", config, err)
		}
		return changes, nil
	}}, nil
}
