package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"ted/docs"
	"ted/pki"
	"ted/schedule"
	"ted/subscriber/cluster"
	"ted/swpkg"
	"ted/yamlfile"
)

func newConfigCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Print example config files and check config files"}
	cmd.AddCommand(newConfigExampleCommand(), newConfigCheckCommand(g))
	return cmd
}

func newConfigExampleCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "example " + strings.Join(docs.Kinds, "|"),
		Short: "Print a commented example file of a kind, valid as printed",
		Long: `Print a commented example of a file TED reads: a distributor, subscriber or
publisher config, a schedule file or a package spec. Every key it shows is
explained in a comment; keys left commented out show their default or an
optional feature. The example is valid as printed (a package spec needs the
folders it names); edit the names, addresses and paths, then check it with
ted config check.`,
		Example: `  ted config example distributor > dist-1.yaml
  ted config example subscriber > web-01.yaml`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("want one KIND: %s", strings.Join(docs.Kinds, ", "))}
			}
			return nil
		},
		ValidArgs: docs.Kinds,
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := docs.Example(args[0])
			if err != nil {
				return usageError{err}
			}
			_, err = cmd.OutOrStdout().Write(data)
			return err
		},
	}
}

type configCheckOptions struct {
	kind string
}

func newConfigCheckCommand(g *globalOptions) *cobra.Command {
	var opts configCheckOptions
	cmd := &cobra.Command{
		Use:   "check FILE...",
		Short: "Check config files, schedule files and package specs without starting anything",
		Long: `Check files as the daemons and commands that read them would, without
starting anything: every problem is reported, one a line, as
FILE:LINE: FIELD: message. The kind of each file is told from its content
(and .spk for a package spec) unless --kind says it. A config's schedule
file is checked too, with the schedules the config names. Files a config
names that do not exist yet (certificates, keys, folders) are noted, not
counted as problems: they may be made later or on another machine.

Exit 0 when every file is valid, 2 when one is not.`,
		Example: `  ted config check dist-1.yaml web-01.yaml schedules.yaml
  ted config check --kind publisher pub.yaml --json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConfigCheck(opts, args, g.json, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&opts.kind, "kind", "", "the kind of every FILE: "+strings.Join(docs.Kinds, ", ")+" (default: told from the content)")
	addJSONFlag(cmd, g)
	return cmd
}

// configCheckResult is `config check --json`.
type configCheckResult struct {
	Files []checkedFile `json:"files"`
}

type checkedFile struct {
	File     string              `json:"file"`
	Kind     string              `json:"kind,omitempty"`
	Valid    bool                `json:"valid"`
	Problems []*yamlfile.Problem `json:"problems"`
	Notes    []string            `json:"notes,omitempty"`
}

func runConfigCheck(opts configCheckOptions, files []string, asJSON bool, stdout, stderr io.Writer) error {
	if opts.kind != "" && !slices.Contains(docs.Kinds, opts.kind) {
		return usageError{fmt.Errorf("--kind %q: want one of %s", opts.kind, strings.Join(docs.Kinds, ", "))}
	}
	var res configCheckResult
	invalid := 0
	for _, file := range files {
		c := checkFile(file, opts.kind)
		if !c.Valid {
			invalid++
		}
		res.Files = append(res.Files, c)
	}
	err := printResult(stdout, asJSON, res, func(p *printer) {
		for _, c := range res.Files {
			if c.Valid {
				p.linef("%s: a valid %s file", c.File, kindName(c.Kind))
			}
			for _, problem := range c.Problems {
				p.linef("%s", problem.Error())
			}
		}
	})
	if err != nil {
		return err
	}
	if !asJSON {
		for _, c := range res.Files {
			for _, n := range c.Notes {
				fmt.Fprintf(stderr, "%s: note: %s\n", c.File, n)
			}
		}
	}
	if invalid == 0 {
		return nil
	}
	return usageError{fmt.Errorf("%d of %d files are not valid", invalid, len(files))}
}

func kindName(kind string) string {
	switch kind {
	case "schedules":
		return "schedule"
	case "package":
		return "package spec"
	}
	return kind + " config"
}

// checkFile checks one file of kind (told from it if empty).
func checkFile(file, kind string) checkedFile {
	c := checkedFile{File: file, Problems: []*yamlfile.Problem{}}
	data, err := os.ReadFile(file)
	if err != nil {
		c.Problems = append(c.Problems, &yamlfile.Problem{File: file, Msg: err.Error()})
		return c
	}
	if kind == "" {
		if kind, err = guessKind(file, data); err != nil {
			c.Problems = append(c.Problems, &yamlfile.Problem{File: file, Msg: err.Error()})
			return c
		}
	}
	c.Kind = kind
	var problems error
	var extra []*yamlfile.Problem // problems of the schedule file a config names
	switch kind {
	case "distributor":
		var f distributorFile
		d := yamlfile.Decode(file, data, &f)
		f.checkDistributor(d)
		sends := map[string]string{}
		for _, name := range slices.Sorted(maps.Keys(f.Channels)) {
			if s := f.Channels[name].Send; s != "" {
				sends[s] = "channels." + name + ".send"
			}
		}
		named := namedFiles(f.TLS, f.Trust, "trust")
		if f.Enroll != nil && f.Enroll.CADir != "" {
			named["enroll.ca_dir"] = filepath.Join(f.Enroll.CADir, "ca.key")
		}
		c.Notes, extra = checkNamed(d, f.Schedules, sends, named)
		checkContents(d, f.Name, f.TLS, pki.RoleDistributor, f.Trust, "")
		problems = d.Err()
	case "subscriber":
		var f subscriberFile
		d := yamlfile.Decode(file, data, &f)
		f.checkSubscriber(d)
		named := namedFiles(f.TLS, f.Trust, "trust")
		if f.Cluster != nil {
			named["cluster.secret_file"] = f.Cluster.SecretFile
		}
		c.Notes, extra = checkNamed(d, f.Schedules, map[string]string{f.Extract: "extract"}, named)
		secret := ""
		if f.Cluster != nil {
			secret = f.Cluster.SecretFile
		}
		checkContents(d, f.Name, f.TLS, pki.RoleSubscriber, f.Trust, secret)
		problems = d.Err()
	case "publisher":
		var f publisherFile
		d := yamlfile.Decode(file, data, &f)
		f.checkPublisher(d)
		checkContents(d, f.Name, f.TLS, pki.RolePublisher, nil, "")
		builds := map[string]string{}
		named := namedFiles(f.TLS, []string{f.SignKey}, "sign_key")
		for _, name := range f.names() {
			if dist := f.Distributions[name]; dist != nil {
				builds[dist.Build] = "distributions." + name + ".build"
				named["distributions."+name+".from"] = dist.From
			}
		}
		c.Notes, extra = checkNamed(d, f.Schedules, builds, named)
		problems = d.Err()
	case "schedules":
		_, problems = schedule.Parse(file, data)
	case "package":
		_, problems = swpkg.ParseSpec(file)
	}
	c.Problems = append(c.Problems, asProblems(file, problems)...)
	c.Problems = append(c.Problems, extra...)
	c.Valid = len(c.Problems) == 0
	return c
}

// namedFiles maps the fields of a config that name files to the files.
func namedFiles(tls tlsFiles, keys []string, keysField string) map[string]string {
	named := map[string]string{"tls.ca": tls.CA, "tls.cert": tls.Cert, "tls.key": tls.Key}
	if tls.CRL != "" {
		named["tls.crl"] = tls.CRL
	}
	for i, k := range keys {
		if keysField == "sign_key" {
			named[keysField] = k
		} else {
			named[fmt.Sprintf("%s[%d]", keysField, i)] = k
		}
	}
	return named
}

// checkContents reads the files a daemon config names that are there, as
// the daemon reads them at start: the certificate (its CA, role and name),
// the trusted keys and the cluster's secret. A file that is not there is a
// note of checkNamed's.
func checkContents(d *yamlfile.Doc, name string, tls tlsFiles, role pki.Role, trust []string, secret string) {
	if d.Failed() {
		return // the paths or the name may be what is wrong
	}
	there := func(p string) bool { _, err := os.Stat(p); return p != "" && err == nil }
	if there(tls.CA) && there(tls.Cert) && there(tls.Key) {
		if _, err := loadCredentials(d.File, name, tls, role); err != nil {
			field, msg := "tls", strings.TrimPrefix(err.Error(), d.File+": tls: ")
			if cut, ok := strings.CutPrefix(err.Error(), d.File+": name "); ok {
				field, msg = "name", cut
			}
			d.Errorf(field, "%s", msg)
		}
	}
	if there(tls.CA) && there(tls.CRL) {
		// As the daemon loads it at start: signed by the CA.
		if cas, err := pki.LoadCACertificates(tls.CA); err == nil {
			if _, err := pki.LoadRevocations(tls.CRL, cas); err != nil {
				d.Errorf("tls.crl", "%v", err)
			}
		}
	}
	for i, k := range trust {
		if there(k) {
			if _, err := pki.LoadPublicKey(k); err != nil {
				d.Errorf(fmt.Sprintf("trust[%d]", i), "%v", err)
			}
		}
	}
	if there(secret) {
		if _, err := cluster.LoadKey(secret); err != nil {
			d.Errorf("cluster.secret_file", "%v", strings.TrimPrefix(err.Error(), "secret_file "))
		}
	}
}

// checkNamed checks what a config names. The schedule file, when it exists,
// is checked (its problems are returned, in its own name) and must define
// the schedules the config uses (each named at the field schedules maps
// it to, where a problem is recorded in d). Files named that are not there
// (certificates, keys, folders, the schedule file) are notes: they may be
// made later, or on another machine.
func checkNamed(d *yamlfile.Doc, schedulesFile string, schedules map[string]string, named map[string]string) (notes []string, problems []*yamlfile.Problem) {
	for _, field := range slices.Sorted(maps.Keys(named)) {
		if path := named[field]; path != "" {
			if _, err := os.Stat(path); err != nil {
				notes = append(notes, fmt.Sprintf("%s: %s does not exist (yet)", field, path))
			}
		}
	}
	var f *schedule.File
	if schedulesFile != "" {
		if _, err := os.Stat(schedulesFile); err != nil {
			return append(notes, fmt.Sprintf("schedules: %s does not exist (yet); the schedules named are not checked", schedulesFile)), nil
		}
		var err error
		if f, err = schedule.Load(schedulesFile); err != nil {
			return notes, asProblems(schedulesFile, err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(schedules)) {
		if _, err := f.Lookup(name); err != nil {
			d.Errorf(schedules[name], "%v", err)
		}
	}
	return notes, nil
}

// asProblems splits an error of a file's checks into its problems, each
// with the file, line and field it knows.
func asProblems(file string, err error) []*yamlfile.Problem {
	if err == nil {
		return nil
	}
	var p *yamlfile.Problem
	var se *schedule.Error
	switch {
	case errors.As(err, &se):
		if multi, ok := err.(interface{ Unwrap() []error }); ok {
			var out []*yamlfile.Problem
			for _, e := range multi.Unwrap() {
				out = append(out, asProblems(file, e)...)
			}
			return out
		}
		return []*yamlfile.Problem{se.Problem()}
	case errors.As(err, &p):
		var ps yamlfile.Problems
		if errors.As(err, &ps) {
			return ps
		}
		return []*yamlfile.Problem{p}
	}
	return []*yamlfile.Problem{{File: file, Msg: err.Error()}}
}

// guessKind tells a file's kind from its name and top-level keys.
func guessKind(file string, data []byte) (string, error) {
	if strings.EqualFold(filepath.Ext(file), ".spk") {
		return "package", nil
	}
	// A yaml.Node, not a map: a key given twice is a problem for the
	// check to report, not a reason not to tell the kind.
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil && err != io.EOF {
		return "", fmt.Errorf("not YAML: %v", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	top := map[string]*yaml.Node{}
	if len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
		m := doc.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			top[m.Content[i].Value] = m.Content[i+1]
		}
	}
	if len(top) == 0 {
		return "", fmt.Errorf("cannot tell what kind of file this is (not a YAML mapping); say --kind %s", strings.Join(docs.Kinds, "|"))
	}
	has := func(k string) bool { _, ok := top[k]; return ok }
	switch {
	case has("components"):
		return "package", nil
	case has("schedules") && len(top) == 1:
		return "schedules", nil
	case has("listen") || has("clusters") || (has("channels") && top["channels"].Kind == yaml.MappingNode):
		return "distributor", nil
	case has("root") || has("extract") || has("cluster") || (has("channels") && top["channels"].Kind == yaml.SequenceNode):
		return "subscriber", nil
	case has("store") || has("sign_key") || has("distributions") || has("distributor"):
		return "publisher", nil
	}
	return "", fmt.Errorf("cannot tell what kind of file this is; say --kind %s", strings.Join(docs.Kinds, "|"))
}
