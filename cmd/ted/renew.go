package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"ted/enroll"
	"ted/pki"
	"ted/transport"
)

// Renewal of a node's own certificate (docs/enroll.md): every daemon with
// credentials looks at its certificate at start and every
// renewCheckEvery; once it is due (tls.renew_before ahead of its expiry)
// it asks its parents, in order, for a new one for a new key, or signs it
// itself if it holds the CA (enroll.ca_dir), writes the key and the
// certificate over tls.key and tls.cert, and presents them from its next
// handshake on, without a restart.

// renewCheckEvery is how often a daemon looks at its certificate: a
// failed renewal is tried again this often, and a certificate renewed by
// ted enroll --renew while the daemon runs is taken up within it.
// renewJitter spreads a fleet's renewals, which would otherwise come in
// step after a CA-wide reissue.
const (
	renewCheckEvery = 10 * time.Minute
	renewJitter     = time.Minute
)

// renewer renews one node's certificate.
type renewer struct {
	config  string // the config file, for messages
	tls     tlsFiles
	cred    *transport.Credentials
	parents []string
	// local, if set, signs here: this distributor holds the CA.
	local *enroll.Handler
	quic  transport.QUICConfig
	log   *slog.Logger
	// clampWarned is set once the warning that tls.renew_before is more
	// than half the certificate's lifetime is logged.
	clampWarned bool
}

// renewer is the node's renewer.
func (n *node) renewer() *renewer {
	return &renewer{config: n.file.path, tls: n.file.TLS, cred: n.cred, parents: n.file.Parents, local: n.signer, quic: n.quic, log: n.log}
}

// renewLoop renews the node's certificate whenever it is due, until ctx
// ends. A failure is logged as a warning and tried again later.
func (n *node) renewLoop(ctx context.Context) {
	r := n.renewer()
	for {
		r.check(ctx)
		wait := renewCheckEvery + rand.N(renewJitter)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// check takes up a newer certificate found on disk, then renews the one
// in force if it is due.
func (r *renewer) check(ctx context.Context) {
	r.takeUpFiles()
	self := r.cred.Self()
	leaf := r.current()
	if leaf == nil {
		return
	}
	before, clamped := enroll.RenewBefore(leaf.NotBefore, leaf.NotAfter, r.tls.RenewBefore)
	if clamped && !r.clampWarned {
		r.clampWarned = true
		r.log.Warn("tls.renew_before is more than half the certificate's lifetime: renewing at half its lifetime instead",
			"config", r.config, "renew_before", r.tls.RenewBefore.String(), "lifetime", leaf.NotAfter.Sub(leaf.NotBefore).String(),
			"renews_before_expiry", before.String())
	}
	at := leaf.NotAfter.Add(-before)
	if time.Now().Before(at) {
		return
	}
	r.log.Info("certificate due for renewal", "name", self.Name, "serial", self.Serial, "expires", self.NotAfter.UTC(), "due", at.UTC())
	if _, _, err := r.renew(ctx); err != nil {
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("certificate renewal failed; will try again", "name", self.Name, "expires", self.NotAfter.UTC(),
			"retry_in", renewCheckEvery.String(), "err", err)
	}
}

// current is the certificate in force.
func (r *renewer) current() *x509.Certificate {
	cert := r.cred.Certificate()
	if cert.Leaf != nil {
		return cert.Leaf
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}

// takeUpFiles puts in force the certificate and key on disk if they are
// newer than those in force: a renewal by ted enroll --renew.
func (r *renewer) takeUpFiles() {
	onDisk, err := pki.LoadCertificate(r.tls.Cert)
	if err != nil {
		return
	}
	self := r.cred.Self()
	if !onDisk.NotAfter.After(self.NotAfter) || pki.SerialHex(onDisk) == self.Serial {
		return
	}
	if err := r.cred.ReplaceFiles(r.tls.Cert, r.tls.Key); err != nil {
		r.log.Warn("newer certificate on disk not taken up", "cert", r.tls.Cert, "err", err)
		return
	}
	r.log.Info("renewed certificate taken up from disk", "name", self.Name, "old_serial", self.Serial, "old_expires", self.NotAfter.UTC(),
		"serial", pki.SerialHex(onDisk), "expires", onDisk.NotAfter.UTC())
}

// renew gets a new certificate for a new key, writes both over tls.key and
// tls.cert and puts them in force. It returns the old and new
// certificates.
func (r *renewer) renew(ctx context.Context) (old, renewed *x509.Certificate, err error) {
	old = r.current()
	key, keyPEM, err := enroll.NewKey()
	if err != nil {
		return nil, nil, err
	}
	// The new key is on disk before the request leaves: once the CA has
	// signed, the old certificate may not renew again (see enroll.Renewal).
	files := enroll.Renewal{Cert: r.tls.Cert, Key: r.tls.Key}
	if err := files.StageKey(keyPEM); err != nil {
		return nil, nil, err
	}
	if r.local != nil {
		renewed, err = r.local.RenewHere(r.cred, key)
	} else {
		renewed, err = r.ask(ctx, key)
	}
	if err != nil {
		files.DiscardKey()
		return nil, nil, err
	}
	inForce := r.cred.Replace(tls.Certificate{Certificate: [][]byte{renewed.Raw}, PrivateKey: key, Leaf: renewed})
	if err := files.Commit(renewed); err != nil {
		if inForce == nil {
			return nil, nil, fmt.Errorf("renewed certificate %s is in force but not written: %w", pki.SerialHex(renewed), err)
		}
		return nil, nil, fmt.Errorf("renewed certificate %s not written: %w", pki.SerialHex(renewed), err)
	}
	if inForce != nil {
		return nil, nil, fmt.Errorf("renewed certificate written to %s but not put in force: %w", r.tls.Cert, inForce)
	}
	r.log.Info("certificate renewed", "name", renewed.Subject.CommonName, "old_serial", pki.SerialHex(old), "old_expires", old.NotAfter.UTC(),
		"serial", pki.SerialHex(renewed), "expires", renewed.NotAfter.UTC(), "cert", r.tls.Cert)
	return old, renewed, nil
}

// ask asks each parent in turn until one renews.
func (r *renewer) ask(ctx context.Context, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	if len(r.parents) == 0 {
		return nil, fmt.Errorf("%s: no parents to renew through, and no enroll.ca_dir: renew with ted pki issue on the CA host", r.config)
	}
	cas, err := pki.LoadCACertificates(r.tls.CA)
	if err != nil {
		return nil, fmt.Errorf("%s: tls.ca: %w", r.config, err)
	}
	var errs []error
	for _, p := range r.parents {
		cert, err := enroll.Renew(ctx, p, r.cred, cas, key, r.quic)
		if err == nil {
			return cert, nil
		}
		errs = append(errs, fmt.Errorf("parent %s: %w", p, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// recoverRenewal finishes a renewal of the node's certificate that a
// crash interrupted (enroll.Renewal.Recover), before the files are loaded,
// and logs what it did.
func recoverRenewal(files tlsFiles, log *slog.Logger) error {
	if files.Cert == "" || files.Key == "" {
		return nil
	}
	done, err := enroll.Renewal{Cert: files.Cert, Key: files.Key}.Recover()
	if err != nil {
		return err
	}
	if done != "" {
		log.Warn(done, "cert", files.Cert, "key", files.Key)
	}
	return nil
}

// ted enroll --renew --config FILE

type renewResult struct {
	Name       string    `json:"name"`
	OldSerial  string    `json:"old_serial"`
	OldExpires time.Time `json:"old_expires"`
	Serial     string    `json:"serial"`
	Expires    time.Time `json:"expires"`
	Cert       string    `json:"cert"`
	Key        string    `json:"key"`
}

func runRenewNow(ctx context.Context, g *globalOptions, opts enrollOptions, out, stderr io.Writer) error {
	if err := requireFlag("config", opts.config); err != nil {
		return err
	}
	if opts.token != "" || opts.tokenFile != "" || opts.to != "" || opts.out != "" || opts.fingerprint != "" || opts.name != "" {
		return usageError{errors.New("--renew takes --config only: the node renews through its parents with the certificate it has")}
	}
	data, err := os.ReadFile(opts.config)
	if err != nil {
		return usageError{fmt.Errorf("config: %w", err)}
	}
	kind, err := guessKind(opts.config, data)
	if err != nil {
		return usageError{fmt.Errorf("%s: %w", opts.config, err)}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r := &renewer{config: opts.config, quic: transport.DefaultQUICConfig(), log: log}
	r.quic.Logger = log
	var name string
	var role pki.Role
	switch kind {
	case "distributor":
		f, err := loadDistributorConfig(opts.config)
		if err != nil {
			return err
		}
		name, role, r.tls, r.parents = f.Name, pki.RoleDistributor, f.TLS, f.Parents
		f.Link.apply(&r.quic, new(transport.ParentsConfig))
		if r.cred, err = loadCredentials(opts.config, name, r.tls, role); err != nil {
			return err
		}
		if f.Enroll != nil {
			if r.local, err = newEnrollHandler(f, r.cred, nil, log); err != nil {
				return err
			}
		}
	case "subscriber":
		f, err := loadSubscriberConfig(opts.config)
		if err != nil {
			return err
		}
		name, role, r.tls, r.parents = f.Name, pki.RoleSubscriber, f.TLS, f.Parents
		f.Link.apply(&r.quic, new(transport.ParentsConfig))
	case "publisher":
		f, err := loadPublisherConfig(opts.config)
		if err != nil {
			return err
		}
		name, role, r.tls, r.parents = f.Name, pki.RolePublisher, f.TLS, []string{f.Distributor}
		f.Link.apply(&r.quic, new(transport.ParentsConfig))
	default:
		return usageError{fmt.Errorf("%s: a %s file has no certificate to renew", opts.config, kind)}
	}
	if r.cred == nil {
		if r.cred, err = loadCredentials(opts.config, name, r.tls, role); err != nil {
			return err
		}
	}
	old, renewed, err := r.renew(ctx)
	if err != nil {
		return fmt.Errorf("renew %s: %w", name, err)
	}
	res := renewResult{Name: name, OldSerial: pki.SerialHex(old), OldExpires: old.NotAfter.UTC(), Serial: pki.SerialHex(renewed),
		Expires: renewed.NotAfter.UTC(), Cert: r.tls.Cert, Key: r.tls.Key}
	return printResult(out, g.json, res, func(p *printer) {
		p.linef("renewed %s: serial %s (expires %s) replaced by %s (expires %s)", name, res.OldSerial,
			res.OldExpires.Format(time.RFC3339), res.Serial, res.Expires.Format(time.RFC3339))
		p.linef("wrote %s and %s; a running daemon takes them up within %v", res.Key, res.Cert, renewCheckEvery+renewJitter)
	})
}

// newEnrollHandler builds a distributor's enrollment handler from its
// config: it signs with enroll.ca_dir if set, and passes requests on to
// its parents otherwise. cas are the certificates of tls.ca (nil: read
// them).
func newEnrollHandler(f *distributorFile, cred *transport.Credentials, cas []*x509.Certificate, log *slog.Logger) (*enroll.Handler, error) {
	if cas == nil {
		var err error
		if cas, err = pki.LoadCACertificates(f.TLS.CA); err != nil {
			return nil, fmt.Errorf("%s: tls.ca: %w", f.path, err)
		}
	}
	cfg := enroll.Config{Cred: cred, CACerts: cas, Log: log, QUIC: transport.DefaultQUICConfig()}
	cfg.QUIC.Logger = log
	f.Link.apply(&cfg.QUIC, new(transport.ParentsConfig))
	parents := f.Parents
	cfg.Parents = func() []string { return parents }
	if f.Enroll != nil {
		ca, err := pki.LoadCA(f.Enroll.CADir)
		if err != nil {
			return nil, fmt.Errorf("%s: enroll.ca_dir: %w", f.path, err)
		}
		// Certificates of another CA would be refused by the whole fleet.
		if !slices.ContainsFunc(cas, ca.Cert.Equal) {
			return nil, usageError{fmt.Errorf("%s: enroll.ca_dir: %s/ca.crt (%s) is not a CA of tls.ca %s", f.path, f.Enroll.CADir, pki.Fingerprint(ca.Cert), f.TLS.CA)}
		}
		cfg.CA = ca
	}
	return enroll.New(cfg)
}
