package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"ted/distribution"
)

// StateFile is the upgrade state, in the agent directory.
const StateFile = "state.json"

// Fault, if set, is called at each step of an upgrade with the step's
// name (written, installed, begun, launching, committed): the crash tests
// kill the process there, as kill -9 would.
var Fault func(step string)

func fault(step string) {
	if Fault != nil {
		Fault(step)
	}
}

// State is what a node's agent directory says about which ted runs.
type State struct {
	// Current is the version that runs when no upgrade is under way: a
	// binary in the agent directory, or "" for the installed binary (the
	// launcher itself).
	Current string `json:"current,omitempty"`
	// Previous is what ran before Current: where a failed upgrade goes
	// back to.
	Previous string `json:"previous,omitempty"`
	// Probation is the upgrade under way, if any.
	Probation *Probation `json:"probation,omitempty"`
	// Failed are the agent revisions that failed, by distribution name:
	// not tried again until a newer revision arrives.
	Failed map[string]Failure `json:"failed,omitempty"`
	// Last is the last upgrade committed.
	Last *Upgrade `json:"last,omitempty"`
}

// Probation is an upgrade under way: Version runs on trial until it is
// healthy, or Deadline passes, or it has been started Attempts times.
type Probation struct {
	Name     string    `json:"name"`
	Revision uint64    `json:"revision"`
	Version  string    `json:"version"`
	Started  time.Time `json:"started"`
	Deadline time.Time `json:"deadline"`
	Attempts int       `json:"attempts"`
}

// Failure is why an agent revision was rolled back.
type Failure struct {
	Revision uint64    `json:"revision"`
	Version  string    `json:"version"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// Upgrade is a committed upgrade.
type Upgrade struct {
	From string    `json:"from"`
	To   string    `json:"to"`
	At   time.Time `json:"at"`
}

// Dir is a node's agent directory, DATA_DIR/agent: the state, and the
// binaries by version (VERSION/ted).
type Dir string

// Binary is the path of version's binary.
func (d Dir) Binary(version string) string { return filepath.Join(string(d), version, "ted") }

// Load reads the state; a directory without one has the zero State.
func (d Dir) Load() (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(string(d), StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("agent state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("agent state %s: %w", filepath.Join(string(d), StateFile), err)
	}
	return st, nil
}

// Save writes the state whole: to a temporary file, synced, renamed over
// the old one, the directory synced, so a crash leaves the old state or
// the new, never a mix.
func (d Dir) Save(st State) error {
	if err := os.MkdirAll(string(d), 0o750); err != nil {
		return fmt.Errorf("agent state: %w", err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	name := filepath.Join(string(d), StateFile)
	f, err := os.CreateTemp(string(d), StateFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("agent state: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("agent state: %w", err)
	}
	return syncDir(string(d))
}

// moveAside renames a state that does not read out of the way, keeping
// it for a look.
func (d Dir) moveAside() error {
	name := filepath.Join(string(d), StateFile)
	return os.Rename(name, fmt.Sprintf("%s.bad-%d", name, time.Now().Unix()))
}

// lock takes the agent directory's launcher lock, or says who holds it.
func (d Dir) lock() (unlock func(), err error) {
	if err := os.MkdirAll(string(d), 0o750); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(string(d), "launcher.lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := flock(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("agent: another ted runs on this data directory (%s is locked): %w", f.Name(), err)
	}
	var once sync.Once
	return func() { once.Do(func() { f.Close() }) }, nil
}

// Update loads the state, applies fn and saves the result.
func (d Dir) Update(fn func(*State) error) (State, error) {
	st, err := d.Load()
	if err != nil {
		return st, err
	}
	if err := fn(&st); err != nil {
		return st, err
	}
	return st, d.Save(st)
}

// Failed reports whether revision rev of name, or a newer one, failed.
func (st *State) FailedAt(name string, rev uint64) (Failure, bool) {
	f, ok := st.Failed[name]
	return f, ok && f.Revision >= rev
}

// RecordFailure records agent revision m as failed with reason (its
// check failed before any probation): not tried again until a newer one.
func (st *State) RecordFailure(m *distribution.Manifest, reason string, now time.Time) {
	if st.Failed == nil {
		st.Failed = map[string]Failure{}
	}
	st.Failed[m.Name] = Failure{Revision: m.Revision, Version: m.Version, Reason: reason, At: now}
}

// fail records the probation's revision as failed with reason and goes
// back to the previous version.
func (st *State) fail(reason string, now time.Time) {
	p := st.Probation
	if p == nil {
		return
	}
	if st.Failed == nil {
		st.Failed = map[string]Failure{}
	}
	st.Failed[p.Name] = Failure{Revision: p.Revision, Version: p.Version, Reason: reason, At: now}
	st.Probation = nil
}

// commit makes the probation's version current.
func (st *State) commit(now time.Time) {
	p := st.Probation
	if p == nil {
		return
	}
	st.Last = &Upgrade{From: st.Current, To: p.Version, At: now}
	st.Previous, st.Current = st.Current, p.Version
	st.Probation = nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
