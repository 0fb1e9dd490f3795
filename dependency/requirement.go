package dependency

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// maxNameLen and nameRE copy the distribution name rule (distribution.ValidName
// and MaxNameLen), and ParseRequirement its wording; this package may not
// import distribution, so keep them in step.
const maxNameLen = 128

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)

// operatorChars start a constraint; none of them may appear in a name, so a
// requirement may be written with or without a space ("runtime>=2").
const operatorChars = "=!<>~^"

// Requirement is one entry of a revision's requires list: a distribution
// name and the versions of it that will do.
type Requirement struct {
	// Name is the required distribution.
	Name string
	// Constraint limits the acceptable versions; nil means any version.
	Constraint *semver.Constraints
	// Text is the requirement as written, used in reasons.
	Text string
}

// ParseRequirement parses "NAME" or "NAME CONSTRAINT", for example
// "runtime >=2.0, <3". Constraints use Masterminds/semver syntax.
func ParseRequirement(s string) (Requirement, error) {
	text := strings.TrimSpace(s)
	cut := strings.IndexFunc(text, func(r rune) bool {
		return r == ' ' || r == '\t' || strings.ContainsRune(operatorChars, r)
	})
	name, rest := text, ""
	if cut >= 0 {
		name, rest = text[:cut], strings.TrimSpace(text[cut:])
	}
	switch {
	case name == "":
		return Requirement{}, fmt.Errorf("requirement %q: no distribution name", s)
	case len(name) > maxNameLen:
		return Requirement{}, fmt.Errorf("requirement %.40q...: name longer than %d bytes", s, maxNameLen)
	case !nameRE.MatchString(name):
		return Requirement{}, fmt.Errorf("requirement %q: name %q: use ASCII letters a-z A-Z, digits and . _ + - (starting with a letter or digit)", s, name)
	}
	req := Requirement{Name: name, Text: text}
	if rest != "" {
		c, err := semver.NewConstraint(rest)
		if err != nil {
			return Requirement{}, fmt.Errorf("requirement %q: constraint %q: %w", s, rest, err)
		}
		req.Constraint = c
	}
	return req, nil
}

// ParseRequirements parses a revision's requires list, stopping at the first
// bad entry.
func ParseRequirements(list []string) ([]Requirement, error) {
	reqs := make([]Requirement, 0, len(list))
	for _, s := range list {
		r, err := ParseRequirement(s)
		if err != nil {
			return nil, err
		}
		reqs = append(reqs, r)
	}
	return reqs, nil
}

// String returns the requirement as written, or rebuilds it when Text is empty.
func (r Requirement) String() string {
	switch {
	case r.Text != "":
		return r.Text
	case r.Constraint == nil:
		return r.Name
	default:
		return r.Name + " " + r.Constraint.String()
	}
}

// Allows reports whether version (a semver string) of r.Name satisfies r.
// Any version, even one that does not parse, satisfies a bare name; a
// version that does not parse satisfies no constraint.
func (r Requirement) Allows(version string) bool {
	if r.Constraint == nil {
		return true
	}
	v, err := semver.NewVersion(version)
	return err == nil && r.Constraint.Check(v)
}

// Breaks returns the requirements among the extracted revisions that would
// no longer hold if name were extracted at version instead of what it is
// now (version "": no longer extracted at all), each as "app 1.2.0
// requires runtime >=2.0", sorted. It is what refuses a rollback or a
// removal that would pull a dependency from under its dependants.
func Breaks(extracted []Candidate, name, version string) []string {
	var out []string
	for _, c := range extracted {
		if c.Name == name {
			continue
		}
		for _, r := range c.Requires {
			if r.Name == name && (version == "" || !r.Allows(version)) {
				out = append(out, fmt.Sprintf("%s %s requires %s", c.Name, c.Version, r.Text))
			}
		}
	}
	slices.Sort(out)
	return out
}
