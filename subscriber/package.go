package subscriber

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"ted/distribution"
	"ted/install"
	"ted/swpkg"
)

// maxDescriptor bounds a package descriptor read from the store.
const maxDescriptor = swpkg.MaxDescriptorBytes

// descriptor reads and checks the descriptor of package revision m.
func (s *Subscriber) descriptor(m *distribution.Manifest) (*swpkg.Package, error) {
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Path != swpkg.DescriptorPath {
			continue
		}
		b, err := distribution.ReadFile(s.store, e, maxDescriptor)
		if err != nil {
			return nil, fmt.Errorf("%s@%d: descriptor: %w", m.Name, m.Revision, err)
		}
		p, err := swpkg.DecodePackage(b)
		if err != nil {
			return nil, fmt.Errorf("%s@%d: descriptor: %w", m.Name, m.Revision, err)
		}
		if p.Name != m.Name || p.Version != m.Version {
			return nil, fmt.Errorf("%s@%d: descriptor is of %s %s, the manifest says %s %s", m.Name, m.Revision, p.Name, p.Version, m.Name, m.Version)
		}
		return p, nil
	}
	return nil, fmt.Errorf("%s@%d: a package without %s", m.Name, m.Revision, swpkg.DescriptorPath)
}

// packageInstallation plans the installation of package revision m on this
// server: every component whose prerequisites hold, in order, with the
// others skipped and why. blocked says why nothing installs now: a
// package-level prerequisite fails, or every component is skipped.
func (s *Subscriber) packageInstallation(ctx context.Context, m *distribution.Manifest) (inst *install.Installation, blocked string, err error) {
	p, err := s.descriptor(m)
	if err != nil {
		return nil, "", err
	}
	env := swpkg.SystemEnv(s.cfg.Agent, s.cfg.Root)
	ok, reason, err := swpkg.CheckAll(ctx, env, p.Prerequisites)
	if err != nil {
		return nil, "", err
	}
	if !ok {
		return nil, "prerequisite " + reason, nil
	}
	inst = &install.Installation{Name: m.Name, Revision: m.Revision, Version: m.Version, Kind: distribution.KindPackage, Requires: m.Requires}
	for _, c := range p.Components {
		ok, reason, err := swpkg.CheckAll(ctx, env, c.Prerequisites)
		if err != nil {
			return nil, "", err
		}
		if !ok {
			inst.Skipped = append(inst.Skipped, install.SkippedPart{Component: c.Name, Reason: reason})
			continue
		}
		sub, err := install.SubManifest(m, swpkg.ComponentsDir+"/"+c.Name, c.To)
		if err != nil {
			return nil, "", err
		}
		if sub == nil {
			return nil, "", fmt.Errorf("%s@%d: component %s has no folder %s/%s", m.Name, m.Revision, c.Name, swpkg.ComponentsDir, c.Name)
		}
		inst.Parts = append(inst.Parts, install.Part{Component: c.Name, M: sub, Pre: c.Pre, Post: c.Post, Undo: c.Undo})
	}
	if len(inst.Parts) == 0 {
		return nil, "no component can install: " + skippedText(inst.Skipped), nil
	}
	if inst.Scripts, err = install.SubManifest(m, swpkg.ScriptsDir, swpkg.ScriptsDir); err != nil {
		return nil, "", err
	}
	return inst, "", nil
}

// skippedText says which components were skipped and why.
func skippedText(skipped []install.SkippedPart) string {
	parts := make([]string, len(skipped))
	for i, sk := range skipped {
		parts[i] = sk.Component + ": " + sk.Reason
	}
	return strings.Join(parts, "; ")
}

// partialReason is the reason an extracted package that skipped
// components shows.
func partialReason(skipped []install.SkippedPart) string {
	if len(skipped) == 0 {
		return ""
	}
	return "partial: skipped " + skippedText(skipped)
}

// verifyParts checks the installed parts of package revision m file by
// file.
func (s *Subscriber) verifyParts(ctx context.Context, m *distribution.Manifest, parts []install.InstalledPart) error {
	for _, p := range parts {
		sub, err := install.SubManifest(m, swpkg.ComponentsDir+"/"+p.Component, p.Target)
		if err != nil {
			return err
		}
		if sub == nil {
			return fmt.Errorf("component %s: not in %s@%d", p.Component, m.Name, m.Revision)
		}
		if err := install.VerifyTree(ctx, sub, filepath.Join(s.cfg.Root, filepath.FromSlash(p.Target))); err != nil {
			return fmt.Errorf("component %s: %w", p.Component, err)
		}
	}
	return nil
}

// PackageStatus is one installed package, as `ted subscriber packages`
// shows it.
type PackageStatus struct {
	Name     string `json:"name"`
	Revision uint64 `json:"revision"`
	Version  string `json:"version"`
	// State is "installed", or "partial" when a component was skipped.
	State      string            `json:"state"`
	Components []ComponentStatus `json:"components"`
	// NextRollback marks the one package `ted subscriber rollback` undoes
	// next.
	NextRollback bool `json:"next_rollback"`
}

// ComponentStatus is one component of an installed package.
type ComponentStatus struct {
	Name      string `json:"name"`
	Installed bool   `json:"installed"`
	Target    string `json:"target,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// Packages is the answer of `ted subscriber packages`.
type Packages struct {
	Packages []PackageStatus `json:"packages"`
}

// Packages lists the installed packages in completion order.
func (s *Subscriber) Packages() (Packages, error) {
	all, err := s.inst.Installed()
	if err != nil {
		return Packages{}, err
	}
	hist, err := s.inst.History()
	if err != nil {
		return Packages{}, err
	}
	slices.SortFunc(all, func(a, b install.Installed) int { return cmp.Compare(a.Order, b.Order) })
	out := Packages{Packages: []PackageStatus{}}
	for _, in := range all {
		if in.Kind != distribution.KindPackage {
			continue
		}
		ps := PackageStatus{Name: in.Name, Revision: in.Revision, Version: in.Version, State: "installed",
			Components: []ComponentStatus{}}
		if len(in.Skipped) > 0 {
			ps.State = "partial"
		}
		for _, p := range in.Parts {
			ps.Components = append(ps.Components, ComponentStatus{Name: p.Component, Installed: true, Target: p.Target})
		}
		for _, sk := range in.Skipped {
			ps.Components = append(ps.Components, ComponentStatus{Name: sk.Component, Reason: sk.Reason})
		}
		ps.NextRollback = len(hist) > 0 && hist[0].Name == in.Name && hist[0].Revision == in.Revision
		out.Packages = append(out.Packages, ps)
	}
	return out, nil
}
