package publisher

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"ted/dependency"
	"ted/distribution"
	"ted/store"
)

// BuildOptions describe one build of a distribution from a directory.
type BuildOptions struct {
	// From is the directory whose content becomes the revision.
	From string
	// Manifest is the revision's metadata (name, version, channels,
	// target, requires, actions) and the build's callbacks. Build sets its
	// Revision; a zero Created is the time of the build.
	Manifest distribution.BuildOptions
	// Keep is how many revisions of the distribution stay in the store
	// (at least 1); older ones, and the chunks only they use, are pruned
	// after a new revision is stored.
	Keep int
}

// BuildResult is what a build did.
type BuildResult struct {
	Name    string
	Version string
	// Revision is the new revision, or the latest one when Unchanged.
	Revision uint64
	// Unchanged: the content and metadata equal the latest revision's, so
	// no revision was made.
	Unchanged bool
	// Signed is Revision's envelope as stored.
	Signed *distribution.Signed
	// Stats sums up the tree read and the chunks stored.
	Stats distribution.BuildStats
	// ManifestBytes is the size of the built manifest's encoding.
	ManifestBytes int
	// Pruned lists the revisions deleted to keep Keep, oldest first.
	Pruned []uint64
	// Warnings are requirements naming distributions this store has never
	// held: allowed (they may be published elsewhere), but worth a look.
	Warnings []string
}

// ErrCycle: the build's requirements would close a cycle among the
// distributions of the store, so no subscriber could ever extract them.
var ErrCycle = errors.New("requirements would close a cycle")

// Build builds a revision of a distribution from opts.From into st: it
// chunks the tree, signs the manifest with key and stores it as the next
// revision, then prunes the distribution to opts.Keep revisions. A build
// that is SameContent as the latest stored revision makes no revision and
// returns the latest, Unchanged.
func Build(ctx context.Context, st store.Store, opts BuildOptions, key ed25519.PrivateKey) (BuildResult, error) {
	b := opts.Manifest
	res := BuildResult{Name: b.Name, Version: b.Version, Pruned: []uint64{}}
	if opts.Keep < 1 {
		return res, fmt.Errorf("build %s: keep %d: keep at least 1 revision", b.Name, opts.Keep)
	}
	if b.Created.IsZero() {
		b.Created = time.Now()
	}
	var latest uint64
	info, err := st.Latest(b.Name)
	switch {
	case err == nil:
		latest = info.Revision
	case !errors.Is(err, store.ErrNotFound):
		return res, err
	}
	b.Revision = latest + 1
	if res.Warnings, err = checkRequires(st, b.Name, b.Requires); err != nil {
		return res, err
	}
	m, stats, err := distribution.BuildDir(ctx, opts.From, b, st)
	res.Stats = stats
	if err != nil {
		return res, err
	}
	signed, err := distribution.Sign(m, key)
	if err != nil {
		return res, err
	}
	res.Version = m.Version
	res.ManifestBytes = len(signed.Body)

	if latest != 0 {
		previousSigned, err := st.Signed(b.Name, latest)
		if err != nil {
			return res, err
		}
		previous, err := previousSigned.Manifest()
		if err != nil {
			return res, fmt.Errorf("%s@%d: %w", b.Name, latest, err)
		}
		if previous.SameContent(m) {
			res.Revision, res.Unchanged, res.Signed = latest, true, previousSigned
			return res, nil
		}
	}
	if _, err := st.AddRevision(signed, m); err != nil {
		return res, err
	}
	res.Revision, res.Signed = m.Revision, signed
	pruned, err := st.Prune(b.Name, opts.Keep)
	if err != nil {
		return res, fmt.Errorf("%s@%d stored, but pruning old revisions failed: %w", b.Name, m.Revision, err)
	}
	res.Pruned = append(res.Pruned, pruned.RemovedRevisions...)
	return res, nil
}

// checkRequires refuses requirements that would close a cycle with the
// latest revisions of the store's other distributions (cycles are refused at
// build time, when the publisher can see them), and lists those
// naming distributions the store has never held.
func checkRequires(st store.Store, name string, requires []string) ([]string, error) {
	warnings := []string{}
	reqs, err := dependency.ParseRequirements(requires)
	if err != nil {
		return warnings, fmt.Errorf("build %s: %w", name, err)
	}
	if len(reqs) == 0 {
		return warnings, nil
	}
	names, err := st.Distributions()
	if err != nil {
		return warnings, err
	}
	graph := map[string][]string{}
	for _, other := range names {
		if other == name {
			continue
		}
		s, err := st.Signed(other, 0)
		if err != nil {
			return warnings, err
		}
		m, err := s.Manifest()
		if err != nil {
			return warnings, fmt.Errorf("%s: %w", other, err)
		}
		theirs, err := dependency.ParseRequirements(m.Requires)
		if err != nil {
			continue // not this build's to judge; the subscriber reports it
		}
		for _, r := range theirs {
			graph[other] = append(graph[other], r.Name)
		}
	}
	for _, r := range reqs {
		graph[name] = append(graph[name], r.Name)
		if r.Name != name && !slices.Contains(names, r.Name) {
			warnings = append(warnings, fmt.Sprintf("requires %s, which this store has never held (published elsewhere?)", r.Text))
		}
	}
	if cycle := dependency.FindCycle(graph); cycle != nil {
		return warnings, fmt.Errorf("build %s: %w: %s", name, ErrCycle, dependency.FormatCycle(cycle))
	}
	return warnings, nil
}
