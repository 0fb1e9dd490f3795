package distribution

import (
	"fmt"

	"github.com/Masterminds/semver/v3"
)

// ParseVersion checks a version as a person gives it (dist build
// --version, a publisher config's version, a package spec's version):
// strict semantic versioning, MAJOR.MINOR.PATCH with an optional
// -PRERELEASE and +BUILD (1.4.0, 2.0.0-rc.1). It returns the version in
// canonical form, which for a strict version is the version as written.
//
// The forms a lenient parser would complete silently (v1, 1, 1.4) are
// refused with the completed form suggested: a revision says what its
// publisher typed, and v1 stored as 1.0.0 surprises whoever looks for v1.
// Versions read back from manifests are not checked here: they were
// canonical when built.
func ParseVersion(v string) (string, error) {
	if sv, err := semver.StrictNewVersion(v); err == nil {
		return sv.String(), nil
	}
	if loose, err := semver.NewVersion(v); err == nil {
		return "", fmt.Errorf("%.40q is not a semantic version MAJOR.MINOR.PATCH; did you mean %q?", v, loose.String())
	}
	return "", fmt.Errorf("%.40q is not a semantic version MAJOR.MINOR.PATCH (such as 1.0.0 or 2.1.0-rc.1)", v)
}
