package install

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"ted/dependency"
	"ted/distribution"
)

// Errors of Rollback.
var (
	// ErrNothingToRollBack: no installation of the distribution (or of
	// any, without a name) can be undone.
	ErrNothingToRollBack = errors.New("nothing to roll back")
	// ErrRequired: an extracted distribution requires what the rollback
	// would take away; the error names the dependants.
	ErrRequired = errors.New("required by an extracted distribution")
	// ErrNotLatest: a package installed later must be rolled back first.
	ErrNotLatest = errors.New("not the latest package installed")
)

// RollbackOptions say what Rollback undoes.
type RollbackOptions struct {
	// Name is the distribution whose most recent installation is undone;
	// empty undoes the most recent installation of any distribution.
	Name string
	// Force rolls back even when an extracted distribution requires what
	// the rollback takes away.
	Force bool
	// Hold holds the distribution's revisions up to this one (and always
	// the one undone): they are not extracted again on their own (Held).
	Hold uint64
}

// RolledBack says what a rollback did.
type RolledBack struct {
	Name string `json:"name"`
	// From is the revision undone, To the one installed again (0: none).
	From        uint64 `json:"from"`
	FromVersion string `json:"from_version"`
	To          uint64 `json:"to"`
	ToVersion   string `json:"to_version,omitempty"`
	Target      string `json:"target,omitempty"` // "" for a package
	// Warnings are undo commands that failed; the files went back anyway.
	Warnings []string `json:"warnings,omitempty"`
}

// Undoable is an installation that Rollback can undo.
type Undoable struct {
	Name string
	// Revision is the revision it installed, Prev the one it replaced
	// and a rollback installs again (0: none).
	Revision    uint64
	Version     string
	Prev        uint64
	PrevVersion string
	Installed   time.Time
	seq         uint64
}

// History returns the installations that can be undone, the next one that
// Rollback without a name undoes first (last in, first out): for each
// distribution its installed revision and, one rollback after the other,
// those it replaced, as far as Keep reaches.
func (in *Installer) History() ([]Undoable, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.history()
}

func (in *Installer) history() ([]Undoable, error) {
	names, err := in.state.names(installedDir)
	if err != nil {
		return nil, err
	}
	var out []Undoable
	for _, name := range names {
		rec, ok, err := in.state.readInstalled(name)
		if err != nil {
			return nil, fmt.Errorf("installed revision of %s: %w", name, err)
		}
		for ok && rec.Seq != 0 {
			u, err := in.state.readUndoHead(name, rec.Seq)
			if errors.Is(err, fs.ErrNotExist) {
				break // pruned: as far back as Keep reaches
			}
			if err != nil {
				return nil, fmt.Errorf("undo record of %s@%d: %w", name, rec.Revision, err)
			}
			un := Undoable{Name: name, Revision: rec.Revision, Version: rec.Version,
				Installed: time.Unix(0, rec.Installed).UTC(), seq: rec.Seq}
			if u.Prev != nil {
				un.Prev, un.PrevVersion = u.Prev.Revision, u.Prev.Version
			}
			out = append(out, un)
			if u.Prev == nil {
				break
			}
			rec = *u.Prev
		}
	}
	slices.SortFunc(out, func(a, b Undoable) int { return cmp.Compare(b.seq, a.seq) })
	return out, nil
}

// Held returns the revision up to which an operator's rollback holds a
// distribution: its revisions up to it are not to be extracted again on
// their own. 0: not held.
func (in *Installer) Held(name string) (uint64, error) {
	h, _, err := in.state.readHeld(name)
	return h.Through, err
}

// Rollback undoes the most recent installation of a distribution (of any,
// without a name): every path it touched is put back exactly as it was,
// and the revision it replaced is installed again (or none, for a first
// installation). It is refused, with an error wrapping ErrRequired that
// names them, when an extracted distribution requires what it takes away,
// unless opts.Force; and with ErrNothingToRollBack when no undo record
// is left. A rollback is journalled like an extraction: a crash in it is
// finished by Recover.
func (in *Installer) Rollback(ctx context.Context, opts RollbackOptions) (RolledBack, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	res, err := in.rollback(ctx, opts)
	if err != nil {
		what := "roll back"
		if opts.Name != "" {
			what += " " + opts.Name
		}
		return res, fmt.Errorf("%s: %w", what, err)
	}
	return res, nil
}

func (in *Installer) rollback(ctx context.Context, opts RollbackOptions) (RolledBack, error) {
	name := opts.Name
	if name == "" {
		hist, err := in.history()
		if err != nil {
			return RolledBack{}, err
		}
		if len(hist) == 0 {
			return RolledBack{}, fmt.Errorf("no installation can be undone: %w", ErrNothingToRollBack)
		}
		name = hist[0].Name
	}
	if err := distribution.ValidName("distribution name", name); err != nil {
		return RolledBack{}, err
	}
	if j, ok, err := in.state.readJournal(name); err != nil {
		return RolledBack{}, err
	} else if ok && (j.Step == StepCommit || j.Step == StepPost) {
		// An installation whose after-step never finished is the one to
		// undo: it is the most recent.
		res := RolledBack{Name: name, From: j.To, FromVersion: j.Version, To: j.From, Target: j.target()}
		if err := in.undo(ctx, &j, nil, max(opts.Hold, j.To)); err != nil {
			return res, err
		}
		if prev, ok, _ := in.state.readInstalled(name); ok {
			res.ToVersion = prev.Version
		}
		return res, nil
	}
	if err := in.settle(ctx, name); err != nil {
		return RolledBack{}, err
	}
	rec, ok, err := in.state.readInstalled(name)
	if err != nil {
		return RolledBack{}, err
	}
	if !ok {
		return RolledBack{}, fmt.Errorf("%s is not installed: %w", name, ErrNothingToRollBack)
	}
	u, err := in.state.readUndo(name, rec.Seq)
	if errors.Is(err, fs.ErrNotExist) || rec.Seq == 0 {
		return RolledBack{}, fmt.Errorf("%s@%d: no undo record is left (keep_revisions %d keeps what undoes the last %d installations): %w",
			name, rec.Revision, in.keep, in.keep, ErrNothingToRollBack)
	}
	if err != nil {
		return RolledBack{}, err
	}
	if u.Revision != rec.Revision {
		return RolledBack{}, fmt.Errorf("undo record of installation %d is for %s@%d, the installed record says %d", rec.Seq, name, u.Revision, rec.Revision)
	}
	res := RolledBack{Name: name, From: rec.Revision, FromVersion: rec.Version, Target: rec.target()}
	if u.Prev != nil {
		res.To, res.ToVersion = u.Prev.Revision, u.Prev.Version
	}
	if rec.Kind == distribution.KindPackage {
		// Packages are undone in the reverse order of their completion.
		if later, err := in.laterPackages(rec); err != nil {
			return res, err
		} else if len(later) > 0 {
			return res, fmt.Errorf("%s@%d: %s installed later; roll %s back first: %w",
				name, rec.Revision, strings.Join(later, ", "), pronoun(len(later)), ErrNotLatest)
		}
	}
	if !opts.Force && u.Prev != nil {
		if unmet, err := in.unmet(name, u.Prev.Requires); err != nil {
			return res, err
		} else if len(unmet) > 0 {
			return res, fmt.Errorf("%s@%d: %s %s, brought back, %s; extract that first, or force it: %w",
				name, rec.Revision, name, res.ToVersion, strings.Join(unmet, "; "), ErrRequired)
		}
	}
	if !opts.Force {
		if broken, err := in.breaks(name, res.ToVersion); err != nil {
			return res, err
		} else if len(broken) > 0 {
			to := "nothing"
			if u.Prev != nil {
				to = fmt.Sprintf("%s %s", name, res.ToVersion)
			}
			return res, fmt.Errorf("%s@%d: rolling back to %s breaks %s; roll those back first, or force it: %w",
				name, rec.Revision, to, strings.Join(broken, "; "), ErrRequired)
		}
	}
	rb := &journalRecord{Name: name, From: rec.Revision, To: res.To, Version: rec.Version, Target: rec.target(),
		Step: StepRestore, Started: in.now().UnixNano(), Seq: rec.Seq, Prev: u.Prev, Hold: max(opts.Hold, rec.Revision),
		Part: len(u.Parts) - 1, Begun: len(u.Parts)}
	if err := in.record(rb); err != nil {
		return res, err
	}
	warnings, err := in.runRollback(ctx, rb)
	res.Warnings = warnings
	if err != nil {
		return res, err
	}
	in.log.Info("rolled back", "dist", name, "from", res.From, "to", res.To, "target", res.Target)
	return res, nil
}

// laterPackages names the packages installed after rec, latest first.
func (in *Installer) laterPackages(rec installedRecord) ([]string, error) {
	all, err := in.Installed()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b Installed) int { return cmp.Compare(b.Order, a.Order) })
	var later []string
	for _, other := range all {
		if other.Kind == distribution.KindPackage && other.Name != rec.Name && other.Order > rec.Seq {
			later = append(later, fmt.Sprintf("%s@%d", other.Name, other.Revision))
		}
	}
	return later, nil
}

func pronoun(n int) string {
	if n == 1 {
		return "it"
	}
	return "them, latest first,"
}

// unmet lists the requirements among requires that the installed
// revisions other than name's do not meet.
func (in *Installer) unmet(name string, requires []string) ([]string, error) {
	reqs, err := dependency.ParseRequirements(requires)
	if err != nil {
		return []string{err.Error()}, nil
	}
	all, err := in.Installed()
	if err != nil {
		return nil, err
	}
	versions := map[string]string{}
	for _, i := range all {
		if i.Name != name {
			versions[i.Name] = i.Version
		}
	}
	var out []string
	for _, r := range reqs {
		v, ok := versions[r.Name]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("requires %s, which is not extracted", r.Text))
		case !r.Allows(v):
			out = append(out, fmt.Sprintf("requires %s; extracted: %s %s", r.Text, r.Name, v))
		}
	}
	return out, nil
}

// breaks lists the requirements of the other installed revisions that
// name at version ("": not installed) would no longer meet.
func (in *Installer) breaks(name, version string) ([]string, error) {
	names, err := in.state.names(installedDir)
	if err != nil {
		return nil, err
	}
	var extracted []dependency.Candidate
	for _, other := range names {
		rec, ok, err := in.state.readInstalled(other)
		if err != nil {
			return nil, fmt.Errorf("installed revision of %s: %w", other, err)
		}
		if !ok || other == name {
			continue
		}
		reqs, err := dependency.ParseRequirements(rec.Requires)
		if err != nil {
			continue // it could not have been extracted by this version's rules
		}
		extracted = append(extracted, dependency.Candidate{Name: other, Revision: rec.Revision, Version: rec.Version, Requires: reqs})
	}
	return dependency.Breaks(extracted, name, version), nil
}

// undo rolls back an installation that failed (cause) or was interrupted
// (cause nil) before it finished.
func (in *Installer) undo(ctx context.Context, j *journalRecord, cause error, hold uint64) error {
	u, err := in.state.readUndo(j.Name, j.Seq)
	if err != nil {
		return errors.Join(cause, fmt.Errorf("roll back: %w", err))
	}
	// The parts whose pre-commands may have started run their undo
	// commands; every part's paths go back.
	begun := len(u.Parts)
	if j.Step == StepWrite {
		begun = min(j.Part+1, begun)
	}
	rb := &journalRecord{Name: j.Name, From: j.To, To: j.From, Version: j.Version, Target: j.target(),
		Step: StepRestore, Started: in.now().UnixNano(), Seq: j.Seq, Prev: u.Prev, Part: len(u.Parts) - 1, Begun: begun, Hold: hold}
	if err := in.record(rb); err != nil {
		return errors.Join(cause, fmt.Errorf("roll back: %w", err))
	}
	warnings, err := in.runRollback(ctx, rb)
	if err != nil {
		return errors.Join(cause, fmt.Errorf("roll back: %w", err))
	}
	if len(warnings) > 0 && cause != nil {
		cause = fmt.Errorf("%w; undo: %s", cause, strings.Join(warnings, "; "))
	}
	back := "nothing installed"
	if u.Prev != nil {
		back = fmt.Sprintf("%s@%d", u.Prev.Name, u.Prev.Revision)
	}
	in.log.Warn("installation rolled back", "dist", j.Name, "rev", j.To, "to", back, "cause", cause)
	if cause == nil {
		return nil
	}
	return fmt.Errorf("%w; rolled back to %s", cause, back)
}

// discard ends an installation that has not changed anything under the
// root yet.
func (in *Installer) discard(j *journalRecord) error {
	if err := in.state.removeUndo(j.Name, j.Seq); err != nil {
		return fmt.Errorf("discard: %w", err)
	}
	if err := in.state.removeJournal(j); err != nil {
		return fmt.Errorf("discard: %w", err)
	}
	return nil
}

// runRollback carries a rollback on from its recorded step: part by part,
// last first, the part's undo commands run and its paths go back; then
// the earlier entries the installation removed. It returns the undo
// commands that failed: the files go back anyway.
func (in *Installer) runRollback(ctx context.Context, rb *journalRecord) ([]string, error) {
	var warnings []string
	if rb.Step == StepRestore {
		u, err := in.state.readUndo(rb.Name, rb.Seq)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rb.Step, err)
		}
		root, err := os.OpenRoot(in.root)
		if err != nil {
			return nil, err
		}
		defer root.Close()
		// The directories the installation put there, once for every
		// part: what restore may remove of them is only what TED put.
		added := &journalRecord{Name: u.Name, To: u.Revision}
		for _, c := range u.Changes {
			if c.Now == distribution.TypeDir {
				added.Remove = append(added.Remove, pathType{Path: c.Path, Type: c.Now})
			}
		}
		addedDirs := installedDirs(added)
		for k := min(rb.Part, len(u.Parts)-1); k >= 0; k-- {
			if k != rb.Part {
				rb.Part = k
				if err := in.record(rb); err != nil {
					return warnings, err
				}
			}
			if p := u.Parts[k]; k < rb.Begun && len(p.Undo) > 0 {
				run := in.undoActions(&u, k)
				if err := run.Run(ctx, "undo", p.Undo); err != nil {
					if ctx.Err() != nil {
						return warnings, err
					}
					warnings = append(warnings, err.Error())
					in.log.Warn("undo command failed; the component's files go back anyway", "dist", u.Name, "component", p.Component, "err", err)
				}
			}
			if err := in.restore(ctx, root, &u, addedDirs, k); err != nil {
				return warnings, fmt.Errorf("%s: %w", rb.Step, err)
			}
		}
		if err := in.restore(ctx, root, &u, addedDirs, -1); err != nil {
			return warnings, fmt.Errorf("%s: %w", rb.Step, err)
		}
		// Every file is back: what the undo commands stopped starts again.
		for _, err := range in.postAgain(ctx, &u, rb.Begun) {
			if ctx.Err() != nil {
				return warnings, err
			}
			warnings = append(warnings, err.Error())
			in.log.Warn("post-command of the revision brought back failed", "dist", u.Name, "err", err)
		}
		rb.Step = StepUndone
		if err := in.record(rb); err != nil {
			return warnings, err
		}
	}
	return warnings, in.undone(rb)
}

// postAgain runs, once every path of u is back, the post-commands of the
// installation brought back for the components whose undo commands ran
// (the first begun parts of u), in that installation's order and from its
// own scripts: they start again what the undo commands stopped. It
// returns the commands that failed.
func (in *Installer) postAgain(ctx context.Context, u *undoRecord, begun int) []error {
	if u.Prev == nil {
		return nil
	}
	undone := map[string]bool{}
	for _, p := range u.Parts[:min(begun, len(u.Parts))] {
		undone[p.Component] = true
	}
	var errs []error
	for _, p := range u.Prev.Parts {
		if p.Component == "" || !undone[p.Component] || len(p.Post) == 0 {
			continue
		}
		target := filepath.Join(in.root, filepath.FromSlash(p.Target))
		dir := filepath.Join(in.state.undoPath(u.Name, u.Prev.Seq), scriptsDir)
		if _, err := os.Stat(dir); err != nil {
			dir = target
		}
		run := Actions{Fence: in.check, Name: u.Name, Revision: u.Prev.Revision, Version: u.Prev.Version, Component: p.Component,
			Dir: dir, Target: target, Timeout: in.actionTimeout, Log: in.log}
		if err := run.Run(ctx, "post", p.Post); err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				return errs
			}
		}
	}
	return errs
}

// undoActions returns where the undo commands of part k of u run.
func (in *Installer) undoActions(u *undoRecord, k int) Actions {
	p := u.Parts[k]
	target := filepath.Join(in.root, filepath.FromSlash(p.Target))
	dir := filepath.Join(in.state.undoPath(u.Name, u.Seq), scriptsDir)
	if _, err := os.Stat(dir); err != nil {
		dir = in.root
	}
	return Actions{Fence: in.check, Name: u.Name, Revision: u.Revision, Version: u.Version, Component: p.Component,
		Dir: dir, Target: target, Timeout: in.actionTimeout, Log: in.log}
}

// undone puts the records back after a rollback restored the files: the
// earlier installed record, the hold, then the undo directory and the
// journal go. Every part can be repeated.
func (in *Installer) undone(rb *journalRecord) error {
	var err error
	if rb.Prev != nil {
		prev := *rb.Prev
		err = in.state.writeInstalled(&prev)
	} else {
		err = in.state.removeInstalled(rb.Name)
	}
	if err == nil && rb.Hold > 0 {
		h, _, herr := in.state.readHeld(rb.Name)
		err = herr
		if err == nil && h.Through < rb.Hold {
			err = in.state.writeHeld(&heldRecord{Name: rb.Name, Through: rb.Hold})
		}
	}
	if err == nil {
		err = in.state.removeUndo(rb.Name, rb.Seq)
	}
	if err == nil {
		err = in.state.removeJournal(rb)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", StepUndone, err)
	}
	return nil
}

// prune removes the undo directories of name that Keep no longer needs,
// and any that no record describes (a crash while one was removed).
func (in *Installer) prune(name string) error {
	seqs, err := in.state.undoSeqs(name)
	if err != nil {
		return err
	}
	j, pending, err := in.state.readJournal(name)
	if err != nil {
		return err
	}
	kept, stripped := 0, false
	for _, seq := range slices.Backward(seqs) {
		if pending && seq == j.Seq {
			continue // the work under way owns it
		}
		_, rerr := in.state.readUndoHead(name, seq)
		if rerr == nil && kept < in.keep {
			kept++
			continue
		}
		if !stripped && kept == in.keep && (rerr == nil || errors.Is(rerr, fs.ErrNotExist)) {
			// The installation before the oldest undoable one can no
			// longer be undone, but a rollback to it runs its
			// post-commands again: its scripts stay.
			stripped = true
			if err := in.state.stripUndo(name, seq); err != nil {
				return err
			}
			continue
		}
		if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			in.log.Warn("unreadable undo record removed", "dist", name, "seq", seq, "err", rerr)
		}
		if err := in.state.removeUndo(name, seq); err != nil {
			return err
		}
	}
	return nil
}

// backup records what is at every path the installation will touch and
// keeps every file there in its undo directory, then writes the undo
// record. Nothing under the root changes.
func (in *Installer) backup(ctx context.Context, root *os.Root, j *journalRecord, scripts *distribution.Manifest) error {
	if err := in.check(); err != nil {
		return err
	}
	dir := in.state.undoPath(j.Name, j.Seq)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// The new directory survives a power loss only once its parents are
	// synced; its own entries are synced with the record.
	for _, d := range []string{filepath.Dir(dir), filepath.Dir(filepath.Dir(dir))} {
		if err := syncPath(d); err != nil {
			return err
		}
	}
	u := &undoRecord{Name: j.Name, Seq: j.Seq, Revision: j.To, Version: j.Version, Kind: j.Kind}
	for _, p := range j.Parts {
		u.Parts = append(u.Parts, undoPart{Component: p.Component, Target: p.Target, Undo: p.Undo})
	}
	if scripts != nil {
		// Kept with the installation: its commands run there, now and
		// when it is undone.
		if err := distribution.Materialize(ctx, scripts, in.src, filepath.Join(dir, scriptsDir), distribution.MaterializeOptions{Fence: in.check}); err != nil {
			return fmt.Errorf("scripts: %w", err)
		}
	}
	if prev, ok, err := in.state.readInstalled(j.Name); err != nil {
		return err
	} else if ok {
		u.Prev = &prev
	}
	u.Changes = touched(j)
	for i := range u.Changes {
		c := &u.Changes[i]
		info, err := root.Lstat(c.Path)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue // nothing there
		}
		if err != nil {
			return fmt.Errorf("%s: %w", c.Path, unwrapPath(err))
		}
		mode := info.Mode()
		if c.Now == 0 && !isType(mode, c.Expect) {
			continue // not what TED installed there: the installation leaves it alone
		}
		c.Mode = uint32(mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky))
		switch {
		case mode.IsDir():
			c.Was = distribution.TypeDir
		case mode&fs.ModeSymlink != 0:
			c.Was = distribution.TypeSymlink
			if c.Link, err = root.Readlink(c.Path); err != nil {
				return fmt.Errorf("%s: %w", c.Path, unwrapPath(err))
			}
		case mode.IsRegular():
			c.Was = distribution.TypeFile
			c.ModTime = info.ModTime().UnixNano()
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				c.UID, c.GID = int(st.Uid), int(st.Gid)
			}
			if err := in.keepFile(root, c.Path, info, in.state.backupPath(j.Name, j.Seq, i)); err != nil {
				return fmt.Errorf("%s: keep for rollback: %w", c.Path, err)
			}
		default:
			return fmt.Errorf("%s: a %s that TED did not install is in the way of %s", c.Path, typeName(mode), j.label())
		}
	}
	if err := in.state.writeUndo(u); err != nil {
		return fmt.Errorf("undo record: %w", err)
	}
	return nil
}

// touched lists every path, relative to the root, that installation j
// touches, sorted (so a directory comes before what is in it), with what
// it leaves there.
func touched(j *journalRecord) []change {
	type claim struct {
		t      distribution.EntryType
		part   int
		chain  bool
		expect distribution.EntryType
	}
	now := make(map[string]claim)
	for i, p := range j.Parts {
		for dir := p.Target; dir != "."; dir = path.Dir(dir) {
			if _, ok := now[dir]; !ok {
				now[dir] = claim{t: distribution.TypeDir, part: i, chain: true}
			}
		}
	}
	for i, p := range j.Parts {
		for _, e := range p.New {
			c, ok := now[p.Target+"/"+e.Path]
			if !ok {
				c = claim{t: e.Type, part: i}
			}
			c.chain = false // an entry: its mode is the revision's
			now[p.Target+"/"+e.Path] = c
		}
	}
	for _, list := range [][]pathType{j.Clear, j.Remove} {
		for _, e := range list {
			if _, ok := now[e.Path]; !ok {
				now[e.Path] = claim{part: -1, expect: e.Type} // removed
			}
		}
	}
	out := make([]change, 0, len(now))
	for p, c := range now {
		out = append(out, change{Path: p, Now: c.t, Part: c.part, Chain: c.chain, Expect: c.expect})
	}
	slices.SortFunc(out, func(a, b change) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// keepFile keeps the file at rel (info) as dst: a hard link, as files are
// replaced by rename and never changed in place; a copy when dst is on
// another file system.
func (in *Installer) keepFile(root *os.Root, rel string, info fs.FileInfo, dst string) error {
	if err := in.check(); err != nil {
		return err
	}
	err := os.Link(filepath.Join(in.root, filepath.FromSlash(rel)), dst)
	if err == nil {
		// The name may lead elsewhere than the os.Root resolved it.
		if kept, err := os.Lstat(dst); err != nil || !os.SameFile(kept, info) {
			_ = os.Remove(dst)
			return errors.New("it changed while it was being kept")
		}
		return nil
	}
	if !crossDevice(err) {
		return err
	}
	if !in.copying {
		in.copying = true
		in.log.Info("the state directory is on another file system than the root: files are copied for rollback, not linked", "state", in.state.dir, "root", in.root)
	}
	src, err := root.Open(rel)
	if err != nil {
		return unwrapPath(err)
	}
	defer src.Close()
	return copyTo(src, dst)
}

// crossDevice reports whether a link failed because its two names cannot
// share an inode (another file system, or one without hard links).
func crossDevice(err error) bool {
	return errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EMLINK) || errors.Is(err, syscall.ENOTSUP)
}

// copyTo copies src into a new file dst, synced.
func copyTo(src io.Reader, dst string) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, src)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(dst)
	}
	return err
}

// restore puts the paths of part k of u (-1: the earlier entries that only
// went) back as they were before the installation. Every part of it can be
// repeated, so a rollback interrupted anywhere is finished by running it
// again.
func (in *Installer) restore(ctx context.Context, root *os.Root, u *undoRecord, addedDirs map[string]struct{}, k int) error {
	mine := func(c change) bool { return c.Part == k }
	// Files a crash left half written beside their destination go first.
	if err := sweepTemps(root, u.Changes, mine, in.check); err != nil {
		return err
	}
	// First what the installation put where there was nothing, or
	// something else, goes: deepest first, only what TED put there.
	r := remover{root: root, installedDirs: addedDirs, real: make(map[string]bool), fence: in.check}
	parents := map[string]struct{}{}
	real := realDirs{root: root, seen: map[string]bool{}}
	for _, c := range slices.Backward(u.Changes) {
		if !mine(c) || c.Now == 0 || c.Now == c.Was {
			continue
		}
		if ok, err := real.parents(c.Path); err != nil {
			return fmt.Errorf("%s: %w", c.Path, err)
		} else if !ok {
			continue // not where TED put it any more
		}
		outcome, err := r.remove(pathType{Path: c.Path, Type: c.Now})
		if err != nil {
			return fmt.Errorf("%s: %w", c.Path, err)
		}
		switch {
		case outcome == removed:
			parents[path.Dir(c.Path)] = struct{}{}
		case outcome == kept && c.Was != 0:
			return fmt.Errorf("%s: directory holds files TED did not install, in the way of what was there before %s@%d", c.Path, u.Name, u.Revision)
		case outcome == kept:
			in.log.Info("directory kept: it holds files TED did not install", "dist", u.Name, "rev", u.Revision, "path", c.Path)
		}
	}
	// Then what was there comes back, shallowest first; directories stay
	// writable by us until the end.
	done := 0
	var dirs []change
	for i, c := range u.Changes {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !mine(c) || c.Was == 0 {
			continue
		}
		if err := in.check(); err != nil {
			return err
		}
		// Never through a symlink put on the way since.
		if err := real.make(c.Path); err != nil {
			return fmt.Errorf("%s: %w", c.Path, err)
		}
		var err error
		switch c.Was {
		case distribution.TypeDir:
			err = restoreDir(root, c.Path, c.Chain)
			if !c.Chain {
				dirs = append(dirs, c)
			}
		case distribution.TypeFile:
			err = in.restoreFile(root, c, in.state.backupPath(u.Name, u.Seq, i))
		case distribution.TypeSymlink:
			err = restoreSymlink(root, c)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", c.Path, err)
		}
		parents[path.Dir(c.Path)] = struct{}{}
		if done++; done == 1 {
			if err := in.fault(string(StepRestore) + "+1"); err != nil {
				return err
			}
		}
	}
	for dir := range parents {
		if err := distribution.SyncDir(root, dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	for _, c := range slices.Backward(dirs) {
		info, err := root.Lstat(c.Path)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Path, unwrapPath(err))
		}
		want := fs.FileMode(c.Mode)
		if info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) == want {
			continue // as it was: a chmod could only fail (not our directory)
		}
		if err := in.check(); err != nil {
			return err
		}
		if err := root.Chmod(c.Path, want); err != nil {
			return fmt.Errorf("%s: %w", c.Path, unwrapPath(err))
		}
	}
	return nil
}

// sweepTemps removes the temporary files a crash left in the directories
// of the changes selected.
func sweepTemps(root *os.Root, changes []change, mine func(change) bool, fence func() error) error {
	dirs := map[string]struct{}{}
	for _, c := range changes {
		if !mine(c) {
			continue
		}
		dirs[path.Dir(c.Path)] = struct{}{}
		if c.Now == distribution.TypeDir || c.Was == distribution.TypeDir {
			dirs[c.Path] = struct{}{}
		}
	}
	real := realDirs{root: root, seen: map[string]bool{}}
	for dir := range dirs {
		if ok, err := real.parents(dir + "/x"); err != nil || !ok {
			continue
		}
		if info, err := root.Lstat(dir); err != nil || !info.IsDir() {
			continue
		}
		d, err := root.Open(dir)
		if err != nil {
			continue
		}
		names, err := d.Readdirnames(-1)
		d.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		for _, name := range names {
			if distribution.IsTempName(name) {
				if err := fence(); err != nil {
					return err
				}
				if err := root.Remove(path.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("%s: %w", path.Join(dir, name), unwrapPath(err))
				}
			}
		}
	}
	return nil
}

// realDirs checks that the directories above a path are real directories
// under the root, not symlinks put there since.
type realDirs struct {
	root *os.Root
	seen map[string]bool
}

// parents reports whether every directory above p is a real directory;
// a missing one makes it false.
func (r realDirs) parents(p string) (bool, error) {
	dir := path.Dir(p)
	if dir == "." {
		return true, nil
	}
	if ok, seen := r.seen[dir]; seen {
		return ok, nil
	}
	ok, err := r.parents(dir)
	if err != nil || !ok {
		return false, err
	}
	info, err := r.root.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil // not cached: it may be made
	case err != nil:
		return false, unwrapPath(err)
	}
	r.seen[dir] = info.IsDir()
	return info.IsDir(), nil
}

// make makes sure every directory above p is a real directory, creating a
// missing one, and fails on a symlink or a file.
func (r realDirs) make(p string) error {
	dir := path.Dir(p)
	if dir == "." || r.seen[dir] {
		return nil
	}
	if err := r.make(dir); err != nil {
		return err
	}
	info, err := r.root.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := r.root.Mkdir(dir, 0o755); err != nil {
			return unwrapPath(err)
		}
	case err != nil:
		return unwrapPath(err)
	case !info.IsDir():
		return fmt.Errorf("%s is a %s now; TED does not restore through it", dir, typeName(info.Mode()))
	}
	r.seen[dir] = true
	return nil
}

// restoreDir makes sure a directory is at p, writable by us unless it is
// on the way to a target (chain), which TED leaves as it is.
func restoreDir(root *os.Root, p string, chain bool) error {
	info, err := root.Lstat(p)
	switch {
	case err == nil && info.IsDir():
		if !chain && info.Mode().Perm()&0o700 != 0o700 {
			return unwrapPath(root.Chmod(p, info.Mode().Perm()|0o700))
		}
		return nil
	case err == nil:
		return fmt.Errorf("a %s that TED did not install is where a directory was", typeName(info.Mode()))
	case !errors.Is(err, fs.ErrNotExist):
		return unwrapPath(err)
	}
	return unwrapPath(root.Mkdir(p, 0o700))
}

// restoreFile puts the kept file of c back at c.Path: linked back, or
// copied with its mode, owner and modification time, beside it and
// renamed over whatever is there.
func (in *Installer) restoreFile(root *os.Root, c change, kept string) error {
	keptInfo, err := os.Lstat(kept)
	if err != nil {
		return err
	}
	if there, err := root.Lstat(c.Path); err == nil && os.SameFile(there, keptInfo) {
		return nil // never replaced, or already put back
	}
	if !sameAttrs(keptInfo, c) {
		// A copy (the link was refused at backup): copied back with
		// the mode, owner and time of the file that was there.
		tmp, err := distribution.TempName(c.Path)
		if err != nil {
			return err
		}
		if err := copyBack(root, tmp, kept, c); err != nil {
			_ = root.Remove(tmp)
			return err
		}
		return renameOver(root, tmp, c.Path)
	}
	tmp, err := distribution.TempName(c.Path)
	if err != nil {
		return err
	}
	full := filepath.Join(in.root, filepath.FromSlash(tmp))
	err = os.Link(kept, full)
	switch {
	case err == nil:
		linked, lerr := root.Lstat(tmp)
		if lerr != nil || !os.SameFile(keptInfo, linked) {
			_ = os.Remove(full)
			return fmt.Errorf("%s does not lead inside the root", full)
		}
	case crossDevice(err):
		if err := copyBack(root, tmp, kept, c); err != nil {
			_ = root.Remove(tmp)
			return err
		}
	default:
		return err
	}
	return renameOver(root, tmp, c.Path)
}

// renameOver renames tmp over p, refusing a directory in the way.
func renameOver(root *os.Root, tmp, p string) error {
	if info, err := root.Lstat(p); err == nil && info.IsDir() {
		_ = root.Remove(tmp)
		return errors.New("a directory is in the way")
	}
	if err := root.Rename(tmp, p); err != nil {
		_ = root.Remove(tmp)
		return unwrapPath(err)
	}
	return nil
}

// sameAttrs reports whether a kept file has the mode, owner and
// modification time the change recorded: a hard link has them.
func sameAttrs(info fs.FileInfo, c change) bool {
	if uint32(info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)) != c.Mode || info.ModTime().UnixNano() != c.ModTime {
		return false
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid) == c.UID && int(st.Gid) == c.GID
	}
	return true
}

// copyBack copies the kept file into tmp under the root with c's mode,
// owner (when running as root) and modification time.
func copyBack(root *os.Root, tmp, kept string, c change) error {
	src, err := os.Open(kept)
	if err != nil {
		return err
	}
	defer src.Close()
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return unwrapPath(err)
	}
	_, err = io.Copy(f, src)
	if err == nil && os.Geteuid() == 0 {
		err = f.Chown(c.UID, c.GID)
	}
	if err == nil {
		err = f.Chmod(fs.FileMode(c.Mode))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		mtime := time.Unix(0, c.ModTime)
		err = root.Chtimes(tmp, mtime, mtime)
	}
	return unwrapPath(err)
}

// restoreSymlink puts the symlink of c back.
func restoreSymlink(root *os.Root, c change) error {
	tmp, err := distribution.TempName(c.Path)
	if err != nil {
		return err
	}
	if err := root.Symlink(c.Link, tmp); err != nil {
		return unwrapPath(err)
	}
	return renameOver(root, tmp, c.Path)
}
