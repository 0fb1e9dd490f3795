package distribution

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// ManifestFormat is the manifest encoding version written by this code.
const ManifestFormat = 1

// Kind says what a distribution's content is.
type Kind string

// Kinds of distribution.
const (
	KindFiles   Kind = "files"
	KindPackage Kind = "package"
	// KindAgent is a build of ted itself for one platform (Platform): one
	// executable file, named AgentFile, that nodes of that platform run
	// once they upgrade to it. It is never extracted under a root.
	KindAgent Kind = "agent"
)

// AgentFile is the one file of an agent revision.
const AgentFile = "ted"

// AgentName is the distribution name of the agent builds for platform
// ("linux/amd64" gives "ted-linux-amd64"): one distribution per platform,
// since a distributor offers the latest revision of each name, and a
// node must see the latest build for its own platform.
func AgentName(platform string) string {
	return "ted-" + strings.ReplaceAll(platform, "/", "-")
}

// ValidPlatform checks an agent's platform: GOOS/GOARCH, lower-case
// letters and digits.
func ValidPlatform(platform string) error {
	goos, goarch, ok := strings.Cut(platform, "/")
	valid := func(s string) bool {
		if s == "" || len(s) > 16 {
			return false
		}
		for _, r := range s {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
				return false
			}
		}
		return true
	}
	if !ok || !valid(goos) || !valid(goarch) {
		return fmt.Errorf("platform %q: want GOOS/GOARCH, as linux/amd64", platform)
	}
	return nil
}

// EntryType is the type of one manifest entry.
type EntryType uint8

// Entry types.
const (
	TypeFile    EntryType = 1
	TypeDir     EntryType = 2
	TypeSymlink EntryType = 3
)

func (t EntryType) String() string {
	switch t {
	case TypeFile:
		return "file"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// ModeMask is the part of a file mode a manifest carries: permissions plus
// setuid, setgid and sticky.
const ModeMask = 0o7777

// ChunkRef names one chunk of a file and its plain size.
type ChunkRef struct {
	_    struct{} `cbor:",toarray"`
	ID   ChunkID
	Size uint32
}

// Entry is one file, directory or symlink of a revision.
type Entry struct {
	Path   string     `cbor:"1,keyasint" json:"path"`             // slash-separated, relative, clean
	Type   EntryType  `cbor:"2,keyasint" json:"type"`             // file, dir or symlink
	Mode   uint32     `cbor:"3,keyasint" json:"mode"`             // ModeMask bits
	Size   int64      `cbor:"4,keyasint,omitempty" json:"size"`   // files: sum of chunk sizes
	Target string     `cbor:"5,keyasint,omitempty" json:"target"` // symlinks: relative target
	Chunks []ChunkRef `cbor:"6,keyasint,omitempty" json:"-"`      // files: content in order
}

// Manifest describes one revision of a distribution. Its canonical CBOR
// encoding is what the publisher signs; see Signed.
type Manifest struct {
	Format   uint     `cbor:"1,keyasint"`
	Name     string   `cbor:"2,keyasint"`
	Revision uint64   `cbor:"3,keyasint"`
	Version  string   `cbor:"4,keyasint"`
	Channels []string `cbor:"5,keyasint"`
	Kind     Kind     `cbor:"6,keyasint"`
	// Target is where the content lands under a subscriber's root.
	Target string `cbor:"7,keyasint"`
	// Requires lists dependency constraints, "NAME CONSTRAINT" or "NAME".
	Requires []string `cbor:"8,keyasint,omitempty"`
	// Pre and Post are action command lines run around extraction.
	Pre  []string `cbor:"9,keyasint,omitempty"`
	Post []string `cbor:"10,keyasint,omitempty"`
	// Created is the build time in Unix seconds.
	Created int64 `cbor:"11,keyasint"`
	// KeyID names the publisher key that signed the manifest.
	KeyID string `cbor:"12,keyasint"`
	// Entries is omitted when empty, so an empty revision has exactly one
	// encoding (nil and empty would otherwise differ).
	Entries []Entry `cbor:"13,keyasint,omitempty"`
	// Platform is an agent's GOOS/GOARCH (KindAgent only).
	Platform string `cbor:"14,keyasint,omitempty"`
}

// CreatedTime returns Created as a time.
func (m *Manifest) CreatedTime() time.Time { return time.Unix(m.Created, 0).UTC() }

// Totals returns the number of regular files, their bytes, and the number of
// chunk references.
func (m *Manifest) Totals() (files int, bytes int64, chunks int) {
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Type == TypeFile {
			files++
			bytes += e.Size
			chunks += len(e.Chunks)
		}
	}
	return files, bytes, chunks
}

// ChunkIDs returns the distinct chunk ids the manifest references, in first
// use order.
func (m *Manifest) ChunkIDs() []ChunkID {
	seen := make(map[ChunkID]struct{})
	var ids []ChunkID
	for i := range m.Entries {
		for _, c := range m.Entries[i].Chunks {
			if _, ok := seen[c.ID]; !ok {
				seen[c.ID] = struct{}{}
				ids = append(ids, c.ID)
			}
		}
	}
	return ids
}

// SameContent reports whether two manifests describe the same revision
// content and metadata, ignoring revision number and build time: a rebuild
// that is SameContent as the latest revision is not a new revision.
func (m *Manifest) SameContent(o *Manifest) bool {
	a, b := *m, *o
	a.Revision, b.Revision = 0, 0
	a.Created, b.Created = 0, 0
	ea, err1 := a.Encode()
	eb, err2 := b.Encode()
	return err1 == nil && err2 == nil && bytes.Equal(ea, eb)
}

// ErrInvalidManifest is wrapped by every error from Validate and
// DecodeManifest.
var ErrInvalidManifest = errors.New("invalid manifest")

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
		MaxArrayElements:  max(MaxEntries+1, MaxChunksPerFile),
		MaxMapPairs:       64,
		MaxNestedLevels:   8,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err) // only on invalid options
	}
	return dm
}

// Encode returns the canonical encoding of m. It does not validate m.
func (m *Manifest) Encode() ([]byte, error) {
	return encMode.Marshal(m)
}

// DecodeManifest decodes and validates a manifest. It refuses any encoding
// that is not the canonical one, so the bytes a signature covers are the only
// bytes that can stand for that manifest.
func DecodeManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: %d bytes, over the limit of %d", ErrInvalidManifest, len(b), MaxManifestBytes)
	}
	var m Manifest
	if err := decMode.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidManifest, err)
	}
	again, err := m.Encode()
	if err != nil || !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%w: not in canonical encoding", ErrInvalidManifest)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)

// ValidName checks a distribution or channel name: ASCII letters, digits
// and ". _ + -", starting with a letter or digit, at most MaxNameLen bytes.
// what names the value in the error ("channel", "distribution name").
// dependency keeps a copy of the rule and its wording: it may not import
// this package.
func ValidName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%s %.20q...: longer than %d bytes", what, name, MaxNameLen)
	}
	if !nameRE.MatchString(name) { // ASCII only, so valid UTF-8
		return fmt.Errorf("%s %q: use ASCII letters a-z A-Z, digits and . _ + - (starting with a letter or digit)", what, name)
	}
	return nil
}

// ValidPath checks that p is a slash-separated, clean, relative path that
// stays inside its root, within the path limits.
func ValidPath(p string) error {
	switch {
	case p == "" || p == ".":
		return errors.New("empty path")
	case len(p) > MaxPathBytes:
		return fmt.Errorf("path longer than %d bytes", MaxPathBytes)
	case strings.HasPrefix(p, "/"):
		return errors.New("absolute path")
	case strings.ContainsAny(p, "\x00\\"):
		return errors.New("path contains NUL or backslash")
	case !utf8.ValidString(p):
		return errors.New("path is not valid UTF-8")
	case path.Clean(p) != p:
		return errors.New("path is not clean (// . .. or trailing /)")
	}
	depth := 0
	for elem := range strings.SplitSeq(p, "/") {
		if elem == ".." {
			return errors.New("path has a .. element")
		}
		if len(elem) > MaxNameBytes {
			return fmt.Errorf("path element longer than %d bytes", MaxNameBytes)
		}
		depth++
	}
	if depth > MaxPathDepth {
		return fmt.Errorf("path deeper than %d", MaxPathDepth)
	}
	return nil
}

// ValidSymlinkTarget checks that a symlink at linkPath with the given target
// resolves inside the tree. The target must be relative and clean, so ".."
// can only lead it; with every other symlink in the tree held to the same
// rule, no chain of links can leave the tree.
func ValidSymlinkTarget(linkPath, target string) error {
	switch {
	case target == "":
		return errors.New("empty symlink target")
	case len(target) > MaxSymlinkTargetBytes:
		return fmt.Errorf("symlink target longer than %d bytes", MaxSymlinkTargetBytes)
	case strings.HasPrefix(target, "/"):
		return fmt.Errorf("symlink target %q is absolute", target)
	case strings.ContainsAny(target, "\x00\\"):
		return fmt.Errorf("symlink target %q contains NUL or backslash", target)
	case !utf8.ValidString(target):
		return fmt.Errorf("symlink target %q is not valid UTF-8", target)
	case path.Clean(target) != target:
		return fmt.Errorf("symlink target %q is not clean", target)
	}
	resolved := path.Join(path.Dir(linkPath), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("symlink target %q escapes the tree", target)
	}
	return nil
}

// Validate checks m against the safety rules and limits. A manifest that
// fails is never stored or extracted.
func (m *Manifest) Validate() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidManifest, m.label(), fmt.Sprintf(format, args...))
	}
	if m.Format != ManifestFormat {
		return fail("format %d, this version reads format %d", m.Format, ManifestFormat)
	}
	if err := ValidName("name", m.Name); err != nil {
		return fail("%v", err)
	}
	if m.Revision == 0 {
		return fail("revision 0")
	}
	if m.Version == "" || len(m.Version) > MaxNameLen || strings.ContainsAny(m.Version, " \t\r\n\x00") || !utf8.ValidString(m.Version) {
		return fail("version %q: want a non-empty version without spaces, at most %d bytes", m.Version, MaxNameLen)
	}
	if len(m.Channels) == 0 || len(m.Channels) > MaxChannels {
		return fail("%d channels, want 1 to %d", len(m.Channels), MaxChannels)
	}
	for i, c := range m.Channels {
		if err := ValidName("channel", c); err != nil {
			return fail("%v", err)
		}
		if i > 0 && m.Channels[i-1] >= c {
			return fail("channels not sorted and unique at %q", c)
		}
	}
	switch m.Kind {
	case KindFiles, KindPackage:
		if m.Platform != "" {
			return fail("platform %q: only an agent has one", m.Platform)
		}
	case KindAgent:
		if err := ValidPlatform(m.Platform); err != nil {
			return fail("%v", err)
		}
		if m.Name != AgentName(m.Platform) {
			return fail("an agent for %s is named %q", m.Platform, AgentName(m.Platform))
		}
		if len(m.Requires)+len(m.Pre)+len(m.Post) > 0 {
			return fail("an agent has no dependencies or actions")
		}
		// Checked once the content is there: one executable file.
		if len(m.Entries) > 0 && (len(m.Entries) != 1 || m.Entries[0].Path != AgentFile || m.Entries[0].Type != TypeFile || m.Entries[0].Mode&0o111 == 0) {
			return fail("an agent holds one executable file named %q", AgentFile)
		}
	default:
		return fail("kind %q, want %q, %q or %q", m.Kind, KindFiles, KindPackage, KindAgent)
	}
	if err := ValidPath(m.Target); err != nil {
		return fail("target %q: %v", m.Target, err)
	}
	if len(m.Requires) > MaxDependencies {
		return fail("%d dependencies, over the limit of %d", len(m.Requires), MaxDependencies)
	}
	for _, r := range m.Requires {
		if strings.TrimSpace(r) == "" || len(r) > MaxActionBytes || !utf8.ValidString(r) {
			return fail("dependency %.40q: empty, too long or not UTF-8", r)
		}
	}
	for _, list := range [][]string{m.Pre, m.Post} {
		if len(list) > MaxActions {
			return fail("%d actions, over the limit of %d", len(list), MaxActions)
		}
		for _, a := range list {
			if strings.TrimSpace(a) == "" || len(a) > MaxActionBytes || strings.Contains(a, "\x00") || !utf8.ValidString(a) {
				return fail("action %.40q: empty, too long, not UTF-8 or contains NUL", a)
			}
		}
	}
	if m.KeyID == "" || len(m.KeyID) > 64 || !utf8.ValidString(m.KeyID) {
		return fail("missing or overlong key id")
	}
	if len(m.Entries) > MaxEntries {
		return fail("%d entries, over the limit of %d", len(m.Entries), MaxEntries)
	}
	dirs := make(map[string]struct{})
	var total int64
	for i := range m.Entries {
		e := &m.Entries[i]
		if err := ValidPath(e.Path); err != nil {
			return fail("entry %q: %v", e.Path, err)
		}
		if i > 0 && m.Entries[i-1].Path >= e.Path {
			if m.Entries[i-1].Path == e.Path {
				return fail("entry %q: duplicate path", e.Path)
			}
			return fail("entry %q: entries not sorted by path", e.Path)
		}
		// Every parent must be a directory of this manifest: this is what
		// stops a path from going through one of its own symlinks.
		if parent := path.Dir(e.Path); parent != "." {
			if _, ok := dirs[parent]; !ok {
				return fail("entry %q: parent %q is not a directory of this revision", e.Path, parent)
			}
		}
		if e.Mode&^ModeMask != 0 {
			return fail("entry %q: mode %o has bits outside %o", e.Path, e.Mode, ModeMask)
		}
		switch e.Type {
		case TypeDir:
			if e.Size != 0 || e.Target != "" || len(e.Chunks) != 0 {
				return fail("entry %q: a directory has no size, target or chunks", e.Path)
			}
			dirs[e.Path] = struct{}{}
		case TypeSymlink:
			if e.Size != 0 || len(e.Chunks) != 0 {
				return fail("entry %q: a symlink has no size or chunks", e.Path)
			}
			if err := ValidSymlinkTarget(e.Path, e.Target); err != nil {
				return fail("entry %q: %v", e.Path, err)
			}
		case TypeFile:
			if e.Target != "" {
				return fail("entry %q: a file has no target", e.Path)
			}
			if e.Size < 0 || e.Size > MaxFileBytes {
				return fail("entry %q: size %d outside 0 to %d", e.Path, e.Size, int64(MaxFileBytes))
			}
			if len(e.Chunks) > MaxChunksPerFile {
				return fail("entry %q: %d chunks, over the limit of %d", e.Path, len(e.Chunks), MaxChunksPerFile)
			}
			var sum int64
			for _, c := range e.Chunks {
				if c.Size == 0 || c.Size > ChunkMaxBytes {
					return fail("entry %q: chunk %s size %d outside 1 to %d", e.Path, c.ID.Short(), c.Size, ChunkMaxBytes)
				}
				sum += int64(c.Size)
			}
			if sum != e.Size {
				return fail("entry %q: chunks hold %d bytes, size says %d", e.Path, sum, e.Size)
			}
			total += e.Size
			if total > MaxTotalBytes {
				return fail("content over the limit of %d bytes", int64(MaxTotalBytes))
			}
		default:
			return fail("entry %q: unknown type %d", e.Path, e.Type)
		}
	}
	return nil
}

// label names the manifest in errors, as far as it is known.
func (m *Manifest) label() string {
	name := m.Name
	if len(name) > MaxNameLen || name == "" {
		name = "?"
	}
	return fmt.Sprintf("%s@%d", name, m.Revision)
}
