package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"time"

	"ted/pki"
	"ted/transport"
)

// configWatchEvery is how often a daemon looks whether its config file or
// its revocation list changed: a stat of each. Shorter than the schedule
// file's, since a revocation must take effect within seconds.
const configWatchEvery = 2 * time.Second

// reloader reloads a daemon's config file and revocation list while it
// runs (docs/membership.md).
type reloader interface {
	// reload reads the config file again and puts in force what may
	// change live; why says what asked, for the log. It reports whether
	// the file was good and is in force, its list with it.
	reload(why string) bool
	// reloadRevocations reads the revocation list file (tls.crl) again.
	reloadRevocations()
	// files are the config file and the revocation list file in force
	// ("" if none).
	files() (config, crl string)
}

// watchFiles calls r when the config file or the revocation list file
// changes (size or modification time), looking every interval, until ctx
// ends.
func watchFiles(ctx context.Context, every time.Duration, r reloader) {
	newFileWatch(r).run(ctx, every)
}

// fileStamp tells whether a file changed since it was looked at.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(p string) fileStamp {
	if p == "" {
		return fileStamp{}
	}
	info, err := os.Stat(p)
	if err != nil {
		return fileStamp{} // gone: its return is a change
	}
	return fileStamp{info.ModTime(), info.Size()}
}

// fileWatch is the state of watchFiles: the files as they were when it
// last looked.
type fileWatch struct {
	r           reloader
	config, crl string
	cs, rs      fileStamp
}

// newFileWatch looks at the files now: a change from here on is seen.
func newFileWatch(r reloader) *fileWatch {
	w := &fileWatch{r: r}
	w.config, w.crl = r.files()
	w.cs, w.rs = stampOf(w.config), stampOf(w.crl)
	return w
}

func (w *fileWatch) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.look()
	}
}

// look reloads what changed since it last looked. Each file is looked at
// on its own: a list written in the same tick as a bad config edit must
// still be loaded, since the failed reload loads nothing.
func (w *fileWatch) look() {
	rs := stampOf(w.crl)
	if now := stampOf(w.config); now != w.cs {
		w.cs = now
		if w.r.reload("config file changed") {
			// A good reload loaded the list of the file it names, which
			// may be another one.
			var crl string
			w.config, crl = w.r.files()
			if crl != w.crl {
				w.crl, w.rs = crl, stampOf(crl)
			} else {
				w.rs = rs
			}
			return
		}
	}
	if rs != w.rs {
		w.rs = rs
		w.r.reloadRevocations()
	}
}

// liveReload is what a daemon's config file says that can change live,
// checked and ready to put in force.
type liveReload struct {
	// crl is the revocation list file it names, and revocations that
	// list, loaded and checked (nil if none).
	crl         string
	revocations *pki.Revocations
	// restart are the keys that changed but take a restart.
	restart []string
	// apply puts the rest in force and says what changed.
	apply func() ([]string, error)
}

// configReloader reloads one daemon's config file: load reads and checks
// it as `ted config check` would, and returns what it changes. A bad file
// changes nothing; the error is logged and the running config stays.
type configReloader struct {
	path   string
	log    *slog.Logger
	keeper *transport.RevocationKeeper
	load   func() (*liveReload, error)

	mu  sync.Mutex
	crl string
}

func (r *configReloader) files() (string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.path, r.crl
}

func (r *configReloader) reload(why string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	log := r.log.With("file", r.path, "why", why)
	live, err := r.load()
	if err != nil {
		log.Error("config not reloaded; the running config stays", "err", err)
		return false
	}
	changes, err := live.apply()
	if err != nil {
		log.Error("config not reloaded; the running config stays", "err", err)
		return false
	}
	if len(live.restart) > 0 {
		log.Warn("config keys changed that take a restart; they keep their running values until then", "keys", live.restart)
	}
	if live.crl != r.crl {
		changes = append(changes, "tls.crl: "+orNone(live.crl))
		r.crl = live.crl
	}
	if live.revocations != nil && r.keeper.Update(live.revocations) {
		changes = append(changes, "revocation list "+live.revocations.Number.String())
	}
	if len(changes) == 0 {
		log.Info("config reloaded: nothing that changes live was changed")
		return true
	}
	log.Info("config reloaded", "changes", changes)
	return true
}

func (r *configReloader) reloadRevocations() {
	_, crl := r.files()
	if crl == "" {
		return
	}
	changed, err := r.keeper.LoadFile(crl)
	cur := r.keeper.Current()
	switch {
	case err != nil:
		r.log.Error("revocation list not reloaded; the list in force stays", "file", crl, "err", err)
	case changed:
		r.log.Info("revocation list reloaded", "file", crl, "number", cur.Number.String(), "revoked", len(cur.Serials()))
	default:
		r.log.Info("revocation list file changed but is not newer than the list in force; ignored", "file", crl, "in_force", cur.Number.String())
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// loadRevocationList loads the list a config names (crl, "" for none)
// against the CA, for field tls.crl of the config file.
func loadRevocationList(configFile, crl string, cas []*x509.Certificate) (*pki.Revocations, error) {
	if crl == "" {
		return nil, nil
	}
	r, err := pki.LoadRevocations(crl, cas)
	if err != nil {
		return nil, configError(configFile, "tls.crl", "%v", err)
	}
	return r, nil
}

// newRevocationKeeper loads the CA certificates and the node's revocation
// list: tls.crl if set (an error if it cannot be read) and the list kept in
// data_dir from a parent, the newer of the two.
func newRevocationKeeper(file *nodeFile, cred *transport.Credentials, log *slog.Logger) (*transport.RevocationKeeper, []*x509.Certificate, error) {
	cas, err := pki.LoadCACertificates(file.TLS.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: tls.ca: %w", file.path, err)
	}
	k := transport.NewRevocationKeeper(cas, file.DataDir+string(os.PathSeparator)+transport.KeptRevocationsFile, cred)
	if err := k.Load(file.TLS.CRL, log); err != nil {
		return nil, nil, configError(file.path, "tls.crl", "%v", err)
	}
	if r := k.Current(); r != nil {
		log.Info("revocation list in force", "number", r.Number.String(), "revoked", len(r.Serials()))
	}
	return k, cas, nil
}

// restartKeys names the keys of the common config fields that differ
// between the config a daemon started with and a new one: they take a
// restart.
func restartKeys(started, now *nodeFile) []string {
	var keys []string
	for _, f := range []struct {
		key  string
		a, b any
	}{
		{"name", started.Name, now.Name},
		{"data_dir", started.DataDir, now.DataDir},
		{"tls.ca", started.TLS.CA, now.TLS.CA},
		{"tls.cert", started.TLS.Cert, now.TLS.Cert},
		{"tls.key", started.TLS.Key, now.TLS.Key},
		{"tls.renew_before", started.TLS.RenewBefore, now.TLS.RenewBefore},
		{"parents", started.Parents, now.Parents},
		{"schedules", started.Schedules, now.Schedules},
		{"keep_revisions", *started.KeepRevisions, *now.KeepRevisions},
		{"min_free_disk", started.minFree, now.minFree},
		{"status_listen", started.StatusListen, now.StatusListen},
		{"status_tls", started.StatusTLS, now.StatusTLS},
		{"status_metrics_open", started.StatusMetricsOpen, now.StatusMetricsOpen},
		{"link", started.Link, now.Link},
	} {
		if !reflect.DeepEqual(f.a, f.b) {
			keys = append(keys, f.key)
		}
	}
	return keys
}
