package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"ted/admin"
	"ted/distribution"
	"ted/enroll"
	"ted/pki"
	"ted/schedule"
	"ted/store"
	"ted/transport"
)

// logOptions are the logging flags of the daemons.
type logOptions struct {
	format string
	level  string
}

func (o *logOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.format, "log-format", "text", "log format: text or json")
	f.StringVar(&o.level, "log-level", "info", "log level: debug, info, warn or error")
}

// logger returns the slog logger the flags ask for, writing to w.
func (o *logOptions) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", o.level)}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(o.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", o.format)}
}

// node is what every daemon sets up from its config before it runs.
type node struct {
	file  *nodeFile
	log   *slog.Logger
	trust *distribution.Trust
	cred  *transport.Credentials
	quic  transport.QUICConfig
	// parents is the parent list with its link settings.
	parents transport.ParentsConfig
	store   *store.Badger
	// schedules, if set, is reloaded on SIGHUP and when its file changes.
	schedules *schedule.Source
	// hup receives SIGHUP from setUpNode on, long before the admin socket
	// exists (which operators and scripts take as the sign the daemon is
	// up): SIGHUP reloads the schedule file and never stops the daemon, as
	// its default action would.
	hup chan os.Signal
	// reloader, if set, reloads the daemon's config file and revocation
	// list on SIGHUP (with the schedule file) and when they change.
	reloader reloader
	// signer, on a distributor with enroll.ca_dir, renews this node's own
	// certificate here; otherwise it renews through its parents (renew.go).
	signer *enroll.Handler
	// statusCred, if cred is nil, are the credentials status_tls serves
	// with (the publisher's, which it does not renew itself).
	statusCred *transport.Credentials
}

// scheduleWatchEvery is how often a daemon looks whether its schedule file
// changed: a stat, so it costs nothing, and an edit takes effect within it.
const scheduleWatchEvery = 5 * time.Second

// setUpNode loads a daemon's keys and certificate, creates its data
// directory (0700: it holds the admin socket and the store) and opens its
// store. The caller closes n.store.
func setUpNode(file *nodeFile, role pki.Role, log *slog.Logger) (*node, error) {
	return setUpNodeStore(file, role, log, true)
}

// setUpNodeStore is setUpNode; without openStore the node has no store of
// its own (a cluster node opens the cluster's while it is active).
func setUpNodeStore(file *nodeFile, role pki.Role, log *slog.Logger, openStore bool) (*node, error) {
	keys, err := pki.LoadPublicKeys(file.Trust)
	if err != nil {
		return nil, fmt.Errorf("%s: trust: %w", file.path, err)
	}
	cred, err := loadCredentials(file.path, file.Name, file.TLS, role)
	if err != nil {
		return nil, err
	}
	n := &node{file: file, log: log, trust: distribution.NewTrust(keys...), cred: cred,
		quic: transport.DefaultQUICConfig(), parents: transport.DefaultParentsConfig(), hup: make(chan os.Signal, 1)}
	signal.Notify(n.hup, syscall.SIGHUP)
	n.quic.Logger = log
	n.parents.Addrs = file.Parents
	n.parents.Watch = transport.NewParentWatch() // for health, status and metrics
	file.Link.apply(&n.quic, &n.parents)
	if err := os.MkdirAll(file.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: data_dir: %w", file.path, err)
	}
	if !openStore {
		return n, nil
	}
	// The store's lock keeps a second daemon off this data_dir before it
	// touches anything.
	n.store, err = store.Open(filepath.Join(file.DataDir, "store"), store.Options{Create: true, Logger: log})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// reloadSchedules reloads the schedule file on SIGHUP; a bad file keeps the
// schedules in use, with an error in the log.
func (n *node) reloadSchedules() {
	if n.schedules == nil || n.file.Schedules == "" {
		n.log.Info("SIGHUP: no schedule file to reload")
		return
	}
	if err := n.schedules.Reload(); err != nil {
		n.log.Error("SIGHUP: schedule file not reloaded", "err", err)
		return
	}
	n.log.Info("SIGHUP: schedule file reloaded", "file", n.file.Schedules)
}

// dial dials a parent distributor.
func (n *node) dial(ctx context.Context, addr string) (transport.Session, error) {
	return transport.Dial(ctx, addr, n.cred, pki.RoleDistributor, n.quic)
}

// serve runs the daemon's admin socket and status address beside run
// until ctx ends (SIGTERM: a clean stop, nil) or either fails.
func (n *node) serve(ctx context.Context, kind string, a daemonAdmin, run func(ctx context.Context) error) error {
	if n.hup == nil {
		n.hup = make(chan os.Signal, 1)
		signal.Notify(n.hup, syscall.SIGHUP)
	}
	hup := n.hup
	defer signal.Stop(hup)
	if a.statusTLS == nil {
		st, err := n.statusTLS()
		if err != nil {
			return err
		}
		a.statusTLS = st
	}
	srv, err := startAdmin(n.file.DataDir, n.file.StatusListen, a, n.log)
	if err != nil {
		return bindError(n.file.path, "status_listen", n.file.StatusListen, "tcp", err)
	}
	defer srv.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx) })
	g.Go(func() error { return run(gctx) })
	g.Go(func() error {
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-hup:
				n.reloadSchedules()
				if n.reloader != nil {
					n.reloader.reload("SIGHUP")
				}
			}
		}
	})
	if n.schedules != nil {
		g.Go(func() error {
			n.schedules.Watch(gctx, scheduleWatchEvery, schedule.SystemClock(), n.log)
			return nil
		})
	}
	if n.reloader != nil {
		g.Go(func() error {
			watchFiles(gctx, configWatchEvery, n.reloader)
			return nil
		})
	}
	if n.cred != nil {
		g.Go(func() error {
			n.renewLoop(gctx)
			return nil
		})
	}
	err = g.Wait()
	n.log.Info(kind+" stopped", "node", n.file.Name)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// loadCredentials loads a node's TLS files and checks that the
// certificate's name is the configured name.
func loadCredentials(configFile, name string, files tlsFiles, role pki.Role) (*transport.Credentials, error) {
	if err := recoverRenewal(files, slog.Default()); err != nil {
		return nil, fmt.Errorf("%s: tls: %w", configFile, err)
	}
	cred, err := transport.LoadCredentials(files.CA, files.Cert, files.Key, role)
	if err != nil {
		return nil, fmt.Errorf("%s: tls: %w", configFile, err)
	}
	if got := cred.Self().Name; got != name {
		return nil, usageError{fmt.Errorf("%s: name %q does not match the certificate %s, issued to %q", configFile, name, files.Cert, got)}
	}
	return cred, nil
}

// daemonAdmin is what a daemon shows on its admin socket and status
// address.
type daemonAdmin struct {
	status   func() any
	health   func() error
	registry *prometheus.Registry
	views    map[string]admin.Action
	actions  map[string]admin.Action
	// metrics, if set, is gathered instead of registry (metrics.go).
	metrics prometheus.Gatherer
	// pages is the web console (admin.Endpoints.Pages); nil serves 404.
	pages http.Handler
	// statusTLS, if set, serves the status address over HTTPS to
	// operators; node.serve sets it from status_tls.
	statusTLS *admin.StatusTLS
}

// statusTLS is how status_tls serves the status address: with the node's
// certificate in force (a renewed one from the next handshake on), to
// clients whose certificate chains to tls.ca, has role operator and is
// not revoked by the list in force. Nil without status_tls.
func (n *node) statusTLS() (*admin.StatusTLS, error) {
	f := n.file
	if !f.StatusTLS || f.StatusListen == "" {
		return nil, nil
	}
	cred := n.cred
	if cred == nil {
		cred = n.statusCred
	}
	if cred == nil {
		return nil, fmt.Errorf("%s: status_tls: the node has no certificate to serve with", f.path)
	}
	pool, err := pki.LoadCertPool(f.TLS.CA)
	if err != nil {
		return nil, fmt.Errorf("%s: tls.ca: %w", f.path, err)
	}
	return &admin.StatusTLS{
		Certificate: func() (*tls.Certificate, error) {
			c := cred.Certificate()
			return &c, nil
		},
		CAs: pool,
		Revoked: func(c *x509.Certificate) error {
			return transport.RevokedError(cred.Revocations(), transport.Identity{Name: c.Subject.CommonName, Serial: pki.SerialHex(c)})
		},
		MetricsOpen: f.StatusMetricsOpen,
	}, nil
}

// startAdmin binds the admin socket and the status address, so a second
// daemon on the same data directory is refused before it does anything.
func startAdmin(dataDir, statusListen string, a daemonAdmin, log *slog.Logger) (*admin.Server, error) {
	cfg := admin.DefaultConfig()
	cfg.SocketPath = admin.SocketPath(dataDir)
	cfg.StatusListen = statusListen
	cfg.StatusTLS = a.statusTLS
	srv, err := admin.New(cfg, admin.Endpoints{
		Status:  func(context.Context) (any, error) { return a.status(), nil },
		Health:  func(context.Context) error { return a.health() },
		Views:   a.views,
		Metrics: a.gatherer(),
		Actions: a.actions,
		Pages:   a.pages,
	}, log)
	if err != nil {
		return nil, err
	}
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	return srv, nil
}

// daemonSocket returns the admin socket named by a config's data_dir.
func daemonSocket(dataDir string) string { return admin.SocketPath(dataDir) }

// bindError names the config file and the field of an address that could
// not be bound (network is "tcp", "udp", or "" for both), with the
// system's reason:
//
//	dist-1.yaml: listen 127.0.0.1:7400: address already in use
//
// An error that is not about binding the address is returned as it is.
//
// A port in use and an address not (yet) on this machine exit 1, not 2:
// both may pass (an old process still closing its socket, an interface
// that comes up late in boot), and a service manager should try again. A
// port or host that cannot be is a config error (exit 2).
func bindError(file, field, addr, network string, err error) error {
	cause, ok := bindCause(err, network)
	if !ok {
		return err
	}
	if cause == syscall.EADDRINUSE.Error() || cause == syscall.EADDRNOTAVAIL.Error() {
		return fmt.Errorf("%s: %s %s: %s", file, field, addr, cause)
	}
	return configError(file, field+" "+addr, "%s", cause)
}

// bindCause is why binding an address of network failed, in the system's
// words ("address already in use", "cannot assign requested address",
// "invalid port"), and false if err is no such failure: one about another
// socket (the admin socket beside the status address) or a file.
func bindCause(err error, network string) (string, bool) {
	var (
		op      *net.OpError
		addrErr *net.AddrError
		dnsErr  *net.DNSError
		errno   syscall.Errno
	)
	if errors.As(err, &op) {
		if !strings.HasPrefix(op.Net, network) {
			return "", false
		}
		switch {
		case errors.As(op.Err, &errno):
			return errno.Error(), true
		case errors.As(op.Err, &addrErr):
			return addrErr.Err, true
		case errors.As(op.Err, &dnsErr):
			return dnsErr.Err, true
		}
		return op.Err.Error(), true
	}
	switch {
	case errors.As(err, &addrErr): // resolving the address, before any socket
		return addrErr.Err, true
	case errors.As(err, &dnsErr):
		return dnsErr.Err, true
	case errors.As(err, &errno):
		return "", false // a file's error, not an address's
	}
	// memberlist formats its listener errors with %v: only the words
	// are left.
	for _, errno := range []syscall.Errno{syscall.EADDRINUSE, syscall.EADDRNOTAVAIL, syscall.EACCES} {
		if strings.HasSuffix(err.Error(), ": "+errno.Error()) {
			return errno.Error(), true
		}
	}
	return "", false
}
