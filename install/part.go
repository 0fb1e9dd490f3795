package install

import (
	"fmt"
	"strings"

	"ted/distribution"
)

// SubManifest returns the part of revision m under the folder prefix of
// its tree, re-rooted there, to land at target: a package component's
// Part.M, or a package's Installation.Scripts. It shares m's chunks, so it
// reads from the same store, and has no pre- or post-actions. It is nil
// when m has no such folder.
func SubManifest(m *distribution.Manifest, prefix, target string) (*distribution.Manifest, error) {
	sub := *m
	sub.Target = target
	sub.Entries = nil
	sub.Pre, sub.Post = nil, nil
	found := false
	for _, e := range m.Entries {
		if e.Path == prefix {
			if e.Type != distribution.TypeDir {
				return nil, fmt.Errorf("%s@%d: %s is a %s, not a folder", m.Name, m.Revision, prefix, e.Type)
			}
			found = true
			continue
		}
		rest, ok := strings.CutPrefix(e.Path, prefix+"/")
		if !ok {
			continue
		}
		e.Path = rest
		sub.Entries = append(sub.Entries, e)
	}
	if !found {
		return nil, nil
	}
	if err := sub.Validate(); err != nil {
		return nil, fmt.Errorf("%s of %s@%d: %w", prefix, m.Name, m.Revision, err)
	}
	return &sub, nil
}
