package subscriber

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"ted/distribution"
)

// Step is one step of an extraction, recorded in the journal before it
// happens.
type Step string

// The steps of an extraction, in order.
const (
	// StepBegin: the extraction is planned (from, to, target, the new
	// entries and every earlier entry to remove); nothing under the root
	// has changed yet.
	StepBegin Step = "begin"
	// StepWrite: the new revision is being written over the target.
	StepWrite Step = "write"
	// StepRemove: the new revision is complete; the entries it dropped are
	// being removed.
	StepRemove Step = "remove"
	// StepCommit: the target is exactly the new revision; the installed
	// record is being written.
	StepCommit Step = "commit"
)

// next returns the step after s, and false after StepCommit or for an
// unknown step.
func (s Step) next() (Step, bool) {
	switch s {
	case StepBegin:
		return StepWrite, true
	case StepWrite:
		return StepRemove, true
	case StepRemove:
		return StepCommit, true
	}
	return "", false
}

// JournalEntry describes an extraction that was started and has not been
// committed: interrupted by a crash, or failed. Recover, or a later Install
// of the same or a newer revision, completes it.
type JournalEntry struct {
	Name    string    // distribution
	From    uint64    // revision installed when it began; 0 for none
	To      uint64    // revision being installed
	Version string    // version of To
	Target  string    // where To lands, relative to the root
	Step    Step      // the last step recorded; it may be partly done
	Started time.Time // when the extraction began
}

// Installed describes the revision of a distribution that is installed.
type Installed struct {
	Name      string    // distribution
	Revision  uint64    // installed revision
	Version   string    // its version
	Target    string    // where it landed, relative to the root
	Installed time.Time // when its extraction was committed
}

// stateFormat is the version of the records in the state directory.
const stateFormat = 1

// Directories of the state directory: one file per distribution in each,
// named NAME.cbor (distribution names are safe file names).
const (
	installedDir = "installed"
	journalDir   = "journal"
	recordExt    = ".cbor"
)

// pathType is one path the installer wrote (or plans to remove) and its
// type; the type decides what removal may delete there.
type pathType struct {
	_    struct{} `cbor:",toarray"`
	Path string
	Type distribution.EntryType
}

// installedRecord is the durable record of an installed revision. It lists
// every entry, so removing what the next revision drops does not depend on
// the store still holding this revision's manifest.
type installedRecord struct {
	Format    uint       `cbor:"1,keyasint"`
	Name      string     `cbor:"2,keyasint"`
	Revision  uint64     `cbor:"3,keyasint"`
	Version   string     `cbor:"4,keyasint"`
	Target    string     `cbor:"5,keyasint"`
	Installed int64      `cbor:"6,keyasint"` // Unix nanoseconds
	Entries   []pathType `cbor:"7,keyasint"` // relative to Target
}

func (r *installedRecord) public() Installed {
	return Installed{Name: r.Name, Revision: r.Revision, Version: r.Version, Target: r.Target,
		Installed: time.Unix(0, r.Installed).UTC()}
}

// journalRecord is the journal of one extraction. The whole plan is fixed
// when it begins, so every later step, and recovery, does the same thing
// whatever happened in between; only Step changes afterwards.
type journalRecord struct {
	Format  uint   `cbor:"1,keyasint"`
	Name    string `cbor:"2,keyasint"`
	From    uint64 `cbor:"3,keyasint"`
	To      uint64 `cbor:"4,keyasint"`
	Version string `cbor:"5,keyasint"`
	Target  string `cbor:"6,keyasint"`
	Step    Step   `cbor:"7,keyasint"`
	Started int64  `cbor:"8,keyasint"` // Unix nanoseconds
	// New lists the entries of To, relative to Target: the installed record
	// at commit, and what a later revision replaces if this one never
	// completes.
	New []pathType `cbor:"9,keyasint"`
	// Clear lists earlier entries, relative to the root, that stand in the
	// way of To (a directory where To has a file); they go before writing.
	Clear []pathType `cbor:"10,keyasint"`
	// Remove lists earlier entries, relative to the root, that To dropped;
	// they go after writing. Both lists are ordered deepest first.
	Remove []pathType `cbor:"11,keyasint"`
}

func (j *journalRecord) label() string { return fmt.Sprintf("%s@%d", j.Name, j.To) }

func (j *journalRecord) public() JournalEntry {
	return JournalEntry{Name: j.Name, From: j.From, To: j.To, Version: j.Version, Target: j.Target,
		Step: j.Step, Started: time.Unix(0, j.Started).UTC()}
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

// stateStore keeps the installed records and journals in a directory:
//
//	DIR/installed/NAME.cbor   the installed revision of NAME
//	DIR/journal/NAME.cbor     the extraction of NAME under way, if any
//
// Every file is written to a temporary name, synced, renamed over the old
// one and its directory synced, so a crash leaves either record whole.
type stateStore struct {
	dir string
}

func (s stateStore) init() error {
	for _, sub := range []string{installedDir, journalDir} {
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
	if ok && err == nil {
		if _, known := j.Step.next(); !known && j.Step != StepCommit {
			err = fmt.Errorf("journal %s: unknown step %q", s.file(journalDir, name), j.Step)
		}
	}
	return j, ok, err
}

func (s stateStore) writeJournal(j *journalRecord) error {
	j.Format = stateFormat
	return s.write(journalDir, j.Name, j)
}

// removeJournal deletes a journal durably: until the directory is synced,
// a crash could bring the finished extraction back.
func (s stateStore) removeJournal(name string) error {
	if err := os.Remove(s.file(journalDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncPath(filepath.Join(s.dir, journalDir))
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
	dir := filepath.Join(s.dir, sub)
	f, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), s.file(sub, name))
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return syncPath(dir)
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
