package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"ted/distribution"
)

// ErrNotNewer is wrapped by the error of Install for a revision that is not
// newer than the installed one.
var ErrNotNewer = errors.New("refused by anti-rollback")

// AfterFunc runs once a revision's files are installed and committed: it
// verifies them and runs the post-action. If it fails, the installation is
// rolled back. After a crash in it, Recover runs it again.
type AfterFunc func(ctx context.Context, name string, revision uint64) error

// Options tune an Installer.
type Options struct {
	// Log receives what the installer does; nil discards it.
	Log *slog.Logger
	// Keep is how many installations of each distribution can be rolled
	// back, one after the other (keep_revisions); 0 means 3.
	Keep int
	// ActionTimeout bounds each command of a package component (pre,
	// post, undo); 0 means 5 minutes.
	ActionTimeout time.Duration
	// Fence, if set, is called before every change the installer makes,
	// under the root and in the state directory; an error stops the work
	// before that change, and nothing more is changed (a cluster node
	// whose lease ended: subscriber/cluster). Node and Epoch are written
	// into every journal record and the journal's history.
	Fence func() error
	Node  string
	Epoch uint64
	// CheckpointEvery is how often a write records how far it got, so an
	// interrupted one goes on from there (Recover); 0 means 1 s.
	CheckpointEvery time.Duration
}

// Installation is what Install installs: a distribution's revision is one
// part landing at its target; a package's is one part per component
// installed, in order, each with its own target and commands.
type Installation struct {
	Name     string
	Revision uint64
	Version  string
	Kind     distribution.Kind
	Requires []string
	// Parts are written in order: for each, its pre-commands, its files,
	// its post-commands.
	Parts []Part
	// Skipped lists components left out, for the record.
	Skipped []SkippedPart
	// Scripts, if set, is the package's own files: kept with the
	// installation (for as long as it can be undone), the directory its
	// parts' commands run in.
	Scripts *distribution.Manifest
	// Resumable: no pre-action ran before this installation, so if it is
	// interrupted while writing or removing, Recover may carry it on from
	// its last checkpoint instead of rolling it back (see ResumeFunc). Only
	// a distribution's installation (one part, no commands) can be.
	Resumable bool
}

// ResumeFunc gives Recover the installation of revision rev of name again,
// so that an interrupted write goes on where it stopped; an error (the
// revision is no longer stored, say) makes Recover roll it back instead.
type ResumeFunc func(name string, rev uint64) (*Installation, error)

// Part is one part of an Installation.
type Part struct {
	// Component names a package's component; "" for a distribution.
	Component string
	// M holds the part's entries; M.Target is where they land.
	M *distribution.Manifest
	// Pre and Post run around the part's files; Undo runs when the part
	// is rolled back, before its files are put back.
	Pre, Post, Undo []string
}

// Installer extracts revisions under a root directory, keeps a durable
// record of what is installed, and rolls installations back. Its methods
// are safe for concurrent use; extractions and rollbacks run one at a
// time. Only one Installer may use a state directory at a time.
type Installer struct {
	root          string // absolute
	state         stateStore
	src           distribution.ChunkSource
	log           *slog.Logger
	keep          int
	actionTimeout time.Duration

	mu  sync.Mutex // held for the whole of an extraction or rollback
	seq uint64     // the last installation sequence number given out

	now func() time.Time
	// hook, if set, is called at each fault point; an error stops the
	// work there, as a crash would (SetHook).
	hook func(point string) error
	// copying is set once the installer found it must copy files into
	// the undo directory rather than link them (logged once).
	copying         bool
	node            string
	epoch           uint64
	checkpointEvery time.Duration
}

// New returns an installer that extracts under root, reading
// chunks from src, and keeps its records in stateDir (see the package doc).
// Backups cost nothing when stateDir is on the file system of root; on
// another one every file an installation replaces is copied.
//
// It creates the directories if needed. It does not recover interrupted
// work: call Recover at start-up, before any Install or Rollback.
func New(root, stateDir string, src distribution.ChunkSource, opts Options) (*Installer, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Fence != nil {
		// Setting up writes too (directories, left-over temporary files).
		if err := opts.Fence(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrFenced, err)
		}
	}
	keep := opts.Keep
	if keep == 0 {
		keep = 3
	}
	if keep < 1 {
		return nil, fmt.Errorf("installer: keep %d, want at least 1", keep)
	}
	// Absolute, so a later change of working directory cannot move it.
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("installer root %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("installer root %s: %w", root, err)
	}
	absState, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("state directory %s: %w", stateDir, err)
	}
	state := stateStore{dir: absState, fence: opts.Fence}
	if err := state.init(); err != nil {
		return nil, err
	}
	timeout := opts.ActionTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	every := opts.CheckpointEvery
	if every == 0 {
		every = time.Second
	}
	in := &Installer{root: abs, state: state, src: src, log: log, keep: keep, actionTimeout: timeout, now: time.Now,
		node: opts.Node, epoch: opts.Epoch, checkpointEvery: every}
	if in.seq, err = in.lastSeq(); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", stateDir, err)
	}
	return in, nil
}

// SetHook installs a fault-injection hook, for crash tests: it is called
// at each fault point (a step's name right after the step is recorded,
// and "write+1" and "restore+1" after the first file of those steps), and
// an error it returns stops the work there, as a crash would. Nil removes
// it.
func (in *Installer) SetHook(hook func(point string) error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.hook = hook
}

// errFault is wrapped by the error of a fault point whose hook stopped the
// work: it ends there, as a crash would, with nothing undone.
var errFault = errors.New("stopped by the fault hook")

// fault calls the hook at a fault point.
func (in *Installer) fault(point string) error {
	if in.hook == nil {
		return nil
	}
	if err := in.hook(point); err != nil {
		return fmt.Errorf("%w at %s: %w", errFault, point, err)
	}
	return nil
}

// check asks the fence whether the next change may be made.
func (in *Installer) check() error { return in.state.check() }

// lastSeq returns the highest installation sequence number on record.
func (in *Installer) lastSeq() (uint64, error) {
	var last uint64
	for _, sub := range []string{installedDir, journalDir} {
		names, err := in.state.names(sub)
		if err != nil {
			return 0, err
		}
		for _, name := range names {
			if sub == installedDir {
				rec, ok, err := in.state.readInstalled(name)
				if err != nil {
					return 0, err
				}
				if ok {
					last = max(last, rec.Seq)
				}
				continue
			}
			j, ok, err := in.state.readJournal(name)
			if err != nil {
				return 0, err
			}
			if ok {
				last = max(last, j.Seq)
			}
		}
	}
	names, err := in.state.undoNames()
	if err != nil {
		return 0, err
	}
	for _, name := range names {
		seqs, err := in.state.undoSeqs(name)
		if err != nil {
			return 0, err
		}
		if len(seqs) > 0 {
			last = max(last, seqs[len(seqs)-1])
		}
	}
	return last, nil
}

// Installed returns the installed revisions, sorted by name.
func (in *Installer) Installed() ([]Installed, error) {
	names, err := in.state.names(installedDir)
	if err != nil {
		return nil, fmt.Errorf("list installed revisions: %w", err)
	}
	out := make([]Installed, 0, len(names))
	for _, name := range names {
		rec, ok, err := in.state.readInstalled(name)
		if err != nil {
			return nil, fmt.Errorf("installed revision of %s: %w", name, err)
		}
		if ok { // else removed since the listing
			out = append(out, rec.public())
		}
	}
	return out, nil
}

// InstalledRevision returns the installed revision of a distribution, and
// false if none is.
func (in *Installer) InstalledRevision(name string) (Installed, bool, error) {
	if err := distribution.ValidName("distribution name", name); err != nil {
		return Installed{}, false, err
	}
	rec, ok, err := in.state.readInstalled(name)
	if err != nil || !ok {
		if err != nil {
			err = fmt.Errorf("installed revision of %s: %w", name, err)
		}
		return Installed{}, false, err
	}
	return rec.public(), true, nil
}

// Pending returns the extractions and rollbacks that were started and not
// finished, sorted by name: interrupted by a crash and not yet recovered,
// or stopped by an error that recovery could not get past either.
func (in *Installer) Pending() ([]JournalEntry, error) {
	names, err := in.state.names(journalDir)
	if err != nil {
		return nil, fmt.Errorf("list pending extractions: %w", err)
	}
	var out []JournalEntry
	for _, name := range names {
		j, ok, err := in.state.readJournal(name)
		if err != nil {
			return nil, fmt.Errorf("pending extraction of %s: %w", name, err)
		}
		if ok {
			out = append(out, j.public())
		}
	}
	return out, nil
}

// Install extracts revision m (already verified against the publisher's
// keys) into root/TARGET, records it as installed, then runs after (if not
// nil). A revision that is not newer than the installed one is refused
// with an error wrapping ErrNotNewer, before anything is touched.
//
// If anything fails on the way, including after, the installation is
// rolled back: the target is then exactly as it was, and the error says
// so. If ctx ends first, the journal stays and Recover rolls it back at
// the next start-up (or runs after again, if the commit was reached).
func (in *Installer) Install(ctx context.Context, m *distribution.Manifest, after AfterFunc) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("install: %w", err) // names the revision
	}
	return in.InstallParts(ctx, &Installation{Name: m.Name, Revision: m.Revision, Version: m.Version,
		Kind: distribution.KindFiles, Requires: m.Requires, Parts: []Part{{M: m}}}, after)
}

// InstallParts is Install for an installation of several parts (a
// package's components). A part that fails, or its pre- or post-command,
// rolls back the whole installation: the undo commands of every part
// whose pre-command started run, last part first, and every file goes
// back.
func (in *Installer) InstallParts(ctx context.Context, inst *Installation, after AfterFunc) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.install(ctx, inst, after); err != nil {
		return fmt.Errorf("install %s@%d: %w", inst.Name, inst.Revision, err)
	}
	return nil
}

// unfinished is the after-step of work that recovery did not finish
// before another Install or Rollback of the same distribution: it is
// rolled back, as its after-step may not have succeeded.
func unfinished(context.Context, string, uint64) error {
	return errors.New("its after-step (verification, post-action) did not finish")
}

// settle finishes or undoes whatever a journal of name still records.
func (in *Installer) settle(ctx context.Context, name string) error {
	j, ok, err := in.state.readJournal(name)
	if err != nil || !ok {
		return err
	}
	in.log.Warn("finishing earlier work first", "dist", name, "rev", j.To, "step", j.Step)
	if err := in.recover(ctx, &j, unfinished, nil); err != nil {
		return fmt.Errorf("earlier work on %s (step %s): %w", j.label(), j.Step, err)
	}
	return nil
}

func (in *Installer) install(ctx context.Context, inst *Installation, after AfterFunc) error {
	if err := distribution.ValidName("distribution name", inst.Name); err != nil {
		return err
	}
	if inst.Kind != distribution.KindPackage && len(inst.Parts) != 1 {
		return fmt.Errorf("a distribution installs as one part, not %d", len(inst.Parts))
	}
	for _, p := range inst.Parts {
		if err := p.M.Validate(); err != nil {
			return fmt.Errorf("component %s: %w", p.Component, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err // stopping: whatever the journal holds waits
	}
	if j, ok, err := in.state.readJournal(inst.Name); err == nil && ok && j.To == inst.Revision && inst.Resumable {
		// The same revision, interrupted: carried on if it can be.
		if carried := in.resumable(&j, func(string, uint64) (*Installation, error) { return inst, nil }); carried != nil {
			return in.run(ctx, &j, carried, after)
		}
	}
	if err := in.settle(ctx, inst.Name); err != nil {
		return err
	}
	installed, haveInstalled, err := in.state.readInstalled(inst.Name)
	if err != nil {
		return err
	}
	if haveInstalled && inst.Revision <= installed.Revision {
		if inst.Revision == installed.Revision {
			return fmt.Errorf("%s@%d is already installed: %w", inst.Name, inst.Revision, ErrNotNewer)
		}
		return fmt.Errorf("%s@%d is older than the installed %s@%d: %w", inst.Name, inst.Revision, inst.Name, installed.Revision, ErrNotNewer)
	}

	root, err := os.OpenRoot(in.root)
	if err != nil {
		return err
	}
	defer root.Close()
	in.seq++
	j := &journalRecord{
		Name: inst.Name, From: installed.Revision, To: inst.Revision, Version: inst.Version, Kind: inst.Kind,
		Step: StepBegin, Started: in.now().UnixNano(), Seq: in.seq, Requires: inst.Requires,
		Skipped: inst.Skipped, Scripts: inst.Scripts != nil,
		Resumable: inst.Resumable && inst.Kind != distribution.KindPackage && len(inst.Parts) == 1 && len(inst.Parts[0].Pre) == 0,
	}
	for _, p := range inst.Parts {
		j.Parts = append(j.Parts, journalPart{Component: p.Component, Target: p.M.Target, New: entriesOf(p.M),
			Pre: p.Pre, Post: p.Post, Undo: p.Undo})
	}
	if err := overlapping(j.Parts); err != nil {
		return err
	}
	// What the installed revision put there, its targets included: a
	// target no part has any more goes too, if empty, and a symlink put in
	// its place stops every removal under it.
	prev := installed.entries()
	for _, p := range installed.Parts {
		prev = append(prev, pathType{Path: p.Target, Type: distribution.TypeDir})
	}
	j.Clear, j.Remove = plan(prev, j.Parts)
	// What another installation also lists stays: it is still installed.
	others, err := in.otherPaths(inst.Name)
	if err != nil {
		return err
	}
	j.Remove = slices.DeleteFunc(j.Remove, func(e pathType) bool { return others[e.Path] })
	for _, p := range j.Parts {
		// Refuse a target that leads out of the root (through a symlink),
		// or that is a file TED did not put there, before anything is
		// recorded or written.
		info, err := root.Stat(p.Target)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("target %s: %w", p.Target, unwrapPath(err))
		}
		// A symlink on the way would put the files elsewhere than the
		// records say, where a rollback could not follow them.
		for dir := p.Target; dir != "."; dir = path.Dir(dir) {
			if l, err := root.Lstat(dir); err == nil && l.Mode()&fs.ModeSymlink != 0 {
				return fmt.Errorf("target %s: %s is a symlink; TED installs into real directories only", p.Target, dir)
			}
		}
		if info != nil && !info.IsDir() && !slices.ContainsFunc(j.Clear, func(e pathType) bool { return e.Path == p.Target }) {
			return fmt.Errorf("target %s is a %s that TED did not install", p.Target, typeName(info.Mode()))
		}
	}
	if err := in.record(j); err != nil {
		return err
	}
	return in.run(ctx, j, inst, after)
}

// otherPaths returns every path, relative to the root, that an installed
// revision other than name's lists.
func (in *Installer) otherPaths(name string) (map[string]bool, error) {
	names, err := in.state.names(installedDir)
	if err != nil {
		return nil, err
	}
	paths := map[string]bool{}
	for _, other := range names {
		if other == name {
			continue
		}
		rec, ok, err := in.state.readInstalled(other)
		if err != nil {
			return nil, fmt.Errorf("installed revision of %s: %w", other, err)
		}
		if !ok {
			continue
		}
		for _, e := range rec.entries() {
			paths[e.Path] = true
		}
		for _, p := range rec.Parts {
			for dir := p.Target; dir != "."; dir = path.Dir(dir) {
				paths[dir] = true
			}
		}
	}
	return paths, nil
}

// overlapping refuses parts that would install the same path twice, or a
// directory of one where another has a file.
func overlapping(parts []journalPart) error {
	type claim struct {
		part int
		t    distribution.EntryType
	}
	seen := map[string]claim{}
	for i, p := range parts {
		add := func(path string, t distribution.EntryType) error {
			c, ok := seen[path]
			if !ok {
				seen[path] = claim{i, t}
				return nil
			}
			if c.t == distribution.TypeDir && t == distribution.TypeDir {
				return nil
			}
			return fmt.Errorf("components %s and %s both install %s", parts[c.part].Component, p.Component, path)
		}
		for dir := p.Target; dir != "."; dir = path.Dir(dir) {
			if err := add(dir, distribution.TypeDir); err != nil {
				return err
			}
		}
		for _, e := range p.New {
			if err := add(p.Target+"/"+e.Path, e.Type); err != nil {
				return err
			}
		}
	}
	return nil
}

// Recover finishes every extraction and rollback that a crash
// interrupted, so that each target is then exactly the old or the new
// revision: an extraction interrupted before its commit is rolled back,
// one interrupted after it is completed and after (nil: nothing to run)
// runs again; a rollback is finished. Work that cannot be finished keeps
// its journal, and its error, naming the distribution and revision, is
// joined to the result; the others are still finished. Undo directories
// past what Keep needs are removed. With nothing pending, Recover changes
// nothing.
//
// With resume set, an extraction interrupted while writing or removing
// that was Resumable goes on from its last checkpoint (at most about one
// CheckpointEvery of writing is done again) instead of being rolled back.
func (in *Installer) Recover(ctx context.Context, after AfterFunc, resume ResumeFunc) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	names, err := in.state.names(journalDir)
	if err != nil {
		return fmt.Errorf("list pending extractions: %w", err)
	}
	var errs []error
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		j, ok, err := in.state.readJournal(name)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("recover %s: %w", name, err))
		case ok:
			if err := in.recover(ctx, &j, after, resume); err != nil {
				errs = append(errs, fmt.Errorf("recover %s: %w", j.label(), err))
			}
		}
	}
	undoNames, err := in.state.undoNames()
	if err != nil {
		errs = append(errs, fmt.Errorf("list undo records: %w", err))
	}
	for _, name := range undoNames {
		if err := in.prune(name); err != nil {
			errs = append(errs, fmt.Errorf("prune undo records of %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func (in *Installer) recover(ctx context.Context, j *journalRecord, after AfterFunc, resume ResumeFunc) error {
	in.log.Info("recovering interrupted work", "dist", j.Name, "from", j.From, "to", j.To, "step", j.Step, "by", j.Node, "epoch", j.Epoch)
	switch j.Step {
	case StepBegin, StepBackup:
		// Nothing under the root has changed yet.
		return in.discard(j)
	case StepWrite, StepRemove:
		if err := ctx.Err(); err != nil {
			return err // stopping: neither carried on nor undone now
		}
		if inst := in.resumable(j, resume); inst != nil {
			return in.run(ctx, j, inst, after)
		}
		return in.undo(ctx, j, nil, 0)
	case StepCommit, StepPost:
		return in.run(ctx, j, nil, after)
	case StepRestore, StepUndone:
		_, err := in.runRollback(ctx, j) // failed undo commands are logged
		return err
	}
	return fmt.Errorf("journal has unknown step %q", j.Step)
}

// resumable returns the installation to carry j on with, or nil if j must
// be rolled back: it was not Resumable, or its revision cannot be had
// again as it was planned.
func (in *Installer) resumable(j *journalRecord, resume ResumeFunc) *Installation {
	if !j.Resumable || resume == nil || len(j.Parts) != 1 || (j.Step != StepWrite && j.Step != StepRemove) {
		return nil
	}
	inst, err := resume(j.Name, j.To)
	if err == nil && (len(inst.Parts) != 1 || inst.Parts[0].M.Target != j.Parts[0].Target ||
		len(inst.Parts[0].M.Entries) != len(j.Parts[0].New)) {
		err = errors.New("the revision differs from the one planned")
	}
	if err != nil {
		in.log.Warn("interrupted extraction cannot go on; rolling it back", "dist", j.Name, "rev", j.To, "err", err)
		return nil
	}
	if j.Step == StepWrite {
		// A file being written when the work stopped left a temporary
		// file beside its destination.
		root, err := os.OpenRoot(in.root)
		if err != nil {
			return nil
		}
		defer root.Close()
		u, err := in.state.readUndo(j.Name, j.Seq)
		if err == nil {
			err = sweepTemps(root, u.Changes, func(change) bool { return true }, in.check)
		}
		if err != nil {
			in.log.Warn("interrupted extraction cannot go on; rolling it back", "dist", j.Name, "rev", j.To, "err", err)
			return nil
		}
	}
	in.log.Info("carrying the interrupted extraction on from its last checkpoint", "dist", j.Name, "rev", j.To,
		"step", j.Step, "written", j.Written, "of", len(j.Parts[0].New), "stopped_by", j.Node, "stopped_epoch", j.Epoch)
	return inst
}

// record writes the journal durably, then lets the test hook stop there.
func (in *Installer) record(j *journalRecord) error {
	j.Epoch, j.Node = in.epoch, in.node
	if err := in.state.writeJournal(j); err != nil {
		return fmt.Errorf("record step %s: %w", j.Step, err)
	}
	return in.fault(string(j.Step))
}

// run carries an extraction on from its recorded step, which may have been
// partly done already. inst is needed only up to StepWrite. Whatever fails
// before the installation is finished rolls it back, unless ctx ended.
func (in *Installer) run(ctx context.Context, j *journalRecord, inst *Installation, after AfterFunc) error {
	root, err := os.OpenRoot(in.root)
	if err != nil {
		return err
	}
	defer root.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err // the journal stays; Recover takes it from here
		}
		var stepErr error
		switch j.Step {
		case StepBackup:
			stepErr = in.backup(ctx, root, j, inst.Scripts)
		case StepWrite:
			stepErr = in.write(ctx, root, j, inst)
		case StepRemove:
			stepErr = in.removeAll(root, j, j.Remove, false)
		case StepCommit:
			stepErr = in.commit(j)
		case StepPost:
			if after != nil {
				stepErr = after(ctx, j.Name, j.To)
			}
			if stepErr == nil {
				return in.finish(j)
			}
		}
		if stepErr != nil {
			stepErr = fmt.Errorf("%s: %w", j.Step, stepErr)
			if ctx.Err() != nil || errors.Is(stepErr, errFault) || errors.Is(stepErr, ErrFenced) {
				return stepErr
			}
			if j.Step == StepBackup {
				return errors.Join(stepErr, in.discard(j))
			}
			return in.undo(ctx, j, stepErr, 0)
		}
		next, ok := j.Step.next()
		if !ok {
			return fmt.Errorf("journal has unknown step %q", j.Step)
		}
		j.Step = next
		if err := in.record(j); err != nil {
			return err
		}
	}
}

// write clears what stands in the way of the new revision, then writes
// each part: its pre-commands, its files, its post-commands. Before each
// part's pre-commands the journal records that the part is under way.
func (in *Installer) write(ctx context.Context, root *os.Root, j *journalRecord, inst *Installation) error {
	if err := in.removeAll(root, j, j.Clear, true); err != nil {
		return err
	}
	// A write carried on after an interruption starts at its checkpoint.
	start := j.Part
	for i, p := range j.Parts {
		if i < start {
			continue
		}
		if i > start {
			j.Part, j.Written = i, 0
			if err := in.record(j); err != nil {
				return err
			}
		}
		run := in.partActions(j, i)
		if err := run.Run(ctx, "pre", p.Pre); err != nil {
			return err
		}
		if err := in.writePart(ctx, root, j, p, inst.Parts[i].M); err != nil {
			if p.Component != "" {
				err = fmt.Errorf("component %s: %w", p.Component, err)
			}
			return err
		}
		if err := run.Run(ctx, "post", p.Post); err != nil {
			return err
		}
	}
	return nil
}

// partActions returns where the commands of part i run: the package's
// scripts directory if it has one, else the part's target.
func (in *Installer) partActions(j *journalRecord, i int) Actions {
	p := j.Parts[i]
	target := filepath.Join(in.root, filepath.FromSlash(p.Target))
	dir := target
	if j.Scripts {
		dir = filepath.Join(in.state.undoPath(j.Name, j.Seq), scriptsDir)
	} else if _, err := os.Stat(target); err != nil {
		dir = in.root // a first installation: the target is not there yet
	}
	return Actions{Fence: in.check, Name: j.Name, Revision: j.To, Version: j.Version, Component: p.Component,
		Dir: dir, Target: target, Timeout: in.actionTimeout, Log: in.log}
}

// writePart writes one part's files over its target.
func (in *Installer) writePart(ctx context.Context, root *os.Root, j *journalRecord, p journalPart, m *distribution.Manifest) error {
	if err := in.check(); err != nil {
		return err
	}
	if err := root.MkdirAll(p.Target, 0o755); err != nil {
		return fmt.Errorf("target %s: %w", p.Target, unwrapPath(err))
	}
	// The target's own entry, perhaps just created, is in its parents:
	// durable before any checkpoint says files under it are in place.
	for dir := path.Dir(p.Target); ; dir = path.Dir(dir) {
		if err := distribution.SyncDir(root, dir); err != nil {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
		if dir == "." {
			break
		}
	}
	// Materialize opens the target by name, not through our os.Root: make
	// sure the name leads where the os.Root resolved it, inside the root.
	dest := filepath.Join(in.root, filepath.FromSlash(p.Target))
	inside, err := root.Stat(p.Target)
	if err != nil {
		return fmt.Errorf("target %s: %w", p.Target, unwrapPath(err))
	}
	if byName, err := os.Stat(dest); err != nil || !os.SameFile(inside, byName) {
		return fmt.Errorf("target %s: %s does not lead to it inside the root", p.Target, dest)
	}
	var faultErr error
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	opts := distribution.MaterializeOptions{Progress: func(pr distribution.BuildProgress) {
		if pr.Files == 1 {
			if faultErr = in.fault(string(StepWrite) + "+1"); faultErr != nil {
				cancel(faultErr)
			}
		}
	}, Fence: in.check, From: j.Written}
	if j.Resumable {
		// How far the write got, so an interrupted one goes on from
		// there rather than from the start.
		opts.CheckpointEvery = in.checkpointEvery
		opts.Checkpoint = func(next int) error {
			j.Written = next
			return in.record(j)
		}
	}
	if err := distribution.Materialize(ctx, m, in.src, dest, opts); err != nil {
		if faultErr != nil {
			return faultErr
		}
		return err
	}
	return nil // Materialize syncs the directories inside the target
}

// commit writes the installed record; the journal moves on to the
// after-step.
func (in *Installer) commit(j *journalRecord) error {
	rec := &installedRecord{Name: j.Name, Revision: j.To, Version: j.Version, Kind: j.Kind,
		Installed: in.now().UnixNano(), Seq: j.Seq, Requires: j.Requires, Skipped: j.Skipped}
	for _, p := range j.Parts {
		rec.Parts = append(rec.Parts, partRecord{Component: p.Component, Target: p.Target, Entries: p.New, Post: p.Post})
	}
	if err := in.state.writeInstalled(rec); err != nil {
		return err
	}
	in.log.Info("installed", "dist", j.Name, "rev", j.To, "version", j.Version, "target", j.target())
	return nil
}

// finish ends an installation whose after-step succeeded, and drops the
// undo records past what Keep needs.
func (in *Installer) finish(j *journalRecord) error {
	if err := in.state.removeJournal(j); err != nil {
		return fmt.Errorf("finish: %w", err)
	}
	if err := in.prune(j.Name); err != nil {
		// Only space is at stake; the next start-up prunes again.
		in.log.Warn("prune undo records", "dist", j.Name, "err", err)
	}
	return nil
}

// removeAll removes earlier entries (deepest first) that are still what
// TED put there. A directory that holds anything else stays, unless strict:
// then it is in the way of the new revision, which is an error.
func (in *Installer) removeAll(root *os.Root, j *journalRecord, list []pathType, strict bool) error {
	if len(list) == 0 {
		return nil
	}
	r := remover{root: root, installedDirs: installedDirs(j), real: make(map[string]bool), fence: in.check}
	parents := make(map[string]struct{})
	for _, e := range list {
		outcome, err := r.remove(e)
		if err != nil {
			return fmt.Errorf("%s: %w", e.Path, err)
		}
		switch {
		case outcome == removed:
			in.log.Debug("removed", "dist", j.Name, "rev", j.To, "path", e.Path)
			parents[path.Dir(e.Path)] = struct{}{}
		case outcome == kept && strict:
			return fmt.Errorf("%s: directory holds files TED did not install, in the way of %s@%d", e.Path, j.Name, j.To)
		case outcome == kept:
			in.log.Info("directory kept: it holds files TED did not install", "dist", j.Name, "rev", j.To, "path", e.Path)
		default:
			in.log.Debug("not removed: gone or replaced", "dist", j.Name, "rev", j.To, "path", e.Path)
		}
	}
	// A removal is durable only once its directory is synced; else a crash
	// after the commit could bring back a file no record knows.
	for dir := range parents {
		if err := distribution.SyncDir(root, dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return nil
}

// remover removes entries TED installed, and nothing else.
type remover struct {
	root *os.Root
	// installedDirs are the directories TED installed; a path under one
	// that is no longer a real directory (now a symlink, say) is not where
	// TED put it.
	installedDirs map[string]struct{}
	real          map[string]bool
	fence         func() error
}

// removal is what remove did with an entry.
type removal int

const (
	removed removal = iota
	absent          // gone already, or replaced by something TED did not install
	kept            // a directory that is not empty
)

// remove removes e if it is there, where TED put it, and of its recorded
// type; a directory only if it is empty.
func (r *remover) remove(e pathType) (removal, error) {
	if !r.realParents(e.Path) {
		return absent, nil
	}
	info, err := r.root.Lstat(e.Path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return absent, nil // removed before a crash, or by someone else
	}
	if err != nil {
		return 0, unwrapPath(err)
	}
	if !isType(info.Mode(), e.Type) {
		return absent, nil
	}
	if err := r.fence(); err != nil {
		return 0, err
	}
	err = r.root.Remove(e.Path)
	if errors.Is(err, fs.ErrPermission) {
		err = r.removeFromReadOnly(e.Path)
	}
	if err == nil {
		return removed, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return absent, nil
	}
	if e.Type == distribution.TypeDir {
		if empty, eerr := isEmptyDir(r.root, e.Path); eerr == nil && !empty {
			return kept, nil
		}
	}
	return 0, unwrapPath(err)
}

// removeFromReadOnly removes p from a directory TED made read-only (for a
// subscriber not running as root), giving the directory its mode back
// after.
func (r *remover) removeFromReadOnly(p string) error {
	dir := path.Dir(p)
	info, err := r.root.Lstat(dir)
	if err != nil || !info.IsDir() || info.Mode().Perm()&0o300 == 0o300 {
		return fs.ErrPermission // not why it failed
	}
	mode := info.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if err := r.root.Chmod(dir, mode|0o300); err != nil {
		return err
	}
	err = r.root.Remove(p)
	if cerr := r.root.Chmod(dir, mode); err == nil {
		err = cerr
	}
	return err
}

// realParents reports whether every directory TED installed above p is
// still a real directory.
func (r *remover) realParents(p string) bool {
	dir := path.Dir(p)
	if dir == "." {
		return true
	}
	if ok, seen := r.real[dir]; seen {
		return ok
	}
	ok := r.realParents(dir)
	if _, installed := r.installedDirs[dir]; ok && installed {
		info, err := r.root.Lstat(dir)
		ok = err == nil && info.IsDir()
	}
	r.real[dir] = ok
	return ok
}

// installedDirs returns the directories, relative to the root, that an
// extraction's records say TED installed.
func installedDirs(j *journalRecord) map[string]struct{} {
	dirs := make(map[string]struct{})
	for _, p := range j.Parts {
		for _, e := range p.New {
			if e.Type == distribution.TypeDir {
				dirs[p.Target+"/"+e.Path] = struct{}{}
			}
		}
	}
	for _, list := range [][]pathType{j.Clear, j.Remove} {
		for _, e := range list {
			if e.Type == distribution.TypeDir {
				dirs[e.Path] = struct{}{}
			}
		}
	}
	return dirs
}

// plan returns what of the earlier entries prev (relative to the root) must
// go for the new parts: clear, the entries in their way (a directory where
// a part has a file or a symlink, with everything under it, or a file where
// a part's target needs a directory), removed before writing; and remove,
// the entries no part names, removed after writing. Both are ordered
// deepest first.
func plan(prev []pathType, parts []journalPart) (clear, remove []pathType) {
	want := make(map[string]distribution.EntryType)
	targetChain := make(map[string]struct{})
	for _, p := range parts {
		for _, e := range p.New {
			want[p.Target+"/"+e.Path] = e.Type
		}
		// The target and its parents are directories the part needs.
		for dir := p.Target; dir != "."; dir = path.Dir(dir) {
			want[dir] = distribution.TypeDir
			targetChain[dir] = struct{}{}
		}
	}
	seen := make(map[pathType]struct{}, len(prev))
	blocked := make(map[string]struct{})
	for _, e := range prev {
		if _, dup := seen[e]; dup {
			continue
		}
		seen[e] = struct{}{}
		wantType, named := want[e.Path]
		_, inChain := targetChain[e.Path]
		switch {
		case !named:
			remove = append(remove, e)
		case e.Type == distribution.TypeDir && wantType != distribution.TypeDir:
			clear = append(clear, e)
			blocked[e.Path] = struct{}{}
		case e.Type != distribution.TypeDir && inChain:
			// Materialize replaces a file with a directory for an entry,
			// but the target itself is made here.
			clear = append(clear, e)
		}
	}
	if len(blocked) > 0 {
		// Everything under a directory in the way goes with it.
		remove = slices.DeleteFunc(remove, func(e pathType) bool {
			for dir := path.Dir(e.Path); dir != "."; dir = path.Dir(dir) {
				if _, ok := blocked[dir]; ok {
					clear = append(clear, e)
					return true
				}
			}
			return false
		})
	}
	// In reverse order every path comes before its parents.
	deepestFirst := func(a, b pathType) int {
		if c := strings.Compare(b.Path, a.Path); c != 0 {
			return c
		}
		return int(a.Type) - int(b.Type)
	}
	slices.SortFunc(clear, deepestFirst)
	slices.SortFunc(remove, deepestFirst)
	return clear, remove
}

// entriesOf lists the entries of m, relative to its target.
func entriesOf(m *distribution.Manifest) []pathType {
	out := make([]pathType, len(m.Entries))
	for i, e := range m.Entries {
		out[i] = pathType{Path: e.Path, Type: e.Type}
	}
	return out
}

// appendUnder appends entries relative to target as paths relative to the
// root.
func appendUnder(dst []pathType, target string, entries []pathType) []pathType {
	for _, e := range entries {
		dst = append(dst, pathType{Path: target + "/" + e.Path, Type: e.Type})
	}
	return dst
}

// isType reports whether a file of mode is of the entry type t.
func isType(mode fs.FileMode, t distribution.EntryType) bool {
	switch t {
	case distribution.TypeFile:
		return mode.IsRegular()
	case distribution.TypeDir:
		return mode.IsDir()
	case distribution.TypeSymlink:
		return mode&fs.ModeSymlink != 0
	}
	return false
}

func typeName(mode fs.FileMode) string {
	switch {
	case mode.IsRegular():
		return "file"
	case mode.IsDir():
		return "directory"
	case mode&fs.ModeSymlink != 0:
		return "symlink"
	}
	return "special file (" + mode.Type().String() + ")"
}

func isEmptyDir(root *os.Root, dir string) (bool, error) {
	d, err := root.Open(dir)
	if err != nil {
		return false, err
	}
	defer d.Close()
	_, err = d.ReadDir(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// unwrapPath drops the *PathError wrapper, whose path is relative to the
// root and would repeat the one the caller names.
func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}
