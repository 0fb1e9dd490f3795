package swpkg

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"
	"github.com/fxamacker/cbor/v2"

	"ted/dependency"
	"ted/distribution"
)

// Places in a .cpk and in the tree Open unpacks it into.
const (
	DescriptorPath = "package.cbor" // in the unpacked tree
	ComponentsDir  = "components"   // components/NAME/... holds each component's files
	ScriptsDir     = "scripts"      // scripts/... holds the package's scripts
)

// digestPath names the last entry of a .cpk: the hex SHA-256 of everything
// before its header. It is not unpacked.
const digestPath = "SHA256"

// PackageFormat is the descriptor encoding version written by this code.
const PackageFormat = 1

// Limits on a descriptor. They bound what a damaged or hostile .cpk can make
// a node allocate or run.
const (
	// MaxDescriptorBytes bounds the encoded descriptor.
	MaxDescriptorBytes = 1 << 20
	// maxComponents bounds the components of one package.
	maxComponents = 256
	// maxPrerequisites bounds each prerequisite list.
	maxPrerequisites = 64
	// maxCommandTimeout bounds a command prerequisite's timeout: a check,
	// not a job.
	maxCommandTimeout = time.Hour
)

// DefaultCommandTimeout is a command prerequisite's timeout when the spec
// gives none.
const DefaultCommandTimeout = 30 * time.Second

// ErrInvalidPackage is wrapped by every error that says a .cpk or a
// descriptor is damaged or breaks the rules: Validate, DecodePackage and Open.
var ErrInvalidPackage = errors.New("invalid package")

// Package is the descriptor carried in a .cpk and, as DescriptorPath, in the
// distribution built from it.
type Package struct {
	Format        int            `cbor:"1,keyasint"`
	Name          string         `cbor:"2,keyasint"`
	Version       string         `cbor:"3,keyasint"` // canonical semantic version
	Requires      []string       `cbor:"4,keyasint,omitempty"`
	Prerequisites []Prerequisite `cbor:"5,keyasint,omitempty"` // all hold, or nothing installs
	Components    []Component    `cbor:"6,keyasint"`           // installed in this order
}

// Component is one part of a package, installed or skipped as a whole.
type Component struct {
	Name string `cbor:"1,keyasint"`
	// To is where its files land under the subscriber's root:
	// slash-separated, relative, clean, no "..", not ".".
	To string `cbor:"2,keyasint"`
	// Prerequisites that do not hold skip this component only.
	Prerequisites []Prerequisite `cbor:"3,keyasint,omitempty"`
	// Pre and Post run around the component's install, Undo when it is
	// rolled back; all from the package's own files.
	Pre  []string `cbor:"4,keyasint,omitempty"`
	Post []string `cbor:"5,keyasint,omitempty"`
	Undo []string `cbor:"6,keyasint,omitempty"`
}

// Prerequisite is one check; exactly one kind is set, and only the fields
// that kind uses.
type Prerequisite struct {
	Kind     string        `cbor:"1,keyasint"`           // "os", "arch", "free_disk", "memory", "file_exists", "file_absent", "file_sha256", "env", "command", "agent_version"
	Value    string        `cbor:"2,keyasint,omitempty"` // os, arch, file_exists/file_absent path, command, agent_version constraint
	Path     string        `cbor:"3,keyasint,omitempty"` // free_disk, file_sha256
	Min      int64         `cbor:"4,keyasint,omitempty"` // free_disk, memory (bytes)
	SHA256   string        `cbor:"5,keyasint,omitempty"` // file_sha256, 64 lower-case hex digits
	Name     string        `cbor:"6,keyasint,omitempty"` // env
	EnvValue *string       `cbor:"7,keyasint,omitempty"` // env value, nil: just set
	Timeout  time.Duration `cbor:"8,keyasint,omitempty"` // command
}

// The codec modes are immutable once built.
var (
	encMode = mustEncMode()
	decMode = mustDecMode()
)

func mustEncMode() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err) // only on invalid options
	}
	return em
}

func mustDecMode() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxArrayElements:  max(maxComponents, maxPrerequisites, distribution.MaxDependencies, distribution.MaxActions) + 1,
		MaxMapPairs:       16,
		MaxNestedLevels:   8,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err) // only on invalid options
	}
	return dm
}

// Marshal returns the canonical encoding of p: integer keys, core
// deterministic CBOR. It does not validate p.
func (p *Package) Marshal() ([]byte, error) {
	return encMode.Marshal(p)
}

// DecodePackage decodes and validates a descriptor. It refuses any encoding
// that is not the canonical one.
func DecodePackage(b []byte) (*Package, error) {
	if len(b) > MaxDescriptorBytes {
		return nil, fmt.Errorf("%w descriptor: %d bytes, over the limit of %d", ErrInvalidPackage, len(b), MaxDescriptorBytes)
	}
	var p Package
	if err := decMode.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w descriptor: %v", ErrInvalidPackage, err)
	}
	again, err := p.Marshal()
	if err != nil || !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%w descriptor: not in canonical encoding", ErrInvalidPackage)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks p against the rules and limits. A descriptor that fails is
// never compiled, unpacked or installed.
func (p *Package) Validate() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w descriptor: %s: %s", ErrInvalidPackage, p.label(), fmt.Sprintf(format, args...))
	}
	if p.Format != PackageFormat {
		return fail("format %d, this version reads format %d", p.Format, PackageFormat)
	}
	if err := distribution.ValidName("name", p.Name); err != nil {
		return fail("%v", err)
	}
	if v, err := distribution.ParseVersion(p.Version); err != nil {
		return fail("version: %v", err)
	} else if v != p.Version {
		return fail("version %.40q: not in canonical form %q", p.Version, v)
	}
	if len(p.Requires) > distribution.MaxDependencies {
		return fail("%d requirements, over the limit of %d", len(p.Requires), distribution.MaxDependencies)
	}
	for _, r := range p.Requires {
		if len(r) > distribution.MaxActionBytes {
			return fail("requirement %.40q...: longer than %d bytes", r, distribution.MaxActionBytes)
		}
		if _, err := dependency.ParseRequirement(r); err != nil {
			return fail("%v", err)
		}
	}
	if err := validList(p.Prerequisites); err != nil {
		return fail("prerequisites: %v", err)
	}
	if len(p.Components) == 0 || len(p.Components) > maxComponents {
		return fail("%d components, want 1 to %d", len(p.Components), maxComponents)
	}
	seen := make(map[string]bool, len(p.Components))
	for i := range p.Components {
		c := &p.Components[i]
		if err := distribution.ValidName("component name", c.Name); err != nil {
			return fail("component %d: %v", i, err)
		}
		if seen[c.Name] {
			return fail("component %q: duplicate name", c.Name)
		}
		seen[c.Name] = true
		if err := distribution.ValidPath(c.To); err != nil {
			return fail("component %q: to %q: %v", c.Name, c.To, err)
		}
		if err := validList(c.Prerequisites); err != nil {
			return fail("component %q: prerequisites: %v", c.Name, err)
		}
		for _, list := range []struct {
			field   string
			actions []string
		}{{"pre", c.Pre}, {"post", c.Post}, {"undo", c.Undo}} {
			if err := validActions(list.actions); err != nil {
				return fail("component %q: %s: %v", c.Name, list.field, err)
			}
		}
	}
	return nil
}

// label names the package in errors, as far as it is known.
func (p *Package) label() string {
	name, version := p.Name, p.Version
	if name == "" || len(name) > distribution.MaxNameLen || !utf8.ValidString(name) {
		name = "?"
	}
	if version == "" || len(version) > distribution.MaxNameLen || !utf8.ValidString(version) {
		version = "?"
	}
	return name + " " + version
}

func validList(list []Prerequisite) error {
	if len(list) > maxPrerequisites {
		return fmt.Errorf("%d, over the limit of %d", len(list), maxPrerequisites)
	}
	for i, p := range list {
		if fe := p.validate(); fe != nil {
			field := p.Kind
			if fe.field != "" {
				field += "." + fe.field
			}
			return fmt.Errorf("[%d] %.40s: %s", i, field, fe.msg)
		}
	}
	return nil
}

func validActions(list []string) error {
	if len(list) > distribution.MaxActions {
		return fmt.Errorf("%d commands, over the limit of %d", len(list), distribution.MaxActions)
	}
	for _, a := range list {
		if err := validCommand(a); err != nil {
			return err
		}
	}
	return nil
}

func validCommand(a string) error {
	if strings.TrimSpace(a) == "" || len(a) > distribution.MaxActionBytes || strings.Contains(a, "\x00") || !utf8.ValidString(a) {
		return fmt.Errorf("command %.40q: empty, longer than %d bytes, not UTF-8 or contains NUL", a, distribution.MaxActionBytes)
	}
	return nil
}

// fieldError is a broken prerequisite field; field is "" for the kind's own
// value, else the sub-field ("min", "sha256", ...).
type fieldError struct{ field, msg string }

func fieldErr(field, format string, args ...any) *fieldError {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// Prerequisite fields, to say which a kind uses.
const (
	useValue = 1 << iota
	usePath
	useMin
	useSHA256
	useName
	useEnvValue
	useTimeout
)

var kindFields = map[string]int{
	"os":            useValue,
	"arch":          useValue,
	"free_disk":     usePath | useMin,
	"memory":        useMin,
	"file_exists":   useValue,
	"file_absent":   useValue,
	"file_sha256":   usePath | useSHA256,
	"env":           useName | useEnvValue,
	"command":       useValue | useTimeout,
	"agent_version": useValue,
}

// knownOS and knownArch are the values of runtime.GOOS and runtime.GOARCH
// (go tool dist list), so a typo is caught when the spec is compiled rather
// than skipping every server.
var (
	knownOS   = setOf("aix", "android", "darwin", "dragonfly", "freebsd", "illumos", "ios", "js", "linux", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows")
	knownArch = setOf("386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64", "ppc64le", "riscv64", "s390x", "wasm")
)

func setOf(values ...string) map[string]bool {
	m := make(map[string]bool, len(values))
	for _, v := range values {
		m[v] = true
	}
	return m
}

// validate checks the fields p's kind uses and that it sets no others.
func (p Prerequisite) validate() *fieldError {
	uses, ok := kindFields[p.Kind]
	if !ok {
		return fieldErr("", "unknown prerequisite kind %.40q", p.Kind)
	}
	for _, f := range []struct {
		bit  int
		name string
		set  bool
	}{
		{useValue, "Value", p.Value != ""},
		{usePath, "Path", p.Path != ""},
		{useMin, "Min", p.Min != 0},
		{useSHA256, "SHA256", p.SHA256 != ""},
		{useName, "Name", p.Name != ""},
		{useEnvValue, "EnvValue", p.EnvValue != nil},
		{useTimeout, "Timeout", p.Timeout != 0},
	} {
		if f.set && uses&f.bit == 0 {
			return fieldErr("", "%s does not use field %s", p.Kind, f.name)
		}
	}
	switch p.Kind {
	case "os":
		if !knownOS[p.Value] {
			return fieldErr("", "%.40q is not a known operating system (a GOOS value such as linux, darwin, windows)", p.Value)
		}
	case "arch":
		if !knownArch[p.Value] {
			return fieldErr("", "%.40q is not a known architecture (a GOARCH value such as amd64, arm64)", p.Value)
		}
	case "free_disk":
		if err := validCheckPath(p.Path); err != nil {
			return fieldErr("path", "%v", err)
		}
		if p.Min <= 0 {
			return fieldErr("min", "%d: must be more than 0", p.Min)
		}
	case "memory":
		if p.Min <= 0 {
			return fieldErr("min", "%d: must be more than 0", p.Min)
		}
	case "file_exists", "file_absent":
		if err := validCheckPath(p.Value); err != nil {
			return fieldErr("", "%v", err)
		}
	case "file_sha256":
		if err := validCheckPath(p.Path); err != nil {
			return fieldErr("path", "%v", err)
		}
		if !isLowerHex(p.SHA256, 64) {
			return fieldErr("sha256", "%.70q is not 64 hex digits", p.SHA256)
		}
	case "env":
		if p.Name == "" || len(p.Name) > 256 || strings.ContainsAny(p.Name, "=\x00") || !utf8.ValidString(p.Name) {
			return fieldErr("name", "%.40q: want a variable name without = or NUL, at most 256 bytes", p.Name)
		}
		if p.EnvValue != nil && (len(*p.EnvValue) > distribution.MaxActionBytes || strings.Contains(*p.EnvValue, "\x00") || !utf8.ValidString(*p.EnvValue)) {
			return fieldErr("value", "longer than %d bytes, not UTF-8 or contains NUL", distribution.MaxActionBytes)
		}
	case "command":
		if err := validCommand(p.Value); err != nil {
			return fieldErr("", "%v", err)
		}
		if p.Timeout <= 0 || p.Timeout > maxCommandTimeout {
			return fieldErr("timeout", "%v: want more than 0 and at most %v", p.Timeout, maxCommandTimeout)
		}
	case "agent_version":
		if len(p.Value) > 256 {
			return fieldErr("", "constraint longer than 256 bytes")
		}
		if _, err := semver.NewConstraint(p.Value); err != nil {
			return fieldErr("", "%.40q is not a version constraint (e.g. \">=0.3, <2\"): %v", p.Value, err)
		}
	}
	return nil
}

// validCheckPath accepts an absolute path, or a relative one (resolved under
// the subscriber's root) that is clean and has no "..".
func validCheckPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case len(p) > distribution.MaxPathBytes:
		return fmt.Errorf("path longer than %d bytes", distribution.MaxPathBytes)
	case strings.Contains(p, "\x00") || !utf8.ValidString(p):
		return fmt.Errorf("path %.40q is not UTF-8 or contains NUL", p)
	case path.IsAbs(p):
		return nil
	}
	if err := distribution.ValidPath(p); err != nil {
		return fmt.Errorf("relative path %.40q: %v", p, err)
	}
	return nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
