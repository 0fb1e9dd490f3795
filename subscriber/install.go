// Package subscriber is the subscriber side of TED: it installs the
// revisions of the distributions a node subscribes to under a root
// directory.
//
// The Installer extracts a revision crash-safely (DESIGN.md §9). Each
// revision of a distribution lands in root/TARGET with overlay semantics:
// files land under the target, entries that the previously installed
// revision installed and this one dropped are removed (a dropped directory
// only once it is empty), and files TED never installed are never touched.
// Every step (begin, write, remove, commit) is recorded durably in a
// journal before it happens, and the installer keeps its own record of what
// each distribution has installed, so it never depends on the store still
// holding an old manifest.
//
// Recovery rolls forward: Recover completes an interrupted extraction, so
// that the target is then exactly the new revision. Rolling back to the old
// revision instead, and keeping backups of overwritten and removed files,
// comes with the rollback work (issue 5); until then a file that a revision
// overwrites or drops is gone.
//
// The installer must never write or remove anything outside the root (all
// work goes through os.Root), never remove what it did not install, never
// install a revision that is not newer than the installed one (anti-rollback),
// and never report a revision installed before every file of it is durable.
package subscriber

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

// Installer extracts revisions under a root directory and keeps a durable
// record of what is installed. Its methods are safe for concurrent use;
// extractions run one at a time. Only one Installer may use a state
// directory at a time.
type Installer struct {
	root  string // absolute
	state stateStore
	src   distribution.ChunkSource
	log   *slog.Logger

	mu sync.Mutex // held for the whole of an extraction

	now func() time.Time
	// hook, if set, is called right after each step is recorded; an error
	// stops the extraction there, as a crash would (tests).
	hook func(Step) error
}

// NewInstaller returns an installer that extracts under root, reading
// chunks from src, and keeps its records in stateDir:
//
//	stateDir/installed/NAME.cbor   what revision NAME installed, and every entry of it
//	stateDir/journal/NAME.cbor     the extraction of NAME under way, if any
//
// It creates the directories if needed. It does not recover interrupted
// extractions: call Recover at start-up, before any Install.
func NewInstaller(root, stateDir string, src distribution.ChunkSource, log *slog.Logger) (*Installer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
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
	state := stateStore{dir: absState}
	if err := state.init(); err != nil {
		return nil, err
	}
	return &Installer{root: abs, state: state, src: src, log: log, now: time.Now}, nil
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

// Pending returns the extractions that were started and not committed,
// sorted by name: interrupted by a crash, or failed.
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
// keys) into root/TARGET and records it as installed. A revision that is
// not newer than the installed one is refused with an error wrapping
// ErrNotNewer, before anything is touched.
//
// If an extraction of the same distribution is pending, Install of the same
// revision completes it, and Install of another newer revision replaces it:
// what either earlier revision installed and m does not name is removed.
// An Install that fails leaves its journal in place (see Pending).
func (in *Installer) Install(ctx context.Context, m *distribution.Manifest) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("install: %w", err) // names the revision
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.install(ctx, m); err != nil {
		return fmt.Errorf("install %s@%d: %w", m.Name, m.Revision, err)
	}
	return nil
}

func (in *Installer) install(ctx context.Context, m *distribution.Manifest) error {
	installed, haveInstalled, err := in.state.readInstalled(m.Name)
	if err != nil {
		return err
	}
	pending, havePending, err := in.state.readJournal(m.Name)
	if err != nil {
		return err
	}
	if havePending && haveInstalled && installed.Revision >= pending.To {
		// The crash came after the commit, before the journal went.
		if err := in.state.removeJournal(m.Name); err != nil {
			return err
		}
		havePending = false
	}
	if haveInstalled && m.Revision <= installed.Revision {
		if m.Revision == installed.Revision {
			return fmt.Errorf("%s@%d is already installed: %w", m.Name, m.Revision, ErrNotNewer)
		}
		return fmt.Errorf("%s@%d is older than the installed %s@%d: %w", m.Name, m.Revision, m.Name, installed.Revision, ErrNotNewer)
	}
	if havePending && pending.To == m.Revision {
		if pending.Target != m.Target {
			return fmt.Errorf("the pending extraction has target %q, the manifest %q", pending.Target, m.Target)
		}
		in.log.Info("resuming extraction", "dist", m.Name, "rev", m.Revision, "step", pending.Step)
		return in.run(ctx, &pending, m)
	}

	root, err := os.OpenRoot(in.root)
	if err != nil {
		return err
	}
	defer root.Close()
	// Refuse a target that leads out of the root (through a symlink)
	// before anything is recorded or written.
	targetInfo, err := root.Stat(m.Target)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("target %s: %w", m.Target, unwrapPath(err))
	}

	// What is on disk of this distribution: the installed revision, and
	// whatever a pending extraction may have written or not yet removed.
	var prev []pathType
	if haveInstalled {
		prev = appendUnder(prev, installed.Target, installed.Entries)
	}
	if havePending {
		prev = appendUnder(prev, pending.Target, pending.New)
		prev = append(prev, pending.Clear...)
		prev = append(prev, pending.Remove...)
	}
	j := &journalRecord{
		Name: m.Name, From: installed.Revision, To: m.Revision, Version: m.Version, Target: m.Target,
		Step: StepBegin, Started: in.now().UnixNano(), New: entriesOf(m),
	}
	j.Clear, j.Remove = plan(prev, m)
	if targetInfo != nil && !targetInfo.IsDir() && !slices.ContainsFunc(j.Clear, func(e pathType) bool { return e.Path == m.Target }) {
		return fmt.Errorf("target %s is a %s that TED did not install", m.Target, typeName(targetInfo.Mode()))
	}
	if havePending {
		in.log.Info("replacing pending extraction", "dist", m.Name, "rev", m.Revision, "pending", pending.To)
	}
	if err := in.record(j); err != nil {
		return err
	}
	return in.run(ctx, j, m)
}

// Recover completes every pending extraction, so that each target is then
// exactly the revision its extraction was installing. load returns a
// (verified) manifest of a revision; it is needed only for an extraction
// interrupted before its files were all written. An extraction whose
// manifest or chunks are no longer available keeps its journal, and its
// error, naming the distribution and revision, is joined to the result;
// the others are still completed. With nothing pending, Recover does
// nothing.
func (in *Installer) Recover(ctx context.Context, load func(name string, rev uint64) (*distribution.Manifest, error)) error {
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
			if err := in.recover(ctx, &j, load); err != nil {
				errs = append(errs, fmt.Errorf("recover %s: %w", j.label(), err))
			}
		}
	}
	return errors.Join(errs...)
}

func (in *Installer) recover(ctx context.Context, j *journalRecord, load func(string, uint64) (*distribution.Manifest, error)) error {
	installed, ok, err := in.state.readInstalled(j.Name)
	if err != nil {
		return err
	}
	if ok && installed.Revision >= j.To {
		// The crash came after the commit, before the journal went.
		return in.state.removeJournal(j.Name)
	}
	var m *distribution.Manifest
	if j.Step == StepBegin || j.Step == StepWrite {
		m, err = load(j.Name, j.To)
		if err == nil && m == nil {
			err = errors.New("no manifest")
		}
		if err != nil {
			return fmt.Errorf("load manifest: %w", err)
		}
		if m.Name != j.Name || m.Revision != j.To || m.Target != j.Target {
			return fmt.Errorf("loaded manifest is %s@%d with target %q, the journal wants target %q", m.Name, m.Revision, m.Target, j.Target)
		}
	}
	in.log.Info("recovering extraction", "dist", j.Name, "rev", j.To, "step", j.Step)
	return in.run(ctx, j, m)
}

// record writes the journal durably, then lets the test hook stop there.
func (in *Installer) record(j *journalRecord) error {
	if err := in.state.writeJournal(j); err != nil {
		return fmt.Errorf("record step %s: %w", j.Step, err)
	}
	if in.hook != nil {
		return in.hook(j.Step)
	}
	return nil
}

// run carries an extraction on from its recorded step, which may have been
// partly done already: every step can be repeated. m is needed only from
// StepBegin or StepWrite.
func (in *Installer) run(ctx context.Context, j *journalRecord, m *distribution.Manifest) error {
	root, err := os.OpenRoot(in.root)
	if err != nil {
		return err
	}
	defer root.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var stepErr error
		switch j.Step {
		case StepWrite:
			stepErr = in.write(ctx, root, j, m)
		case StepRemove:
			stepErr = in.removeAll(root, j, j.Remove, false)
		case StepCommit:
			return in.commit(j)
		}
		if stepErr != nil {
			return fmt.Errorf("%s: %w", j.Step, stepErr)
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

// write clears what stands in the way of the new revision and writes it
// over the target.
func (in *Installer) write(ctx context.Context, root *os.Root, j *journalRecord, m *distribution.Manifest) error {
	if err := in.removeAll(root, j, j.Clear, true); err != nil {
		return err
	}
	if err := root.MkdirAll(j.Target, 0o755); err != nil {
		return fmt.Errorf("target %s: %w", j.Target, unwrapPath(err))
	}
	// Materialize opens the target by name, not through our os.Root: make
	// sure the name leads where the os.Root resolved it, inside the root.
	dest := filepath.Join(in.root, filepath.FromSlash(j.Target))
	inside, err := root.Stat(j.Target)
	if err != nil {
		return fmt.Errorf("target %s: %w", j.Target, unwrapPath(err))
	}
	if byName, err := os.Stat(dest); err != nil || !os.SameFile(inside, byName) {
		return fmt.Errorf("target %s: %s does not lead to it inside the root", j.Target, dest)
	}
	if err := distribution.Materialize(ctx, m, in.src, dest, distribution.MaterializeOptions{}); err != nil {
		return err
	}
	// Materialize syncs the directories inside the target; the target's
	// own entry, perhaps just created, is in its parents.
	for dir := path.Dir(j.Target); ; dir = path.Dir(dir) {
		if err := distribution.SyncDir(root, dir); err != nil {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
		if dir == "." {
			return nil
		}
	}
}

// commit writes the installed record and ends the extraction.
func (in *Installer) commit(j *journalRecord) error {
	rec := &installedRecord{Name: j.Name, Revision: j.To, Version: j.Version, Target: j.Target,
		Installed: in.now().UnixNano(), Entries: j.New}
	if err := in.state.writeInstalled(rec); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if err := in.state.removeJournal(j.Name); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	in.log.Info("installed", "dist", j.Name, "rev", j.To, "version", j.Version, "target", j.Target)
	return nil
}

// removeAll removes earlier entries (deepest first) that are still what
// TED put there. A directory that holds anything else stays, unless strict:
// then it is in the way of the new revision, which is an error.
func (in *Installer) removeAll(root *os.Root, j *journalRecord, list []pathType, strict bool) error {
	if len(list) == 0 {
		return nil
	}
	r := remover{root: root, installedDirs: installedDirs(j), real: make(map[string]bool)}
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
	for _, e := range j.New {
		if e.Type == distribution.TypeDir {
			dirs[j.Target+"/"+e.Path] = struct{}{}
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
// go for m: clear, the entries in m's way (a directory where m has a file
// or a symlink, with everything under it, or a file where m's target needs
// a directory), removed before writing; and remove, the entries m does not
// name, removed after writing. Both are ordered deepest first.
func plan(prev []pathType, m *distribution.Manifest) (clear, remove []pathType) {
	want := make(map[string]distribution.EntryType, len(m.Entries)+8)
	for _, e := range m.Entries {
		want[m.Target+"/"+e.Path] = e.Type
	}
	// The target and its parents are directories m needs.
	targetChain := make(map[string]struct{})
	for dir := m.Target; dir != "."; dir = path.Dir(dir) {
		want[dir] = distribution.TypeDir
		targetChain[dir] = struct{}{}
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
