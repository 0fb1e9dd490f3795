package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"ted/enroll"
	"ted/pki"
	"ted/transport"
)

// ted enroll

type enrollOptions struct {
	token       string
	tokenFile   string
	fingerprint string
	to          string
	out         string
	name        string
	force       bool
	renew       bool
	config      string
}

type enrollResult struct {
	Name          string    `json:"name"`
	Role          pki.Role  `json:"role"`
	Groups        []string  `json:"groups,omitempty"`
	Serial        string    `json:"serial"`
	Expires       time.Time `json:"expires"`
	Distributor   string    `json:"distributor"`
	CACert        string    `json:"ca_cert"`
	Cert          string    `json:"cert"`
	Key           string    `json:"key"`
	CAFingerprint string    `json:"ca_fingerprint"`
}

func newEnrollCommand(g *globalOptions) *cobra.Command {
	var opts enrollOptions
	cmd := &cobra.Command{
		Use:   "enroll --token T --ca-fingerprint F --to HOST:PORT --out DIR",
		Short: "Get this server's certificate from a distributor with a join token, or renew it",
		Long: `Enroll makes this server's key (it never leaves the server), asks the
distributor at --to for a certificate with a one-time join token made by
ted pki token, and writes DIR/NAME.key, DIR/NAME.crt and DIR/ca.crt. The
distributor's CA must have the fingerprint --ca-fingerprint (ted pki
fingerprint prints it on the CA host), or nothing is sent. Any distributor
will do: one that does not sign passes the request on to its parent.

NAME is --name, else the name the token was made for, else the short
host name.

With --renew --config FILE, renew the certificate of the node that FILE
configures now, through its parents, as the daemon does by itself before
the certificate expires (tls.renew_before); no token is needed.`,
		Example: `  ted enroll --token-file /root/join.token --ca-fingerprint "$(cat /root/ca.fingerprint)" --to dist-1.example.net:7400 --out /etc/ted
  ted enroll --renew --config /etc/ted/subscriber.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.renew {
				return runRenewNow(cmd.Context(), g, opts, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			return runEnroll(cmd.Context(), g, opts, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.token, "token", "", "the join token (ted pki token)")
	f.StringVar(&opts.tokenFile, "token-file", "", "read the join token from this file instead, which keeps it out of the process list")
	f.StringVar(&opts.fingerprint, "ca-fingerprint", "", "the CA certificate's SHA-256 fingerprint (ted pki fingerprint)")
	f.StringVar(&opts.to, "to", "", "a distributor's listen address, HOST:PORT")
	f.StringVar(&opts.out, "out", "", "directory for NAME.key, NAME.crt and ca.crt (created 0755 if missing)")
	f.StringVar(&opts.name, "name", "", "this node's name (default: the token's name, else the short host name)")
	f.BoolVar(&opts.force, "force", false, "overwrite existing files")
	f.BoolVar(&opts.renew, "renew", false, "renew the certificate of the node --config configures, now")
	f.StringVar(&opts.config, "config", "", "with --renew: the node's config file")
	addJSONFlag(cmd, g)
	return cmd
}

func runEnroll(ctx context.Context, g *globalOptions, opts enrollOptions, out io.Writer) error {
	if opts.config != "" {
		return usageError{errors.New("--config goes with --renew; to enroll, say --token, --ca-fingerprint, --to and --out")}
	}
	token, err := opts.readToken()
	if err != nil {
		return err
	}
	for _, f := range []struct{ name, value string }{{"ca-fingerprint", opts.fingerprint}, {"to", opts.to}, {"out", opts.out}} {
		if err := requireFlag(f.name, f.value); err != nil {
			return err
		}
	}
	if _, err := pki.ParseFingerprint(opts.fingerprint); err != nil {
		return usageError{fmt.Errorf("--ca-fingerprint: %w", err)}
	}
	if _, _, err := net.SplitHostPort(opts.to); err != nil {
		return usageError{fmt.Errorf("--to %q: %w", opts.to, err)}
	}
	if opts.name != "" {
		if err := pki.ValidateName(opts.name); err != nil {
			return usageError{fmt.Errorf("--name: %w", err)}
		}
	}
	qcfg := transport.DefaultQUICConfig()
	// A one-shot command: the socket buffers do not matter.
	qcfg.Logger = slog.New(slog.DiscardHandler)
	client, err := enroll.Dial(ctx, opts.to, opts.fingerprint, qcfg)
	if err != nil {
		return fmt.Errorf("enroll at %s: %w", opts.to, err)
	}
	defer client.Close()
	peer := client.Peer()
	// The token is checked here first, against the pinned CA: a token for
	// another fleet, a damaged or expired one is told without a round trip,
	// and its name, if it binds one, is known.
	tok, err := pki.VerifyToken(token, []*x509.Certificate{client.CA}, time.Now())
	if err != nil {
		return fmt.Errorf("enroll at %s: %w", peer, err)
	}
	name := opts.name
	switch {
	case name != "" && tok.Name != "" && name != tok.Name:
		return fmt.Errorf("enroll at %s: --name %q: %w: join token %s enrolls only %q", peer, name, enroll.ErrName, tok.ID, tok.Name)
	case name == "" && tok.Name != "":
		name = tok.Name
	case name == "":
		if name, err = shortHostName(); err != nil {
			return usageError{fmt.Errorf("no --name and the token names no node: %w", err)}
		}
	}
	// Absolute, as the config lines printed below must be.
	outDir, err := filepath.Abs(opts.out)
	if err != nil {
		return usageError{fmt.Errorf("--out: %w", err)}
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	keyPath, certPath, caPath := filepath.Join(outDir, name+".key"), filepath.Join(outDir, name+".crt"), filepath.Join(outDir, "ca.crt")
	// A ca.crt already there that holds this CA is kept: several nodes
	// (or a node enrolled again) may share one directory.
	writeCA := true
	if cas, err := pki.LoadCACertificates(caPath); err == nil && slices.ContainsFunc(cas, client.CA.Equal) {
		writeCA = false
	}
	if !opts.force {
		check := []string{keyPath, certPath}
		if writeCA {
			check = append(check, caPath)
		}
		for _, p := range check {
			if _, err := os.Lstat(p); err == nil {
				// Before the token is spent: it can still be used.
				return forceHint(fmt.Errorf("%s: %w", p, pki.ErrExists))
			}
		}
	}
	key, keyPEM, err := enroll.NewKey()
	if err != nil {
		return err
	}
	// The key is on disk before the request leaves, so that a certificate
	// whose token is spent is never without its key.
	staged, err := enroll.Stage(enroll.File{Path: keyPath, Data: keyPEM, Private: true})
	if err != nil {
		return err
	}
	spent := false
	defer func() {
		// Once the token is spent, the staged key is the only copy of the
		// key the certificate is for: it is never removed.
		if !spent {
			staged.Discard()
		}
	}()
	cert, err := client.Enroll(ctx, token, name, key)
	if err != nil {
		return fmt.Errorf("enroll %s at %s: %w", name, peer, err)
	}
	spent = true
	files := []enroll.File{{Path: certPath, Data: pki.EncodeCertificate(cert)}}
	if writeCA {
		files = append(files, enroll.File{Path: caPath, Data: pki.EncodeCertificate(client.CA)})
	}
	if err := staged.Add(files...); err != nil {
		return fmt.Errorf("enrolled %s (serial %s), but %w; the token is spent: the key is kept at %s, and the certificate is:\n%s",
			name, pki.SerialHex(cert), err, staged.Pending(), pki.EncodeCertificate(cert))
	}
	if err := staged.Commit(opts.force); err != nil {
		return fmt.Errorf("enrolled %s (serial %s), but %w; the token is spent, so nothing was removed: rename into place (mv) what is not yet there: %s",
			name, pki.SerialHex(cert), err, staged.Pending())
	}
	role, _ := pki.RoleOf(cert)
	groups, _ := pki.GroupsOf(cert)
	res := enrollResult{Name: name, Role: role, Groups: groups, Serial: pki.SerialHex(cert), Expires: cert.NotAfter.UTC(),
		Distributor: peer, CACert: caPath, Cert: certPath, Key: keyPath, CAFingerprint: pki.Fingerprint(client.CA)}
	return printResult(out, g.json, res, func(p *printer) {
		groupText := ""
		if len(groups) > 0 {
			groupText = ", groups " + strings.Join(groups, ",")
		}
		p.linef("enrolled %s (%s%s) through %s; certificate expires %s", name, role, groupText, peer, res.Expires.Format(time.RFC3339))
		p.linef("wrote %s (the private key; it never left this machine)", keyPath)
		p.linef("wrote %s", certPath)
		if writeCA {
			p.linef("wrote %s", caPath)
		} else {
			p.linef("kept %s, which holds this CA already", caPath)
		}
		p.linef("")
		p.linef("in the node's config:")
		p.linef("  name: %s", name)
		p.linef("  tls:")
		p.linef("    ca: %s", caPath)
		p.linef("    cert: %s", certPath)
		p.linef("    key: %s", keyPath)
	})
}

// readToken is --token or the content of --token-file.
func (o *enrollOptions) readToken() (string, error) {
	switch {
	case o.token != "" && o.tokenFile != "":
		return "", usageError{errors.New("--token and --token-file: say one")}
	case o.tokenFile != "":
		data, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return "", usageError{fmt.Errorf("--token-file: %w", err)}
		}
		return strings.TrimSpace(string(data)), nil
	case o.token == "":
		return "", usageError{errors.New("--token (or --token-file) is required: make one on the CA host with ted pki token")}
	}
	return o.token, nil
}

// shortHostName is the host name up to its first dot, if it is a valid
// node name.
func shortHostName() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", err
	}
	name, _, _ := strings.Cut(host, ".")
	if err := pki.ValidateName(name); err != nil {
		return "", fmt.Errorf("host name %q: %w; say --name", host, err)
	}
	return name, nil
}
