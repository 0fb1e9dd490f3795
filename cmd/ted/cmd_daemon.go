package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"ted/admin"
	"ted/pki"
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

// daemonDirs creates a daemon's data directory (0700: it holds the admin
// socket and the store) and opens its store.
func openDaemonStore(dataDir string, log *slog.Logger) (*store.Badger, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	return store.Open(filepath.Join(dataDir, "store"), store.Options{Create: true, Logger: log})
}

// loadCredentials loads a node's TLS files and checks that the
// certificate's name is the configured name.
func loadCredentials(configFile, name string, files tlsFiles, role pki.Role) (*transport.Credentials, error) {
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
	actions  map[string]admin.Action
}

// startAdmin binds the admin socket and the status address, so a second
// daemon on the same data directory is refused before it does anything.
func startAdmin(dataDir, statusListen string, a daemonAdmin, log *slog.Logger) (*admin.Server, error) {
	cfg := admin.DefaultConfig()
	cfg.SocketPath = admin.SocketPath(dataDir)
	cfg.StatusListen = statusListen
	srv, err := admin.New(cfg, admin.Endpoints{
		Status:  func(context.Context) (any, error) { return a.status(), nil },
		Health:  func(context.Context) error { return a.health() },
		Metrics: a.registry,
		Actions: a.actions,
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
