package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ted/distribution"
	"ted/pki"
	"ted/transport"
)

func newPKICommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Create the CA, node certificates, join tokens and manifest signing keys; revoke certificates",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newPKIInitCommand(g), newPKIIssueCommand(g), newPKITokenCommand(g), newPKIRevokeCommand(g),
		newPKIListCommand(g), newPKIFingerprintCommand(g), newPKISigningKeyCommand(g))
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
	CACert        string `json:"ca_cert"`
	CAKey         string `json:"ca_key"`
	CAFingerprint string `json:"ca_fingerprint"`
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
	cert, err := pki.LoadCertificate(files.Cert)
	if err != nil {
		return err
	}
	res := pkiInitResult{CACert: files.Cert, CAKey: files.Key, CAFingerprint: pki.Fingerprint(cert)}
	return printResult(out, g.json, res, func(p *printer) {
		p.linef("wrote %s", res.CACert)
		p.linef("wrote %s", res.CAKey)
		p.linef("CA fingerprint %s", res.CAFingerprint)
	})
}

// ted pki issue

type pkiIssueOptions struct {
	dir    string
	name   string
	role   string
	hosts  []string
	groups []string
	valid  time.Duration
	force  bool
}

func (o *pkiIssueOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.dir, "dir", "", "CA directory (from pki init); NAME.crt and NAME.key are written there")
	f.StringVar(&o.name, "name", "", "node name (or, for an operator, a person's or tool's name): the certificate's common name")
	f.StringVar(&o.role, "role", "", "role: publisher, distributor or subscriber for a node; operator for a person or tool that reads status endpoints over HTTPS")
	f.StringArrayVar(&o.hosts, "host", nil, "DNS name or IP address the node is reached at (repeatable; default NAME)")
	f.StringArrayVar(&o.groups, "group", nil, "group bound into the certificate, matched by group:NAME in channel configs (repeatable)")
	o.valid = defaultCertValidity
	f.Var((*daysFlag)(&o.valid), "valid", "how long the certificate is valid: a Go duration (12h) or whole days (90d); never beyond the CA")
	f.BoolVar(&o.force, "force", false, "overwrite an existing certificate and key")
}

// defaultCertValidity is what pki.Spec means by 0, spelled out so that the
// command reference shows it.
const defaultCertValidity = 730 * 24 * time.Hour

type pkiIssueResult struct {
	Name    string    `json:"name"`
	Role    pki.Role  `json:"role"`
	Groups  []string  `json:"groups,omitempty"`
	Cert    string    `json:"cert"`
	Key     string    `json:"key"`
	Hosts   []string  `json:"hosts"`
	Serial  string    `json:"serial"`
	Expires time.Time `json:"expires"`
}

func newPKIIssueCommand(g *globalOptions) *cobra.Command {
	var opts pkiIssueOptions
	cmd := &cobra.Command{
		Use:   "issue --dir DIR --name NAME --role ROLE [--group G]... [--host H]... [--valid D]",
		Short: "Issue a node certificate that binds its name, role and groups: DIR/NAME.crt and DIR/NAME.key",
		Long: `Issue a certificate signed by the CA of DIR that binds its name, role and
groups, and write it with its new key to DIR/NAME.crt and DIR/NAME.key.

The roles publisher, distributor and subscriber are for nodes: the daemon's
tls.cert. The role operator is for a person or a tool (a Prometheus
scraper, the web console's users) that reads a daemon's status endpoints
over HTTPS (status_tls: true): it opens no TED session, cannot be enrolled
with a join token and is not renewed by a node; issue a new one before it
expires.`,
		Example: `  ted pki issue --dir pki --name web-17 --role subscriber --group web
  ted pki issue --dir pki --name alice --role operator --valid 90d`,
		Args: cobra.NoArgs,
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
		return usageError{errors.New("--role is required (publisher, distributor, subscriber or operator)")}
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
	if err := pki.ValidateGroups(opts.groups); err != nil {
		return usageError{fmt.Errorf("--group: %w", err)}
	}
	if opts.valid < 0 {
		return usageError{fmt.Errorf("--valid %s: must be positive", (*daysFlag)(&opts.valid).String())}
	}
	spec := pki.Spec{Name: opts.name, Role: role, Groups: opts.groups, Hosts: opts.hosts, Validity: opts.valid}
	files, err := pki.IssueSpec(opts.dir, spec, opts.force)
	if err != nil {
		return forceHint(err)
	}
	cert, err := pki.LoadCertificate(files.Cert)
	if err != nil {
		return err
	}
	res := pkiIssueResult{Name: opts.name, Role: role, Groups: opts.groups, Cert: files.Cert, Key: files.Key, Hosts: files.Hosts,
		Serial: pki.SerialHex(cert), Expires: cert.NotAfter.UTC()}
	return printResult(out, g.json, res, func(p *printer) {
		p.linef("wrote %s", res.Cert)
		p.linef("wrote %s", res.Key)
		p.linef("serial %s, valid until %s", res.Serial, res.Expires.Format(time.RFC3339))
	})
}

// daysFlag is a positive duration flag that also takes whole days
// ("90d"), since certificates and tokens live for days and Go durations
// stop at hours.
type daysFlag time.Duration

func (d *daysFlag) String() string {
	v := time.Duration(*d)
	if v != 0 && v%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", v/(24*time.Hour))
	}
	return v.String()
}

func (d *daysFlag) Set(s string) error {
	var v time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days > 100*365 {
			return fmt.Errorf("invalid duration %q: want whole days such as 90d, or a Go duration such as 12h", s)
		}
		v = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if v, err = time.ParseDuration(s); err != nil {
			return fmt.Errorf("invalid duration %q: want whole days such as 90d, or a Go duration such as 12h", s)
		}
	}
	if v <= 0 {
		return fmt.Errorf("duration %q: must be positive", s)
	}
	*d = daysFlag(v)
	return nil
}

func (*daysFlag) Type() string { return "duration" }

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

// ted pki token

type pkiTokenOptions struct {
	dir    string
	role   string
	groups []string
	name   string
	ttl    time.Duration
}

func (o *pkiTokenOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.dir, "dir", "", "CA directory (from pki init); the token is logged in DIR/tokens.jsonl")
	f.StringVar(&o.role, "role", "", "role of the node it enrolls: publisher, distributor or subscriber")
	f.StringArrayVar(&o.groups, "group", nil, "group bound into the certificate it enrolls (repeatable)")
	f.StringVar(&o.name, "name", "", "the only node name it may enroll (default: any name)")
	o.ttl = pki.DefaultTokenTTL
	f.Var((*daysFlag)(&o.ttl), "ttl", "how long the token is valid, at most 30d")
}

type pkiTokenResult struct {
	Token         string    `json:"token"`
	ID            string    `json:"id"`
	Role          pki.Role  `json:"role"`
	Groups        []string  `json:"groups,omitempty"`
	Name          string    `json:"name,omitempty"`
	Expires       time.Time `json:"expires"`
	CAFingerprint string    `json:"ca_fingerprint"`
}

func newPKITokenCommand(g *globalOptions) *cobra.Command {
	var opts pkiTokenOptions
	cmd := &cobra.Command{
		Use:   "token --dir DIR --role ROLE [--group G]... [--name NAME] [--ttl D]",
		Short: "Make a one-time, expiring join token with which a new server enrolls (ted enroll)",
		Long: `Make a one-time, expiring join token with which a new server enrolls (ted enroll).

The token alone is printed on stdout, so that T=$(ted pki token ...) works;
its expiry and the CA fingerprint to give to ted enroll --ca-fingerprint go
to stderr. Anyone holding the token can enroll one node of its role and
groups until it is used or expires: hand it over as you would a password.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPKIToken(cmd.Context(), g, opts, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

func runPKIToken(_ context.Context, g *globalOptions, opts pkiTokenOptions, out, stderr io.Writer) error {
	switch {
	case opts.dir == "":
		return usageError{errors.New("--dir is required")}
	case opts.role == "":
		return usageError{errors.New("--role is required (publisher, distributor or subscriber)")}
	}
	role, err := pki.ParseRole(opts.role)
	if err != nil {
		return usageError{fmt.Errorf("--role: %w", err)}
	}
	if !role.IsNode() {
		return usageError{fmt.Errorf("--role %s: a join token enrolls a node (publisher, distributor or subscriber); an %s certificate is for a person or a tool: issue it with ted pki issue --role %s", role, role, role)}
	}
	if err := pki.ValidateGroups(opts.groups); err != nil {
		return usageError{fmt.Errorf("--group: %w", err)}
	}
	if opts.name != "" {
		if err := pki.ValidateName(opts.name); err != nil {
			return usageError{fmt.Errorf("--name: %w", err)}
		}
	}
	ttl := (*daysFlag)(&opts.ttl).String()
	if opts.ttl <= 0 {
		return usageError{fmt.Errorf("--ttl %s: must be positive", ttl)}
	}
	if opts.ttl > pki.MaxTokenTTL {
		return usageError{fmt.Errorf("--ttl %s: at most 30d, since anyone who copies a token can use it until it expires", ttl)}
	}
	ca, err := pki.LoadCA(opts.dir)
	if err != nil {
		return err
	}
	s, tok, err := ca.NewToken(pki.TokenSpec{Role: role, Groups: opts.groups, Name: opts.name, TTL: opts.ttl})
	if err != nil {
		return err
	}
	res := pkiTokenResult{Token: s, ID: tok.ID, Role: tok.Role, Groups: tok.Groups, Name: tok.Name,
		Expires: tok.Expires, CAFingerprint: pki.Fingerprint(ca.Cert)}
	if g.json {
		return printResult(out, true, res, nil)
	}
	if _, err := fmt.Fprintln(out, s); err != nil {
		return err
	}
	what := string(tok.Role)
	if len(tok.Groups) > 0 {
		what += " in groups " + strings.Join(tok.Groups, ", ")
	}
	if tok.Name != "" {
		what += " named " + tok.Name
	}
	p := &printer{w: stderr}
	p.linef("join token %s enrolls one %s; it expires at %s", tok.ID, what, tok.Expires.Format(time.RFC3339))
	p.linef("CA fingerprint (for ted enroll --ca-fingerprint): %s", res.CAFingerprint)
	return p.err
}

// ted pki revoke

type pkiRevokeOptions struct {
	dir string
}

func (o *pkiRevokeOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.dir, "dir", "", "CA directory (from pki init); the list is DIR/revoked.crl")
}

type pkiRevokedCert struct {
	Name   string `json:"name,omitempty"` // empty for a serial not in the index
	Serial string `json:"serial"`
	// Already is set for a certificate that an earlier list revoked.
	Already bool `json:"already,omitempty"`
}

type pkiRevokeResult struct {
	Revoked []pkiRevokedCert `json:"revoked"`
	CRL     string           `json:"crl"`
	Number  string           `json:"number"`
	// Count is how many certificates the new list revokes in all.
	Count int `json:"count"`
}

func newPKIRevokeCommand(g *globalOptions) *cobra.Command {
	var opts pkiRevokeOptions
	cmd := &cobra.Command{
		Use:   "revoke --dir DIR NAME|SERIAL...",
		Short: "Revoke certificates by node name or serial number: update the CA's signed revocation list",
		Long: `Revoke certificates by node name or serial number: update the CA's signed revocation list.

A NAME revokes every certificate issued to that name recorded in
DIR/issued.jsonl (by ted pki issue or by enrollment); a SERIAL, in hex as
ted pki list shows it, revokes that one certificate. The list, DIR/revoked.crl,
takes effect where the top distributor's tls.crl points at it: the
distributor reloads it when the file changes and passes it down the tree,
and a revoked node's sessions are closed within seconds.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPKIRevoke(cmd.Context(), g, opts, args, cmd.OutOrStdout())
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

func runPKIRevoke(_ context.Context, g *globalOptions, opts pkiRevokeOptions, args []string, out io.Writer) error {
	switch {
	case opts.dir == "":
		return usageError{errors.New("--dir is required")}
	case len(args) == 0:
		return usageError{errors.New("name a node or a certificate serial number to revoke")}
	}
	ca, err := pki.LoadCA(opts.dir)
	if err != nil {
		return err
	}
	// Under the CA directory's lock, which a signing distributor holds
	// from its checks to its record of a renewal: a certificate renewed
	// while this runs is either in the index read here, and revoked with
	// the name, or signed after the list is written, and refused.
	var targets []pkiRevokedCert
	var list *pki.Revocations
	err = ca.Locked(func() error {
		issued, err := ca.IssuedCertificates()
		if err != nil {
			return err
		}
		old, err := pki.LoadRevocations(ca.CRLPath(), []*x509.Certificate{ca.Cert})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		targets, err = revocationTargets(args, issued, filepath.Join(opts.dir, "issued.jsonl"))
		if err != nil {
			return err
		}
		serials := make([]string, len(targets))
		for i := range targets {
			serials[i] = targets[i].Serial
			targets[i].Already = old.RevokedSerial(targets[i].Serial)
		}
		list, err = ca.Revoke(serials)
		return err
	})
	if err != nil {
		return err
	}
	res := pkiRevokeResult{Revoked: targets, CRL: ca.CRLPath(), Number: list.Number.String(), Count: len(list.Serials())}
	return printResult(out, g.json, res, func(p *printer) {
		for _, t := range res.Revoked {
			what := "serial " + t.Serial
			if t.Name != "" {
				what = t.Name + " (serial " + t.Serial + ")"
			}
			if t.Already {
				p.linef("%s was already revoked", what)
			} else {
				p.linef("revoked %s", what)
			}
		}
		p.linef("wrote %s: revocation list number %s, %s revoked in all", res.CRL, res.Number, plural(res.Count, "certificate"))
		p.linef("it takes effect where the top distributor's tls.crl points at this file: the distributor reloads it when it changes and passes it down the tree")
	})
}

// minSerialDigits: a serial of fewer hexadecimal digits is not one TED
// made (128-bit random: fewer than 20 digits happens once in 2^52).
const minSerialDigits = 20

// revocationTargets resolves each argument of pki revoke: a name recorded
// in the index stands for every certificate issued to it, anything else
// must be a serial number. A serial is named after its index entry when
// it has one.
func revocationTargets(args []string, issued []pki.Issued, index string) ([]pkiRevokedCert, error) {
	nameOf := map[string]string{}
	for _, is := range issued {
		nameOf[is.Serial] = is.Name
	}
	var out []pkiRevokedCert
	seen := map[string]bool{}
	add := func(c pkiRevokedCert) {
		if !seen[c.Serial] {
			seen[c.Serial] = true
			out = append(out, c)
		}
	}
	for _, arg := range args {
		found := false
		for _, is := range issued {
			if is.Name == arg {
				found = true
				add(pkiRevokedCert{Name: is.Name, Serial: is.Serial})
			}
		}
		if found {
			continue
		}
		n, err := pki.ParseSerial(arg)
		if err != nil {
			return nil, usageError{fmt.Errorf("%q is neither a node name recorded in %s nor a certificate serial number (hex, as ted pki list shows it)", arg, index)}
		}
		// A name like "cafe" or "b1" is valid hexadecimal too: taken for a
		// serial, a mistyped or unrecorded name would revoke a certificate
		// that does not exist and leave the node's in force. TED's serials
		// are 128-bit random, about 32 digits: a short one that is not in
		// the index is a name.
		if _, known := nameOf[n.Text(16)]; !known && pki.ValidateName(arg) == nil && len(n.Text(16)) < minSerialDigits {
			return nil, usageError{fmt.Errorf("no certificate issued to %s is recorded in %s; give its serial (ted pki list)", arg, index)}
		}
		serial := n.Text(16)
		add(pkiRevokedCert{Name: nameOf[serial], Serial: serial})
	}
	return out, nil
}

// ted pki list

type pkiListOptions struct {
	dir string
}

func (o *pkiListOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.dir, "dir", "", "CA directory (from pki init)")
}

type pkiListEntry struct {
	Name     string    `json:"name"`
	Role     pki.Role  `json:"role"`
	Groups   []string  `json:"groups,omitempty"`
	Serial   string    `json:"serial"`
	Expires  time.Time `json:"expires"`
	DaysLeft int       `json:"days_left"`
	Revoked  bool      `json:"revoked"`
	Issued   time.Time `json:"issued"`
	How      string    `json:"how"`
}

type pkiListResult struct {
	Certificates []pkiListEntry `json:"certificates"`
	// CRLNumber is the number of DIR/revoked.crl, empty without one.
	CRLNumber string `json:"crl_number,omitempty"`
}

func newPKIListCommand(g *globalOptions) *cobra.Command {
	var opts pkiListOptions
	cmd := &cobra.Command{
		Use:   "list --dir DIR",
		Short: "List the certificates the CA issued, with their expiry and whether they are revoked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPKIList(cmd.Context(), g, opts, time.Now(), cmd.OutOrStdout())
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

func runPKIList(_ context.Context, g *globalOptions, opts pkiListOptions, now time.Time, out io.Writer) error {
	if opts.dir == "" {
		return usageError{errors.New("--dir is required")}
	}
	// Listing needs the CA's certificate, to believe its revocation list,
	// but not its key.
	caCert, err := pki.LoadCertificate(filepath.Join(opts.dir, "ca.crt"))
	if err != nil {
		return fmt.Errorf("load CA: %w", err)
	}
	issued, err := pki.ReadIssued(opts.dir)
	if err != nil {
		return err
	}
	crl, err := pki.LoadRevocations(filepath.Join(opts.dir, pki.CRLName), []*x509.Certificate{caCert})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	res := pkiListResult{Certificates: make([]pkiListEntry, 0, len(issued))}
	if crl != nil {
		res.CRLNumber = crl.Number.String()
	}
	for _, is := range issued {
		res.Certificates = append(res.Certificates, pkiListEntry{Name: is.Name, Role: is.Role, Groups: is.Groups, Serial: is.Serial,
			Expires: is.NotAfter, DaysLeft: transport.DaysLeft(is.NotAfter, now), Revoked: crl.RevokedSerial(is.Serial),
			Issued: is.IssuedAt, How: is.How})
	}
	return printResult(out, g.json, res, func(p *printer) {
		if len(res.Certificates) == 0 {
			p.linef("no certificates recorded in %s", filepath.Join(opts.dir, "issued.jsonl"))
			return
		}
		p.linef("%-20s %-11s %-20s %-32s %-20s %6s  %s", "NAME", "ROLE", "GROUPS", "SERIAL", "EXPIRES", "LEFT", "STATE")
		for _, c := range res.Certificates {
			groups := strings.Join(c.Groups, ",")
			if groups == "" {
				groups = "-"
			}
			state := "valid"
			switch {
			case c.Revoked:
				state = "revoked"
			case !now.Before(c.Expires):
				state = "expired"
			}
			p.linef("%-20s %-11s %-20s %-32s %-20s %6s  %s", c.Name, c.Role, groups, c.Serial,
				c.Expires.UTC().Format(time.RFC3339), certDays(c.Expires, now), state)
		}
	})
}

// ted pki fingerprint

type pkiFingerprintOptions struct {
	dir    string
	caFile string
}

func (o *pkiFingerprintOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.dir, "dir", "", "CA directory (from pki init): fingerprint DIR/ca.crt")
	f.StringVar(&o.caFile, "ca", "", "CA certificate file to fingerprint, instead of --dir")
}

type pkiFingerprintResult struct {
	CACert        string `json:"ca_cert"`
	CAFingerprint string `json:"ca_fingerprint"`
}

func newPKIFingerprintCommand(g *globalOptions) *cobra.Command {
	var opts pkiFingerprintOptions
	cmd := &cobra.Command{
		Use:   "fingerprint --dir DIR | --ca FILE",
		Short: "Print the CA certificate's fingerprint, which ted enroll --ca-fingerprint pins",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPKIFingerprint(cmd.Context(), g, opts, cmd.OutOrStdout())
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

func runPKIFingerprint(_ context.Context, g *globalOptions, opts pkiFingerprintOptions, out io.Writer) error {
	file := opts.caFile
	switch {
	case opts.dir != "" && opts.caFile != "":
		return usageError{errors.New("give --dir or --ca, not both")}
	case opts.dir != "":
		file = filepath.Join(opts.dir, "ca.crt")
	case opts.caFile == "":
		return usageError{errors.New("--dir or --ca is required")}
	}
	cert, err := pki.LoadCertificate(file)
	if err != nil {
		return err
	}
	if !cert.IsCA {
		return fmt.Errorf("%s is not a CA certificate: give the CA's (ca.crt)", file)
	}
	res := pkiFingerprintResult{CACert: file, CAFingerprint: pki.Fingerprint(cert)}
	return printResult(out, g.json, res, func(p *printer) { p.linef("%s", res.CAFingerprint) })
}

// plural says n things, with the noun's plural in s.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
