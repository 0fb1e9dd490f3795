package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"ted/distribution"
)

// Step is one step of an extraction or of a rollback, recorded in the
// journal before it happens.
type Step string

// The steps of an extraction, in order.
const (
	// StepBegin: the extraction is planned (from, to, target, the new
	// entries and every earlier entry to remove); nothing under the root
	// has changed yet.
	StepBegin Step = "begin"
	// StepBackup: what is on disk at every path the extraction will touch
	// is being recorded, and every file there linked (or copied) into the
	// undo directory; nothing under the root has changed yet.
	StepBackup Step = "backup"
	// StepWrite: the new revision is being written over the target.
	StepWrite Step = "write"
	// StepRemove: the new revision is complete; the entries it dropped are
	// being removed.
	StepRemove Step = "remove"
	// StepCommit: the target is exactly the new revision; the installed
	// record is being written.
	StepCommit Step = "commit"
	// StepPost: the revision is installed; its after-step (verification
	// and post-action) has not finished. If it fails, the revision is
	// rolled back.
	StepPost Step = "post"
)

// The steps of a rollback, in order.
const (
	// StepRestore: what was on disk before the installation being undone
	// is being put back, path by path.
	StepRestore Step = "restore"
	// StepUndone: the target is exactly as before the installation; the
	// records are being put back.
	StepUndone Step = "undone"
)

// next returns the step after s, and false after the last step of an
// extraction or a rollback, or for an unknown step.
func (s Step) next() (Step, bool) {
	switch s {
	case StepBegin:
		return StepBackup, true
	case StepBackup:
		return StepWrite, true
	case StepWrite:
		return StepRemove, true
	case StepRemove:
		return StepCommit, true
	case StepCommit:
		return StepPost, true
	case StepRestore:
		return StepUndone, true
	}
	return "", false
}

// known reports whether s is a step this version records.
func (s Step) known() bool {
	_, ok := s.next()
	return ok || s == StepPost || s == StepUndone
}

// JournalEntry describes an extraction or a rollback that was started and
// has not finished: interrupted by a crash, or stopped by an error that
// recovery could not get past either.
type JournalEntry struct {
	Name string // distribution
	// From is the revision installed when it began (0 for none), and To the
	// revision it leads to: for a rollback, From is the revision being
	// undone and To the one restored (0 for none).
	From, To uint64
	Version  string    // version of the revision being installed or undone
	Target   string    // where it lands, relative to the root; "" for a package
	Step     Step      // the last step recorded; it may be partly done
	Started  time.Time // when the extraction or rollback began
}

// Installed describes the revision of a distribution that is installed.
type Installed struct {
	Name      string            // distribution
	Revision  uint64            // installed revision
	Version   string            // its version
	Kind      distribution.Kind // files or package
	Target    string            // where it landed, relative to the root; "" for a package
	Requires  []string          // the distributions it requires, as declared
	Installed time.Time         // when its extraction was committed
	Order     uint64            // installations sort by this in completion order
	Parts     []InstalledPart   // a package's components installed, in order
	Skipped   []SkippedPart     // a package's components skipped, in order
}

// InstalledPart is a package component that an installation installed.
type InstalledPart struct {
	Component string // its name
	Target    string // where it landed, relative to the root
}

// SkippedPart is a package component that an installation skipped.
type SkippedPart struct {
	Component string `cbor:"1,keyasint"`
	Reason    string `cbor:"2,keyasint"` // the prerequisite that failed, and what was found
}

// stateFormat is the version of the records in the state directory.
const stateFormat = 1

// Directories of the state directory: one file per distribution in each,
// named NAME.cbor (distribution names are safe file names), and one
// directory per distribution in undo.
const (
	installedDir = "installed"
	journalDir   = "journal"
	heldDir      = "held"
	undoDir      = "undo"
	recordExt    = ".cbor"
)

// pathType is one path the installer wrote (or plans to remove) and its
// type; the type decides what removal may delete there.
type pathType struct {
	_    struct{} `cbor:",toarray"`
	Path string
	Type distribution.EntryType
}

// partRecord is one part of an installation: a distribution's target, or
// a package component's, with every entry it installed there.
type partRecord struct {
	_         struct{} `cbor:",toarray"`
	Component string   // "" for a distribution
	Target    string   // relative to the root
	Entries   []pathType
	// Post are a package component's post-commands: after a rollback
	// brings this installation back, they run again (they start what
	// the undo commands stopped).
	Post []string
}

// installedRecord is the durable record of an installed revision. It lists
// every entry, so removing what the next revision drops does not depend on
// the store still holding this revision's manifest.
type installedRecord struct {
	Format    uint              `cbor:"1,keyasint"`
	Name      string            `cbor:"2,keyasint"`
	Revision  uint64            `cbor:"3,keyasint"`
	Version   string            `cbor:"4,keyasint"`
	Kind      distribution.Kind `cbor:"5,keyasint"`
	Installed int64             `cbor:"6,keyasint"` // Unix nanoseconds
	Parts     []partRecord      `cbor:"7,keyasint"`
	// Seq is the sequence number of the installation that put it there:
	// installations are undone in the reverse order of these.
	Seq      uint64        `cbor:"8,keyasint,omitempty"`
	Requires []string      `cbor:"9,keyasint,omitempty"`
	Skipped  []SkippedPart `cbor:"10,keyasint,omitempty"`
}

// target is where a distribution landed; "" for a package.
func (r *installedRecord) target() string {
	if len(r.Parts) == 1 && r.Parts[0].Component == "" {
		return r.Parts[0].Target
	}
	return ""
}

// entries lists every entry of every part, relative to the root.
func (r *installedRecord) entries() []pathType {
	var out []pathType
	for _, p := range r.Parts {
		out = appendUnder(out, p.Target, p.Entries)
	}
	return out
}

func (r *installedRecord) public() Installed {
	in := Installed{Name: r.Name, Revision: r.Revision, Version: r.Version, Kind: r.Kind, Target: r.target(),
		Requires: r.Requires, Installed: time.Unix(0, r.Installed).UTC(), Order: r.Seq, Skipped: r.Skipped}
	if in.Kind == distribution.KindPackage {
		for _, p := range r.Parts {
			in.Parts = append(in.Parts, InstalledPart{Component: p.Component, Target: p.Target})
		}
	}
	return in
}

// journalRecord is the journal of one extraction or rollback. The whole
// plan is fixed when it begins, so every later step, and recovery, does
// the same thing whatever happened in between; only Step changes
// afterwards.
type journalRecord struct {
	Format  uint              `cbor:"1,keyasint"`
	Name    string            `cbor:"2,keyasint"`
	From    uint64            `cbor:"3,keyasint"`
	To      uint64            `cbor:"4,keyasint"`
	Version string            `cbor:"5,keyasint"`
	Kind    distribution.Kind `cbor:"6,keyasint"`
	Step    Step              `cbor:"7,keyasint"`
	Started int64             `cbor:"8,keyasint"` // Unix nanoseconds
	// Parts lists the parts of To with their entries and actions: the
	// installed record at commit.
	Parts []journalPart `cbor:"9,keyasint"`
	// Clear lists earlier entries, relative to the root, that stand in the
	// way of To (a directory where To has a file); they go before writing.
	Clear []pathType `cbor:"10,keyasint"`
	// Remove lists earlier entries, relative to the root, that To dropped;
	// they go after writing. Both lists are ordered deepest first.
	Remove []pathType `cbor:"11,keyasint"`
	// Seq is the installation's sequence number, which names its undo
	// directory; for a rollback, the installation being undone.
	Seq      uint64   `cbor:"12,keyasint"`
	Requires []string `cbor:"13,keyasint,omitempty"`
	// Prev, for a rollback, is the installed record it puts back (nil:
	// none), and Hold the revision up to which the distribution is then
	// held (0: not held).
	Prev *installedRecord `cbor:"14,keyasint,omitempty"`
	Hold uint64           `cbor:"15,keyasint,omitempty"`
	// Part is how far the parts went: while writing, the part whose
	// pre-action may have started; while restoring, the part being
	// restored.
	Part    int           `cbor:"16,keyasint,omitempty"`
	Skipped []SkippedPart `cbor:"17,keyasint,omitempty"`
	// Scripts: the installation keeps its package's scripts in its undo
	// directory.
	Scripts bool `cbor:"18,keyasint,omitempty"`
	// Target is where a distribution lands ("" for a package), for a
	// rollback, whose Parts are in its undo record.
	Target string `cbor:"19,keyasint,omitempty"`
	// Begun, for a rollback, is how many parts (the first ones) had their
	// pre-commands started: their undo commands run, and their
	// post-commands of the revision brought back run again. Every part's
	// files go back.
	Begun int `cbor:"20,keyasint,omitempty"`
	// Epoch and Node: who wrote this record, under which lease (a
	// cluster's node; 0 and "" for a single subscriber).
	Epoch uint64 `cbor:"21,keyasint,omitempty"`
	Node  string `cbor:"22,keyasint,omitempty"`
	// Written, while writing, is how many entries of part Part are in
	// place for good (a checkpoint): an interrupted write that can go on
	// (Resumable) starts there.
	Written int `cbor:"23,keyasint,omitempty"`
	// Resumable: no pre-action ran for this installation, so an
	// interrupted write or removal is carried on (on this node or
	// another) rather than rolled back and done again.
	Resumable bool `cbor:"24,keyasint,omitempty"`
}

// journalPart is one part of an installation under way.
type journalPart struct {
	_         struct{} `cbor:",toarray"`
	Component string   // "" for a distribution
	Target    string   // relative to the root
	New       []pathType
	Pre       []string
	Post      []string
	Undo      []string
}

func (j *journalRecord) label() string { return fmt.Sprintf("%s@%d", j.Name, j.To) }

// target is where a distribution lands; "" for a package.
func (j *journalRecord) target() string {
	if len(j.Parts) == 1 && j.Parts[0].Component == "" {
		return j.Parts[0].Target
	}
	return j.Target
}

func (j *journalRecord) public() JournalEntry {
	return JournalEntry{Name: j.Name, From: j.From, To: j.To, Version: j.Version, Target: j.target(),
		Step: j.Step, Started: time.Unix(0, j.Started).UTC()}
}

// change is one path an installation touches, with what was there before
// it and what it leaves there: enough to put the path back exactly.
type change struct {
	_    struct{} `cbor:",toarray"`
	Path string   // relative to the root
	// Was is what was there before (0: nothing), Now what the
	// installation leaves there (0: nothing).
	Was, Now distribution.EntryType
	// Mode holds the permission, setuid, setgid and sticky bits of a file
	// or directory that was there (fs.FileMode bits).
	Mode uint32
	// Link is the target of a symlink that was there.
	Link string
	// A file that was there is kept in the undo directory under the
	// change's index; its owner and modification time are kept here for
	// when it had to be copied rather than linked.
	UID, GID int
	ModTime  int64 // Unix nanoseconds
	// Part is the index of the part that touches the path, or -1 for an
	// earlier entry that only goes.
	Part int
	// Chain marks a directory on the way to a target that no part has as
	// an entry: TED creates it if missing but never changes its mode.
	Chain bool
	// Expect is the type of an earlier entry that only goes: the
	// installation removes it only if it is still of that type.
	Expect distribution.EntryType
}

// undoRecord is what it takes to undo one installation: the installed
// record before it and every path it touched. It is written, with the
// backups of the files, before the installation changes anything.
type undoRecord struct {
	Format   uint             `cbor:"1,keyasint"`
	Name     string           `cbor:"2,keyasint"`
	Seq      uint64           `cbor:"3,keyasint"`
	Revision uint64           `cbor:"4,keyasint"`
	Version  string           `cbor:"5,keyasint"`
	Parts    []undoPart       `cbor:"6,keyasint"`
	Prev     *installedRecord `cbor:"7,keyasint,omitempty"` // nil: nothing was installed
	Changes  []change         `cbor:"8,keyasint"`
	// Kind is what was installed: a package's later installations must
	// be undone first.
	Kind distribution.Kind `cbor:"9,keyasint"`
}

// undoPart is what a rollback needs of one part: its undo commands.
type undoPart struct {
	_         struct{} `cbor:",toarray"`
	Component string
	Target    string
	Undo      []string
}

// heldRecord says that the revisions of a distribution up to Through were
// rolled back by an operator and are not extracted again on their own.
type heldRecord struct {
	Format  uint   `cbor:"1,keyasint"`
	Name    string `cbor:"2,keyasint"`
	Through uint64 `cbor:"3,keyasint"`
}

// The codec modes are immutable once built.
var (
	stateEnc = mustStateEnc()
	stateDec = mustStateDec()
)

func mustStateEnc() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err) // only on invalid options
	}
	return em
}

func mustStateDec() cbor.DecMode {
	// The records are our own and list up to every entry of several
	// revisions, far past the decoder's default array limit.
	dm, err := cbor.DecOptions{MaxArrayElements: math.MaxInt32}.DecMode()
	if err != nil {
		panic(err) // only on invalid options
	}
	return dm
}

// stateStore keeps the installer's records in a directory:
//
//	DIR/installed/NAME.cbor        the installed revision of NAME
//	DIR/journal/NAME.cbor          the extraction or rollback of NAME under way, if any
//	DIR/held/NAME.cbor             the revisions of NAME an operator rolled back
//	DIR/undo/NAME/SEQ/undo.cbor    how to undo installation SEQ of NAME
//	DIR/undo/NAME/SEQ/N            the file that was at its change N
//
// Every file is written to a temporary name, synced, renamed over the old
// one and its directory synced, so a crash leaves either record whole.
type stateStore struct {
	dir string
	// fence, if set, is asked before every change (Installer.check).
	fence func() error
}

// ErrFenced is wrapped by the error of work the fence stopped
// (Options.Fence): it ends there, as a crash would, with nothing
// undone, as undoing would write too.
var ErrFenced = errors.New("stopped by the fence")

// check asks the fence whether the next change may be made.
func (s stateStore) check() error {
	if s.fence == nil {
		return nil
	}
	if err := s.fence(); err != nil {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return nil
}

func (s stateStore) init() error {
	for _, sub := range []string{installedDir, journalDir, heldDir, undoDir} {
		dir := filepath.Join(s.dir, sub)
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("state directory %s: %w", s.dir, err)
		}
		// Temporary files of writes a crash interrupted; only this
		// package writes here.
		tmps, err := filepath.Glob(filepath.Join(dir, ".*.tmp"))
		if err != nil {
			return fmt.Errorf("state directory %s: %w", s.dir, err)
		}
		for _, tmp := range tmps {
			if err := os.Remove(tmp); err != nil {
				return fmt.Errorf("state directory %s: %w", s.dir, err)
			}
		}
	}
	return nil
}

func (s stateStore) file(sub, name string) string {
	return filepath.Join(s.dir, sub, name+recordExt)
}

func (s stateStore) readInstalled(name string) (installedRecord, bool, error) {
	var rec installedRecord
	ok, err := s.read(installedDir, name, &rec)
	if ok && err == nil {
		err = checkRecord(rec.Format, rec.Name, name)
	}
	return rec, ok, err
}

func (s stateStore) writeInstalled(rec *installedRecord) error {
	rec.Format = stateFormat
	return s.write(installedDir, rec.Name, rec)
}

func (s stateStore) readJournal(name string) (journalRecord, bool, error) {
	var j journalRecord
	ok, err := s.read(journalDir, name, &j)
	if ok && err == nil {
		err = checkRecord(j.Format, j.Name, name)
	}
	if ok && err == nil && !j.Step.known() {
		err = fmt.Errorf("journal %s: unknown step %q", s.file(journalDir, name), j.Step)
	}
	return j, ok, err
}

func (s stateStore) writeJournal(j *journalRecord) error {
	j.Format = stateFormat
	if err := s.write(journalDir, j.Name, j); err != nil {
		return err
	}
	return s.history(j, string(j.Step))
}

// historyFile is the journal's history in the state directory: one JSON
// line per journal record written, and "done" when an extraction or
// rollback ends. It is for people and checkers (which node wrote what,
// under which lease epoch); the journal itself is what recovery reads, so
// the history is not synced. It is rotated at historyMax to
// historyFile.1.
const (
	historyFile = "journal.log"
	historyMax  = 4 << 20
)

// historyLine is one line of the journal's history.
type historyLine struct {
	Time    string `json:"time"`
	Epoch   uint64 `json:"epoch"`
	Node    string `json:"node,omitempty"`
	Dist    string `json:"dist"`
	From    uint64 `json:"from"`
	To      uint64 `json:"to"`
	Step    string `json:"step"`
	Part    int    `json:"part"`
	Written int    `json:"written"`
}

// history appends a line for j at step to the journal's history.
func (s stateStore) history(j *journalRecord, step string) error {
	b, err := json.Marshal(historyLine{Time: time.Now().UTC().Format(time.RFC3339Nano), Epoch: j.Epoch, Node: j.Node,
		Dist: j.Name, From: j.From, To: j.To, Step: step, Part: j.Part, Written: j.Written})
	if err != nil {
		return err
	}
	if err := s.check(); err != nil {
		return err
	}
	file := filepath.Join(s.dir, historyFile)
	if info, err := os.Stat(file); err == nil && info.Size() > historyMax {
		if err := os.Rename(file, file+".1"); err != nil {
			return fmt.Errorf("rotate %s: %w", file, err)
		}
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

func (s stateStore) readHeld(name string) (heldRecord, bool, error) {
	var h heldRecord
	ok, err := s.read(heldDir, name, &h)
	if ok && err == nil {
		err = checkRecord(h.Format, h.Name, name)
	}
	return h, ok, err
}

func (s stateStore) writeHeld(h *heldRecord) error {
	h.Format = stateFormat
	return s.write(heldDir, h.Name, h)
}

// removeInstalled deletes the installed record of name durably.
func (s stateStore) removeInstalled(name string) error {
	return s.remove(installedDir, name)
}

// undoFile is the name of the record in an undo directory.
const undoFile = "undo" + recordExt

// undoPath is the undo directory of installation seq of name.
func (s stateStore) undoPath(name string, seq uint64) string {
	return filepath.Join(s.dir, undoDir, name, fmt.Sprintf("%020d", seq))
}

// backupPath is where the file of change i of installation seq is kept.
func (s stateStore) backupPath(name string, seq uint64, i int) string {
	return filepath.Join(s.undoPath(name, seq), strconv.Itoa(i))
}

func (s stateStore) readUndo(name string, seq uint64) (undoRecord, error) {
	return s.readUndoRecord(name, seq, true)
}

// readUndoHead reads an undo record without its changes (one per path the
// installation touched): what History and prune need.
func (s stateStore) readUndoHead(name string, seq uint64) (undoRecord, error) {
	return s.readUndoRecord(name, seq, false)
}

// undoHead is an undoRecord without Changes, for decoding.
type undoHead struct {
	Format   uint              `cbor:"1,keyasint"`
	Name     string            `cbor:"2,keyasint"`
	Seq      uint64            `cbor:"3,keyasint"`
	Revision uint64            `cbor:"4,keyasint"`
	Version  string            `cbor:"5,keyasint"`
	Parts    []undoPart        `cbor:"6,keyasint"`
	Prev     *installedRecord  `cbor:"7,keyasint,omitempty"`
	Kind     distribution.Kind `cbor:"9,keyasint"`
}

func (s stateStore) readUndoRecord(name string, seq uint64, changes bool) (undoRecord, error) {
	var u undoRecord
	file := filepath.Join(s.undoPath(name, seq), undoFile)
	b, err := os.ReadFile(file)
	if err != nil {
		return u, err
	}
	if changes {
		err = stateDec.Unmarshal(b, &u)
	} else {
		var h undoHead
		err = stateDec.Unmarshal(b, &h)
		u = undoRecord{Format: h.Format, Name: h.Name, Seq: h.Seq, Revision: h.Revision, Version: h.Version,
			Parts: h.Parts, Prev: h.Prev, Kind: h.Kind}
	}
	if err != nil {
		return u, fmt.Errorf("%s: %w", file, err)
	}
	if err := checkRecord(u.Format, u.Name, name); err != nil {
		return u, err
	}
	if u.Seq != seq {
		return u, fmt.Errorf("%s: record of installation %d", file, u.Seq)
	}
	return u, nil
}

// writeUndo writes the record of an undo directory that holds its backups
// already, and syncs the directory: the backups and the record are then
// durable.
func (s stateStore) writeUndo(u *undoRecord) error {
	if err := s.check(); err != nil {
		return err
	}
	u.Format = stateFormat
	b, err := stateEnc.Marshal(u)
	if err != nil {
		return err
	}
	return writeDurably(s.undoPath(u.Name, u.Seq), undoFile, b)
}

// undoNames lists the distributions that have undo directories, sorted.
func (s stateStore) undoNames() ([]string, error) {
	dirEntries, err := os.ReadDir(filepath.Join(s.dir, undoDir))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, d := range dirEntries {
		if d.IsDir() && distribution.ValidName("name", d.Name()) == nil {
			names = append(names, d.Name())
		}
	}
	return names, nil
}

// undoSeqs lists the installations of name that have an undo directory,
// oldest first, whole or not.
func (s stateStore) undoSeqs(name string) ([]uint64, error) {
	dirEntries, err := os.ReadDir(filepath.Join(s.dir, undoDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, d := range dirEntries {
		seq, err := strconv.ParseUint(d.Name(), 10, 64)
		if err != nil || !d.IsDir() || len(d.Name()) != 20 {
			continue // nothing of ours
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	return seqs, nil
}

// removeUndo deletes an undo directory: its record first, so a crash
// halfway leaves a directory that no record describes and the next
// prune removes.
func (s stateStore) removeUndo(name string, seq uint64) error {
	if err := s.check(); err != nil {
		return err
	}
	dir := s.undoPath(name, seq)
	if err := os.Remove(filepath.Join(dir, undoFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	err := syncPath(filepath.Dir(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// stripUndo removes everything of an undo directory but its scripts: the
// installation can no longer be undone, but its commands may still run.
func (s stateStore) stripUndo(name string, seq uint64) error {
	if err := s.check(); err != nil {
		return err
	}
	dir := s.undoPath(name, seq)
	if err := os.Remove(filepath.Join(dir, undoFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() != scriptsDir {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeJournal deletes a journal durably: until the directory is synced,
// a crash could bring the finished extraction back.
func (s stateStore) removeJournal(j *journalRecord) error {
	if err := s.remove(journalDir, j.Name); err != nil {
		return err
	}
	// The work is done: a history that cannot be written says less, but
	// changes nothing of it (a refused change stops the next one anyway).
	_ = s.history(j, "done")
	return nil
}

func (s stateStore) remove(sub, name string) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := os.Remove(s.file(sub, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncPath(filepath.Join(s.dir, sub))
}

// names lists the distributions that have a record in sub, sorted.
func (s stateStore) names(sub string) ([]string, error) {
	dirEntries, err := os.ReadDir(filepath.Join(s.dir, sub))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, d := range dirEntries {
		name, ok := strings.CutSuffix(d.Name(), recordExt)
		if !ok || !d.Type().IsRegular() || distribution.ValidName("name", name) != nil {
			continue // a temporary file, or nothing of ours
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}

func checkRecord(format uint, got, want string) error {
	if format != stateFormat {
		return fmt.Errorf("record of %s has format %d, this version reads %d", want, format, stateFormat)
	}
	if got != want {
		return fmt.Errorf("record of %s names %q", want, got)
	}
	return nil
}

func (s stateStore) read(sub, name string, v any) (bool, error) {
	b, err := os.ReadFile(s.file(sub, name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := stateDec.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("%s: %w", s.file(sub, name), err)
	}
	return true, nil
}

func (s stateStore) write(sub, name string, v any) error {
	b, err := stateEnc.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.check(); err != nil {
		return err
	}
	return writeDurably(filepath.Join(s.dir, sub), name+recordExt, b)
}

// writeDurably writes b to dir/name atomically and durably (0600): a
// crash leaves the old file or the new one.
func writeDurably(dir, name string, b []byte) error {
	_, err := distribution.WriteFileAtomic(filepath.Join(dir, name), 0o600, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
	return err
}

// syncPath makes the entries of a directory outside the root durable.
func syncPath(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// scriptsDir is where an installation's undo directory keeps its
// package's scripts.
const scriptsDir = "scripts"
