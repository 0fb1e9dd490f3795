package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/spf13/cobra"

	"ted/admin"
	"ted/distribution"
	"ted/pki"
	"ted/publisher"
	"ted/schedule"
	"ted/store"
	"ted/transport"
	"ted/yamlfile"
)

// publisherFile is publisher.yaml (docs/reference/publisher.md).
type publisherFile struct {
	Name string `yaml:"name"`
	// Store is the publisher's store, as dist build --store.
	Store string `yaml:"store"`
	// DataDir holds the admin socket; default: the store's directory.
	DataDir           string                           `yaml:"data_dir"`
	SignKey           string                           `yaml:"sign_key"`
	TLS               tlsFiles                         `yaml:"tls"`
	Distributor       string                           `yaml:"distributor"`
	Schedules         string                           `yaml:"schedules"`
	KeepRevisions     *int                             `yaml:"keep_revisions"`
	StatusListen      string                           `yaml:"status_listen"`
	StatusTLS         bool                             `yaml:"status_tls"`
	StatusMetricsOpen bool                             `yaml:"status_metrics_open"`
	Link              linkFile                         `yaml:"link"`
	Distributions     map[string]*publisherDistribFile `yaml:"distributions"`

	path string
}

type publisherDistribFile struct {
	From     string   `yaml:"from"`
	Version  string   `yaml:"version"`
	Channels []string `yaml:"channels"`
	Target   string   `yaml:"target"`
	Requires []string `yaml:"requires"`
	// Build is a schedule name; default always.
	Build string `yaml:"build"`
}

func loadPublisherConfig(file string) (*publisherFile, error) {
	var c publisherFile
	d, err := readConfig(file, &c)
	if err != nil {
		return nil, err
	}
	c.checkPublisher(d)
	if err := problems(d); err != nil {
		return nil, err
	}
	return &c, nil
}

// checkPublisher validates a publisher config, recording every problem in
// d.
func (c *publisherFile) checkPublisher(d *yamlfile.Doc) {
	file := d.File
	c.path = file
	if err := pki.ValidateName(c.Name); err != nil {
		d.Errorf("name", "%v", err)
	}
	for _, f := range []struct {
		field string
		value *string
	}{{"store", &c.Store}, {"sign_key", &c.SignKey}} {
		if *f.value == "" {
			d.Errorf(f.field, "missing")
		}
		*f.value = resolve(file, *f.value)
	}
	c.DataDir = resolve(file, c.DataDir)
	if c.DataDir == "" {
		c.DataDir = c.Store
	}
	if _, err := pki.LoadSigningKey(c.SignKey); errors.Is(err, pki.ErrPublicKey) {
		d.Errorf("sign_key", "%s", publicKeyGiven("sign_key", c.SignKey))
	}
	c.TLS.check(d)
	checkAddr(d, "distributor", c.Distributor, true, addrDial)
	checkStatus(d, c.StatusListen, c.StatusTLS, c.StatusMetricsOpen)
	checkKeep(d, &c.KeepRevisions)
	c.Link.check(d)
	c.Schedules = resolve(file, c.Schedules)
	if len(c.Distributions) == 0 {
		d.Errorf("distributions", "none: name at least one distribution to build and publish")
	}
	for _, name := range c.names() {
		dist := c.Distributions[name]
		field := "distributions." + name
		if dist == nil {
			d.Errorf(field, "empty: give at least from, version and channels")
			continue
		}
		if err := distribution.ValidName("distribution name", name); err != nil {
			d.Errorf(field, "%v", err)
		}
		if dist.From == "" {
			d.Errorf(field+".from", "missing")
		}
		dist.From = resolve(file, dist.From)
		if dist.Version == "" {
			d.Errorf(field+".version", "missing")
		} else if v, err := distribution.ParseVersion(dist.Version); err != nil {
			d.Errorf(field+".version", "%v", err)
		} else {
			dist.Version = v
		}
		if len(dist.Channels) == 0 {
			d.Errorf(field+".channels", "none")
		}
		for i, r := range dist.Requires {
			if err := validateRequires([]string{r}); err != nil {
				d.Errorf(fmt.Sprintf("%s.requires[%d]", field, i), "%q: not \"NAME [CONSTRAINT]\"", r)
			}
		}
		if dist.Build == "" {
			dist.Build = schedule.Always
		}
		// Metadata that dist build would refuse (channel names, target),
		// refused here by field; the fields already found wrong above
		// stand in with good values, so that what is left is not hidden
		// behind them and they are not said twice.
		b := distribution.BuildOptions{Name: name, Revision: 1, Version: dist.Version, Channels: dist.Channels, Target: dist.Target, Requires: dist.Requires}
		if distribution.ValidName("distribution name", name) != nil {
			b.Name = "stand-in"
			if b.Target == "" {
				b.Target = b.Name
			}
		}
		if _, err := distribution.ParseVersion(b.Version); err != nil {
			b.Version = "1.0.0"
		}
		if len(b.Channels) == 0 {
			b.Channels = []string{"stand-in"}
		}
		if validateRequires(b.Requires) != nil {
			b.Requires = nil
		}
		if err := b.Validate(); err != nil {
			d.Errorf(field, "%v", err)
		}
	}
}

// names returns the distributions' names, sorted.
func (c *publisherFile) names() []string {
	var names []string
	for name := range c.Distributions {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func newPublisherCommand(_ *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "publisher", Short: "Daemon that rebuilds distributions in build windows and pushes them"}
	cmd.AddCommand(newPublisherRunCommand())
	return cmd
}

func newPublisherRunCommand() *cobra.Command {
	var opts daemonOptions
	cmd := &cobra.Command{
		Use:   "run --config publisher.yaml",
		Short: "Run the publisher daemon until SIGTERM: rebuild in build windows, push what changed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPublisher(cmd.Context(), opts, cmd.ErrOrStderr())
		},
	}
	opts.AddFlags(cmd)
	return cmd
}

func runPublisher(ctx context.Context, opts daemonOptions, stderr io.Writer) error {
	if err := requireFlag("config", opts.config); err != nil {
		return err
	}
	log, err := opts.log.logger(stderr)
	if err != nil {
		return err
	}
	file, err := loadPublisherConfig(opts.config)
	if err != nil {
		return err
	}
	// The schedules come first: a config naming an unknown one is a usage
	// error, found before any key or store is touched.
	required := map[string]string{}
	for _, name := range file.names() {
		if build := file.Distributions[name].Build; required[build] == "" {
			required[build] = "distributions." + name + ".build"
		}
	}
	// loadSchedules needs only the file's path and its schedule file.
	n := &node{file: &nodeFile{Name: file.Name, DataDir: file.DataDir, TLS: file.TLS, StatusListen: file.StatusListen,
		StatusTLS: file.StatusTLS, StatusMetricsOpen: file.StatusMetricsOpen, Schedules: file.Schedules, path: file.path}, log: log,
		hup: make(chan os.Signal, 1)}
	signal.Notify(n.hup, syscall.SIGHUP) // from here on SIGHUP reloads, never stops
	if n.schedules, err = loadSchedules(n.file, required); err != nil {
		return err
	}
	key, err := pki.LoadSigningKey(file.SignKey) // a public key is a problem of checkPublisher's
	if err != nil {
		return fmt.Errorf("%s: sign_key: %w", file.path, err)
	}
	cred, err := loadCredentials(file.path, file.Name, file.TLS, pki.RolePublisher)
	if err != nil {
		return err
	}
	// Not n.cred: the publisher does not renew its certificate itself;
	// status_tls serves with it.
	n.statusCred = cred
	qcfg := transport.DefaultQUICConfig()
	qcfg.Logger = log
	parents := transport.DefaultParentsConfig() // the link's parent setting does not apply
	file.Link.apply(&qcfg, &parents)

	cfg := publisher.DefaultConfig()
	cfg.Name, cfg.Agent, cfg.Distributor = file.Name, buildVersion().Version, file.Distributor
	cfg.Schedules, cfg.KeepRevisions = n.schedules, *file.KeepRevisions
	cfg.Self = cred.Self
	for _, name := range file.names() {
		d := file.Distributions[name]
		cfg.Distributions = append(cfg.Distributions, publisher.Distribution{Name: name, From: d.From, Version: d.Version,
			Channels: d.Channels, Target: d.Target, Requires: d.Requires, Build: d.Build})
	}
	if err := cfg.Validate(); err != nil {
		return usageError{fmt.Errorf("%s: %w", file.path, err)}
	}

	if err := os.MkdirAll(file.DataDir, 0o700); err != nil {
		return fmt.Errorf("%s: data_dir: %w", file.path, err)
	}
	st, err := store.Open(file.Store, store.Options{Create: true, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	dial := func(ctx context.Context, addr string) (transport.Session, error) {
		return transport.Dial(ctx, addr, cred, pki.RoleDistributor, qcfg)
	}
	d, err := publisher.New(cfg, st, key, dial, log)
	if err != nil {
		return err
	}
	return n.serve(ctx, "publisher", daemonAdmin{
		status: func() any { return d.Status() },
		health: func() error {
			_, err := st.Usage()
			return err
		},
		registry: d.Registry(),
		actions:  map[string]admin.Action{},
	}, d.Run)
}
