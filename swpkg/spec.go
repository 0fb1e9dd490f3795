package swpkg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"go.yaml.in/yaml/v3"

	"ted/dependency"
	"ted/distribution"
	"ted/yamlfile"
)

// Spec is a parsed, validated .spk.
type Spec struct {
	File    string // the spec file as given
	Dir     string // its folder, absolute
	Package        // name, version, requires, prerequisites, components (with To)
	Scripts string // absolute folder of the scripts, "" for none
	// From maps a component's name to its absolute source folder, with
	// symlinks resolved.
	From map[string]string
}

// maxSpecBytes bounds a spec file: it lists components, not their files.
const maxSpecBytes = 4 << 20

// SpecError is a mistake in a spec file: it names the file, the line and the
// field, as "webstack.spk:12: components[1].files.from: ./nope: no such
// directory" — a problem of the one form every TED file's problems take.
type SpecError = yamlfile.Problem

// ParseSpec reads and validates a spec file. Decoding is strict: an unknown
// or repeated field is an error. Every source folder must exist and lie
// inside the spec's folder, symlinks resolved, and every script a command
// runs by a relative path must be in the folder it runs in (checkScript).
func ParseSpec(file string) (*Spec, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSpecBytes+1))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	if len(data) > maxSpecBytes {
		return nil, &SpecError{File: file, Msg: fmt.Sprintf("longer than %d bytes", maxSpecBytes)}
	}
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, fmt.Errorf("read spec %s: %w", file, err)
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("read spec %s: %w", file, err)
	}
	p := &specParser{file: file, dir: dir, realDir: realDir}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &SpecError{File: file, Msg: "empty spec"}
		}
		return nil, p.yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &SpecError{File: file, Line: extra.Line, Msg: "more than one YAML document"}
	}
	spec, err := p.spec(&doc)
	if err != nil {
		return nil, err
	}
	if err := spec.Package.Validate(); err != nil {
		// The parser checks every rule Validate does, with a line; this
		// is a backstop.
		return nil, &SpecError{File: file, Msg: err.Error()}
	}
	return spec, nil
}

// specParser walks the YAML node tree, so every error can name its line.
type specParser struct {
	file    string
	dir     string // the spec's folder, absolute
	realDir string // dir with symlinks resolved
	// scripts is the package's scripts folder, resolved, where the
	// commands run, and scriptsShown how the spec names it; "" for none.
	scripts, scriptsShown string
}

func (p *specParser) errorf(n *yaml.Node, field, format string, args ...any) error {
	return &SpecError{File: p.file, Line: n.Line, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// yamlError turns a yaml.v3 syntax error ("yaml: line 3: ...") into a
// SpecError with that line.
func (p *specParser) yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, after
			}
		}
	}
	return &SpecError{File: p.file, Line: line, Msg: msg}
}

// entry is one key of a mapping: the key node and the value node.
type entry struct{ key, value *yaml.Node }

// mapping checks that n is a mapping with only the known keys, each once.
func (p *specParser) mapping(n *yaml.Node, field string, known ...string) (map[string]entry, error) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		return nil, p.errorf(n, field, "want a mapping, found %s", yamlfile.Describe(n))
	}
	m := make(map[string]entry, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, p.errorf(k, field, "want a field name, found %s", yamlfile.Describe(k))
		}
		name := k.Value
		sub := join(field, name)
		if len(known) > 0 && !slices.Contains(known, name) {
			return nil, p.errorf(k, sub, "%s", yamlfile.UnknownField(name, known))
		}
		if prev, dup := m[name]; dup {
			return nil, p.errorf(k, sub, "repeats the field of line %d", prev.key.Line)
		}
		m[name] = entry{key: k, value: v}
	}
	return m, nil
}

// str reads a scalar as text: "arch: 386" and "version: 2.1" are strings
// here whatever YAML thinks of them.
func (p *specParser) str(n *yaml.Node, field string) (string, error) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		return "", p.errorf(n, field, "want a value, found %s", yamlfile.Describe(n))
	}
	if n.Value == "" {
		return "", p.errorf(n, field, "empty")
	}
	return n.Value, nil
}

// seq checks that n is a sequence and returns its items.
func (p *specParser) seq(n *yaml.Node, field string) ([]*yaml.Node, error) {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		return nil, p.errorf(n, field, "want a list, found %s", yamlfile.Describe(n))
	}
	return n.Content, nil
}

func (p *specParser) strList(n *yaml.Node, field string) ([]string, error) {
	items, err := p.seq(n, field)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, item := range items {
		s, err := p.str(item, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// actions reads a pre, post or undo list. The scripts its commands run
// must be in dir, the folder they run in (shown as the spec names it):
// the scripts folder, or the component's files without one.
func (p *specParser) actions(n *yaml.Node, field, dir, shown string) ([]string, error) {
	list, err := p.strList(n, field)
	if err != nil {
		return nil, err
	}
	if len(list) > distribution.MaxActions {
		return nil, p.errorf(n, field, "%d commands, over the limit of %d", len(list), distribution.MaxActions)
	}
	for i, a := range list {
		if err := validCommand(a); err != nil {
			return nil, p.errorf(deref(n).Content[i], fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
		if dir == "" {
			continue // where it runs is not known here
		}
		if msg := checkScript(a, dir, shown, p.scripts != ""); msg != "" {
			return nil, p.errorf(deref(n).Content[i], fmt.Sprintf("%s[%d]", field, i), "%s", msg)
		}
	}
	return list, nil
}

func (p *specParser) spec(doc *yaml.Node) (*Spec, error) {
	root := doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	top, err := p.mapping(root, "", "name", "version", "requires", "scripts", "prerequisites", "components")
	if err != nil {
		return nil, err
	}
	spec := &Spec{File: p.file, Dir: p.dir, From: make(map[string]string)}
	spec.Format = PackageFormat
	for _, field := range []string{"name", "version", "components"} {
		if _, ok := top[field]; !ok {
			return nil, p.errorf(root, field, "missing")
		}
	}
	if spec.Name, err = p.str(top["name"].value, "name"); err != nil {
		return nil, err
	}
	if err := distribution.ValidName("name", spec.Name); err != nil {
		return nil, p.errorf(top["name"].value, "name", "%v", err)
	}
	version, err := p.str(top["version"].value, "version")
	if err != nil {
		return nil, err
	}
	if spec.Version, err = distribution.ParseVersion(version); err != nil {
		return nil, p.errorf(top["version"].value, "version", "%v", err)
	}
	if e, ok := top["requires"]; ok {
		if spec.Requires, err = p.requires(e.value); err != nil {
			return nil, err
		}
	}
	if e, ok := top["prerequisites"]; ok {
		if spec.Prerequisites, err = p.prerequisites(e.value, "prerequisites"); err != nil {
			return nil, err
		}
	}
	if e, ok := top["scripts"]; ok {
		s, err := p.str(e.value, "scripts")
		if err != nil {
			return nil, err
		}
		if spec.Scripts, err = p.folder(e.value, "scripts", s); err != nil {
			return nil, err
		}
		p.scriptsShown = s
	} else if fi, err := os.Stat(filepath.Join(p.dir, ScriptsDir)); err == nil && fi.IsDir() {
		if spec.Scripts, err = p.folder(root, "scripts (default ./scripts)", "./"+ScriptsDir); err != nil {
			return nil, err
		}
		p.scriptsShown = "./" + ScriptsDir
	}
	p.scripts = spec.Scripts
	items, err := p.seq(top["components"].value, "components")
	if err != nil {
		return nil, err
	}
	if len(items) == 0 || len(items) > maxComponents {
		return nil, p.errorf(top["components"].value, "components", "%d components, want 1 to %d", len(items), maxComponents)
	}
	names := make(map[string]int) // name -> line
	for i, item := range items {
		c, from, err := p.component(item, fmt.Sprintf("components[%d]", i), names)
		if err != nil {
			return nil, err
		}
		spec.Components = append(spec.Components, c)
		spec.From[c.Name] = from
	}
	return spec, nil
}

func (p *specParser) requires(n *yaml.Node) ([]string, error) {
	list, err := p.strList(n, "requires")
	if err != nil {
		return nil, err
	}
	if len(list) > distribution.MaxDependencies {
		return nil, p.errorf(n, "requires", "%d requirements, over the limit of %d", len(list), distribution.MaxDependencies)
	}
	for i, r := range list {
		field := fmt.Sprintf("requires[%d]", i)
		if len(r) > distribution.MaxActionBytes {
			return nil, p.errorf(deref(n).Content[i], field, "longer than %d bytes", distribution.MaxActionBytes)
		}
		if _, err := dependency.ParseRequirement(r); err != nil {
			return nil, p.errorf(deref(n).Content[i], field, "%v", err)
		}
	}
	return list, nil
}

func (p *specParser) component(n *yaml.Node, field string, names map[string]int) (Component, string, error) {
	var c Component
	m, err := p.mapping(n, field, "name", "files", "prerequisites", "pre", "post", "undo")
	if err != nil {
		return c, "", err
	}
	for _, f := range []string{"name", "files"} {
		if _, ok := m[f]; !ok {
			return c, "", p.errorf(n, join(field, f), "missing")
		}
	}
	nameNode := m["name"].value
	if c.Name, err = p.str(nameNode, field+".name"); err != nil {
		return c, "", err
	}
	if err := distribution.ValidName("component name", c.Name); err != nil {
		return c, "", p.errorf(nameNode, field+".name", "%v", err)
	}
	if line, dup := names[c.Name]; dup {
		return c, "", p.errorf(nameNode, field+".name", "%q is a duplicate of line %d", c.Name, line)
	}
	names[c.Name] = deref(nameNode).Line

	files, err := p.mapping(m["files"].value, field+".files", "from", "to")
	if err != nil {
		return c, "", err
	}
	for _, f := range []string{"from", "to"} {
		if _, ok := files[f]; !ok {
			return c, "", p.errorf(m["files"].value, field+".files."+f, "missing")
		}
	}
	fromNode, toNode := files["from"].value, files["to"].value
	fromShown, err := p.str(fromNode, field+".files.from")
	if err != nil {
		return c, "", err
	}
	from, err := p.folder(fromNode, field+".files.from", fromShown)
	if err != nil {
		return c, "", err
	}
	if c.To, err = p.str(toNode, field+".files.to"); err != nil {
		return c, "", err
	}
	if err := distribution.ValidPath(c.To); err != nil {
		return c, "", p.errorf(toNode, field+".files.to", "%s: %v (want a relative folder under the subscriber's root, e.g. opt/%s)", c.To, err, c.Name)
	}
	if e, ok := m["prerequisites"]; ok {
		if c.Prerequisites, err = p.prerequisites(e.value, field+".prerequisites"); err != nil {
			return c, "", err
		}
	}
	// The commands run in the scripts folder. Without one, post commands
	// run in the component's target, which holds its files; pre commands
	// there too on an upgrade but in the subscriber's root on a first
	// install, and undo commands in the root: where those run is not
	// known here, and their scripts are not checked.
	for _, a := range []struct {
		key  string
		list *[]string
	}{{"pre", &c.Pre}, {"post", &c.Post}, {"undo", &c.Undo}} {
		runIn, runInShown := p.scripts, p.scriptsShown
		if runIn == "" && a.key == "post" {
			runIn, runInShown = from, fromShown
		}
		if e, ok := m[a.key]; ok {
			if *a.list, err = p.actions(e.value, field+"."+a.key, runIn, runInShown); err != nil {
				return c, "", err
			}
		}
	}
	return c, from, nil
}

// folder resolves a folder of the spec against the spec's folder and checks
// it is a directory inside it, symlinks resolved. It returns the resolved
// path.
func (p *specParser) folder(n *yaml.Node, field, value string) (string, error) {
	abs := filepath.FromSlash(value)
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(p.dir, abs)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", p.errorf(n, field, "%s: no such directory", value)
	case err != nil:
		return "", p.errorf(n, field, "%s: %v", value, err)
	case !fi.IsDir():
		return "", p.errorf(n, field, "%s: not a directory", value)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", p.errorf(n, field, "%s: %v", value, err)
	}
	if !within(p.realDir, real) {
		if within(p.dir, filepath.Clean(abs)) {
			return "", p.errorf(n, field, "%s: leaves the spec's folder %s through a symlink (to %s)", value, p.dir, real)
		}
		return "", p.errorf(n, field, "%s: outside the spec's folder %s", value, p.dir)
	}
	return real, nil
}

func (p *specParser) prerequisites(n *yaml.Node, field string) ([]Prerequisite, error) {
	items, err := p.seq(n, field)
	if err != nil {
		return nil, err
	}
	if len(items) > maxPrerequisites {
		return nil, p.errorf(n, field, "%d prerequisites, over the limit of %d", len(items), maxPrerequisites)
	}
	var list []Prerequisite
	for i, item := range items {
		pr, err := p.prerequisite(item, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		list = append(list, pr)
	}
	return list, nil
}

func (p *specParser) prerequisite(n *yaml.Node, field string) (Prerequisite, error) {
	var pr Prerequisite
	m, err := p.mapping(n, field)
	if err != nil {
		return pr, err
	}
	if len(m) != 1 {
		return pr, p.errorf(deref(n), field, "want exactly one kind per item (e.g. \"- os: linux\"), found %d", len(m))
	}
	kind := deref(deref(n).Content[0]).Value
	e := m[kind]
	if _, ok := kindFields[kind]; !ok {
		return pr, p.errorf(e.key, field, "unknown prerequisite kind %q (known: os, arch, free_disk, memory, file_exists, file_absent, file_sha256, env, command, agent_version)", kind)
	}
	pr.Kind = kind
	field = join(field, kind)
	// nodes locates each sub-field, so validate's complaint gets its line.
	nodes := map[string]*yaml.Node{"": e.value}
	sub := func(names ...string) (map[string]entry, error) {
		m, err := p.mapping(e.value, field, names...)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			nodes[k] = v.value
		}
		return m, nil
	}
	required := func(m map[string]entry, name string) (string, error) {
		v, ok := m[name]
		if !ok {
			return "", p.errorf(deref(e.value), join(field, name), "missing")
		}
		return p.str(v.value, join(field, name))
	}
	switch kind {
	case "os", "arch", "file_exists", "file_absent", "agent_version":
		if pr.Value, err = p.str(e.value, field); err != nil {
			return pr, err
		}
	case "free_disk", "memory":
		names := []string{"path", "min"}
		if kind == "memory" {
			names = names[1:]
		}
		m, err := sub(names...)
		if err != nil {
			return pr, err
		}
		if kind == "free_disk" {
			if pr.Path, err = required(m, "path"); err != nil {
				return pr, err
			}
		}
		size, err := required(m, "min")
		if err != nil {
			return pr, err
		}
		if pr.Min, err = parseSize(size); err != nil {
			return pr, p.errorf(nodes["min"], field+".min", "%v", err)
		}
	case "file_sha256":
		m, err := sub("path", "sha256")
		if err != nil {
			return pr, err
		}
		if pr.Path, err = required(m, "path"); err != nil {
			return pr, err
		}
		if pr.SHA256, err = required(m, "sha256"); err != nil {
			return pr, err
		}
		pr.SHA256 = strings.ToLower(pr.SHA256)
	case "env":
		m, err := sub("name", "value")
		if err != nil {
			return pr, err
		}
		if pr.Name, err = required(m, "name"); err != nil {
			return pr, err
		}
		if v, ok := m["value"]; ok {
			if vn := deref(v.value); vn.Kind != yaml.ScalarNode || vn.ShortTag() == "!!null" {
				return pr, p.errorf(vn, field+".value", "want a value, found %s (leave value out to only require the variable to be set)", yamlfile.Describe(vn))
			}
			value := deref(v.value).Value
			pr.EnvValue = &value
		}
	case "command":
		pr.Timeout = DefaultCommandTimeout
		if deref(e.value).Kind != yaml.MappingNode {
			if pr.Value, err = p.str(e.value, field); err != nil {
				return pr, err
			}
			break
		}
		m, err := sub("run", "timeout")
		if err != nil {
			return pr, err
		}
		if pr.Value, err = required(m, "run"); err != nil {
			return pr, err
		}
		nodes[""] = nodes["run"]
		if t, ok := m["timeout"]; ok {
			s, err := p.str(t.value, field+".timeout")
			if err != nil {
				return pr, err
			}
			if pr.Timeout, err = time.ParseDuration(s); err != nil {
				return pr, p.errorf(t.value, field+".timeout", "%q is not a duration (e.g. 30s, 2m)", s)
			}
		}
	}
	if fe := pr.validate(); fe != nil {
		at, ok := nodes[fe.field]
		if !ok {
			at = e.value
		}
		return pr, p.errorf(deref(at), join(field, fe.field), "%s", fe.msg)
	}
	return pr, nil
}

// parseSize reads a size with a unit, like "100MiB", "1GiB" or "512KB".
func parseSize(s string) (int64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil || !strings.ContainsAny(s, "BbKkMmGgTtPpEe") {
		return 0, fmt.Errorf("%q is not a size with a unit (e.g. 100MiB, 1GiB, 512KB)", s)
	}
	if n > 1<<62 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(n), nil
}

// deref follows a YAML alias to the node it names.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func join(field, name string) string {
	switch {
	case field == "":
		return name
	case name == "":
		return field
	}
	return field + "." + name
}

// within reports whether p is root or inside it; both clean and absolute.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}
