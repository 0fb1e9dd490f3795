package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ted/distribution"
	"ted/pki"
)

func newPKICommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Create the CA, node certificates and manifest signing keys",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newPKIInitCommand(g), newPKIIssueCommand(g), newPKISigningKeyCommand(g))
	return cmd
}

// forceHint adds the flag to use to an error about an existing file.
func forceHint(err error) error {
	if errors.Is(err, pki.ErrExists) {
		return fmt.Errorf("%w (use --force to replace it)", err)
	}
	return err
}

// ted pki init

type pkiInitOptions struct {
	dir   string
	force bool
}

func (o *pkiInitOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.dir, "dir", "", "directory for ca.crt and ca.key (created if missing)")
	f.BoolVar(&o.force, "force", false, "overwrite an existing CA")
}

type pkiInitResult struct {
	CACert string `json:"ca_cert"`
	CAKey  string `json:"ca_key"`
}

func newPKIInitCommand(g *globalOptions) *cobra.Command {
	var opts pkiInitOptions
	cmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Create a certificate authority: DIR/ca.crt and DIR/ca.key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPKIInit(cmd.Context(), g, opts, cmd.OutOrStdout())
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

func runPKIInit(_ context.Context, g *globalOptions, opts pkiInitOptions, out io.Writer) error {
	if opts.dir == "" {
		return usageError{errors.New("--dir is required")}
	}
	files, err := pki.InitCA(opts.dir, opts.force)
	if err != nil {
		return forceHint(err)
	}
	res := pkiInitResult{CACert: files.Cert, CAKey: files.Key}
	return printResult(out, g.json, res, func(p *printer) {
		p.linef("wrote %s", res.CACert)
		p.linef("wrote %s", res.CAKey)
	})
}

// ted pki issue

type pkiIssueOptions struct {
	dir   string
	name  string
	role  string
	hosts []string
	force bool
}

func (o *pkiIssueOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.dir, "dir", "", "CA directory (from pki init); NAME.crt and NAME.key are written there")
	f.StringVar(&o.name, "name", "", "node name: the certificate's common name")
	f.StringVar(&o.role, "role", "", "node role: publisher, distributor or subscriber")
	f.StringArrayVar(&o.hosts, "host", nil, "DNS name or IP address the node is reached at (repeatable; default NAME)")
	f.BoolVar(&o.force, "force", false, "overwrite an existing certificate and key")
}

type pkiIssueResult struct {
	Name  string   `json:"name"`
	Role  pki.Role `json:"role"`
	Cert  string   `json:"cert"`
	Key   string   `json:"key"`
	Hosts []string `json:"hosts"`
}

func newPKIIssueCommand(g *globalOptions) *cobra.Command {
	var opts pkiIssueOptions
	cmd := &cobra.Command{
		Use:   "issue --dir DIR --name NAME --role ROLE [--host H]...",
		Short: "Issue a node certificate that binds its name and role: DIR/NAME.crt and DIR/NAME.key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPKIIssue(cmd.Context(), g, opts, cmd.OutOrStdout())
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

func runPKIIssue(_ context.Context, g *globalOptions, opts pkiIssueOptions, out io.Writer) error {
	switch {
	case opts.dir == "":
		return usageError{errors.New("--dir is required")}
	case opts.name == "":
		return usageError{errors.New("--name is required")}
	case opts.role == "":
		return usageError{errors.New("--role is required (publisher, distributor or subscriber)")}
	}
	if err := pki.ValidateName(opts.name); err != nil {
		return usageError{fmt.Errorf("--name: %w", err)}
	}
	role, err := pki.ParseRole(opts.role)
	if err != nil {
		return usageError{fmt.Errorf("--role: %w", err)}
	}
	for _, h := range opts.hosts {
		if h == "" {
			return usageError{errors.New("--host must not be empty")}
		}
	}
	files, err := pki.Issue(opts.dir, opts.name, role, opts.hosts, opts.force)
	if err != nil {
		return forceHint(err)
	}
	res := pkiIssueResult{Name: opts.name, Role: role, Cert: files.Cert, Key: files.Key, Hosts: files.Hosts}
	return printResult(out, g.json, res, func(p *printer) {
		p.linef("wrote %s", res.Cert)
		p.linef("wrote %s", res.Key)
	})
}

// ted pki signing-key

type pkiSigningKeyOptions struct {
	out   string
	force bool
}

func (o *pkiSigningKeyOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.out, "out", "", "private key file (0600); the public key goes to FILE.pub")
	f.BoolVar(&o.force, "force", false, "overwrite an existing key")
}

type pkiSigningKeyResult struct {
	Key       string `json:"key"`
	PublicKey string `json:"public_key"`
	KeyID     string `json:"key_id"`
}

func newPKISigningKeyCommand(g *globalOptions) *cobra.Command {
	var opts pkiSigningKeyOptions
	cmd := &cobra.Command{
		Use:   "signing-key --out FILE",
		Short: "Create an ed25519 key for signing manifests: FILE and FILE.pub",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPKISigningKey(cmd.Context(), g, opts, cmd.OutOrStdout())
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

func runPKISigningKey(_ context.Context, g *globalOptions, opts pkiSigningKeyOptions, out io.Writer) error {
	if opts.out == "" {
		return usageError{errors.New("--out is required")}
	}
	pub, err := pki.GenerateSigningKey(opts.out, opts.force)
	if err != nil {
		return forceHint(err)
	}
	res := pkiSigningKeyResult{Key: opts.out, PublicKey: opts.out + ".pub", KeyID: distribution.KeyID(pub)}
	return printResult(out, g.json, res, func(p *printer) {
		p.linef("wrote %s", res.Key)
		p.linef("wrote %s (key id %s)", res.PublicKey, res.KeyID)
	})
}
