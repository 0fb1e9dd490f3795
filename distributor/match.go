package distributor

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"ted/pki"
	"ted/transport"
)

// GroupPrefix marks an entry of a channel's children or publishers that
// names a group bound into certificates (ted pki issue --group), not a
// certificate: "group:web".
const GroupPrefix = "group:"

// patternChars are the wildcards of a name pattern (path.Match): '*' any
// run of characters, '?' any one.
const patternChars = "*?"

// matcher decides whether a certificate is one of a channel's children or
// publishers. Its entries are, as configured: certificate names (and, in
// children, cluster names, which the distributor resolves itself),
// group:NAME, and name patterns such as web-*. Lookups are a map access
// and a few pattern matches, so that checking a child stays cheap with
// thousands of them.
type matcher struct {
	entries  []string
	names    map[string]bool
	groups   map[string]bool
	patterns []string
}

// newMatcher compiles entries, which ValidateMember has accepted.
func newMatcher(entries []string) *matcher {
	m := &matcher{entries: slices.Clone(entries), names: map[string]bool{}, groups: map[string]bool{}}
	for _, e := range entries {
		switch {
		case strings.HasPrefix(e, GroupPrefix):
			m.groups[strings.TrimPrefix(e, GroupPrefix)] = true
		case strings.ContainsAny(e, patternChars):
			m.patterns = append(m.patterns, e)
		default:
			m.names[e] = true
		}
	}
	return m
}

// matches reports whether id's certificate is listed: by its name, one of
// its groups, or a pattern its name matches.
func (m *matcher) matches(id transport.Identity) bool {
	if m.names[id.Name] {
		return true
	}
	for _, g := range id.Groups {
		if m.groups[g] {
			return true
		}
	}
	for _, p := range m.patterns {
		if ok, _ := path.Match(p, id.Name); ok {
			return true
		}
	}
	return false
}

// named reports whether name is listed as it is (a certificate or a
// cluster's name), not through a group or a pattern.
func (m *matcher) named(name string) bool { return m.names[name] }

// String is the entries as a refusal shows them: "[group:db, app-*]".
func (m *matcher) String() string {
	const most = 8 // a refusal names what was checked, not a list of thousands
	shown := m.entries
	more := ""
	if len(shown) > most {
		shown, more = shown[:most], fmt.Sprintf(", and %d more", len(m.entries)-most)
	}
	return "[" + strings.Join(shown, ", ") + more + "]"
}

// ValidateMember checks one entry of a channel's children or publishers:
// a certificate name, group:NAME with a valid group name, or a name
// pattern of '*' and '?' over a name's characters.
func ValidateMember(entry string) error {
	switch {
	case strings.HasPrefix(entry, GroupPrefix):
		group := strings.TrimPrefix(entry, GroupPrefix)
		// A group's rule, not a node's: a group may be called "ca".
		if err := pki.ValidateGroup(group); err != nil {
			return fmt.Errorf("%q: %w", entry, err)
		}
		return nil
	case strings.ContainsAny(entry, patternChars):
		if strings.Trim(entry, patternChars) == "" {
			return fmt.Errorf("pattern %q matches every certificate: list group:NAME or a narrower pattern", entry)
		}
		// The pattern, wildcards aside, must be made of a name's
		// characters, or it could never match one.
		for _, c := range entry {
			alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
			if !alnum && !strings.ContainsRune("._-"+patternChars, c) {
				return fmt.Errorf("pattern %q: use ASCII letters a-z A-Z, digits, . _ - and the wildcards * and ?", entry)
			}
		}
		if len(entry) > 64 {
			return fmt.Errorf("pattern %q: longer than a name may be (64)", entry)
		}
		return nil
	}
	return pki.ValidateName(entry)
}

// ValidateMembers checks a channel's children or publishers (field names
// them in errors): every entry, none twice, and no pattern or plain name
// that takes in this node itself (self).
func ValidateMembers(field string, entries []string, self string) error {
	var errs []error
	seen := map[string]bool{}
	for i, e := range entries {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := ValidateMember(e); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		if seen[e] {
			errs = append(errs, fmt.Errorf("%s: %s is listed twice", f, e))
		}
		seen[e] = true
		if self == "" {
			continue
		}
		if e == self {
			errs = append(errs, fmt.Errorf("%s: lists this node itself", f))
		} else if ok, _ := path.Match(e, self); ok && strings.ContainsAny(e, patternChars) {
			errs = append(errs, fmt.Errorf("%s: pattern %q matches this node's own name %s", f, e, self))
		}
	}
	return errors.Join(errs...)
}
