package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"ted/distribution"
)

// DefaultProbation is how long a new version has to become healthy.
const DefaultProbation = 60 * time.Second

// MinHealthy is how long a new version must stay healthy before it is
// committed: a daemon healthy for an instant (its store opened before it
// failed to listen) is not yet a working one.
var MinHealthy = 5 * time.Second

// Platform is this process's GOOS/GOARCH, as agent revisions name it.
func Platform() string { return runtime.GOOS + "/" + runtime.GOARCH }

// Wanted says whether the agent revision m should be installed by a node
// running version running, with state st: built for this platform, newer
// than what runs, and not failed before (nor a newer one). why says why
// not.
func Wanted(st State, m *distribution.Manifest, running string) (ok bool, why string) {
	switch {
	case m.Kind != distribution.KindAgent:
		return false, "not an agent"
	case m.Platform != Platform():
		return false, fmt.Sprintf("built for %s, this node is %s", m.Platform, Platform())
	case !newer(m.Version, running):
		return false, fmt.Sprintf("version %s is not newer than %s, which runs", m.Version, running)
	}
	if f, failed := st.FailedAt(m.Name, m.Revision); failed {
		return false, fmt.Sprintf("%s@%d (%s) failed %s: %s; waiting for a newer revision", m.Name, f.Revision, f.Version, f.At.UTC().Format(time.RFC3339), f.Reason)
	}
	if p := st.Probation; p != nil {
		return false, fmt.Sprintf("version %s is on probation", p.Version)
	}
	return true, ""
}

// ErrNotWritten is Install's error when the new binary could not be
// written (its chunks did not read, the disk is full): the build itself
// is not at fault, and the upgrade may be tried again.
var ErrNotWritten = errors.New("not written")

// Install writes the binary of agent revision m from src to the agent
// directory (VERSION/ted, written beside and renamed into place) and
// checks it: it runs here, says it is m's version, and accepts the
// daemon's config (`ted config check --kind KIND CONFIG`).
func Install(ctx context.Context, dir Dir, m *distribution.Manifest, src distribution.ChunkSource, kind, config string) error {
	final := filepath.Join(string(dir), m.Version)
	tmp := final + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := distribution.Materialize(ctx, m, src, tmp, distribution.MaterializeOptions{}); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("agent %s: %w: %w", m.Version, ErrNotWritten, err)
	}
	fault("written")
	bin := filepath.Join(tmp, distribution.AgentFile)
	// The mode is the one the manifest says, which a publisher chose: the
	// binary is run with nothing more than execute permission.
	if err := os.Chmod(bin, 0o755); err != nil {
		return err
	}
	if err := check(ctx, bin, m.Version, kind, config); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	if err := syncDir(string(dir)); err != nil {
		return err
	}
	fault("installed")
	return nil
}

// check runs a new binary: `version --json` must say version, and
// `config check` must accept the daemon's config.
func check(ctx context.Context, bin, version, kind, config string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := run(ctx, bin, "version", "--json")
	if err != nil {
		return fmt.Errorf("agent %s: %s does not run here: %w", version, bin, err)
	}
	var v struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(out, &v); err != nil || v.Version != version {
		return fmt.Errorf("agent %s: %s says it is version %q", version, bin, v.Version)
	}
	if _, err := run(ctx, bin, "config", "check", "--kind", kind, config); err != nil {
		return fmt.Errorf("agent %s: it does not accept this node's config %s: %w", version, config, err)
	}
	return nil
}

func run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		msg := bytes.TrimSpace(errOut.Bytes())
		if len(msg) > 512 {
			msg = msg[len(msg)-512:]
		}
		return nil, fmt.Errorf("%w: %s", err, msg)
	}
	return out.Bytes(), nil
}

// Begin records m's version on probation for bound: the daemon then stops
// and relaunches (ErrRestart, Relaunch).
func Begin(dir Dir, m *distribution.Manifest, bound time.Duration, now time.Time) error {
	_, err := dir.Update(func(st *State) error {
		if p := st.Probation; p != nil {
			return fmt.Errorf("agent: %s is on probation already", p.Version)
		}
		st.Probation = &Probation{Name: m.Name, Revision: m.Revision, Version: m.Version, Started: now, Deadline: now.Add(bound)}
		return nil
	})
	if err == nil {
		fault("begun")
	}
	return err
}

// Probate commits the probation of version, if it is on probation, once
// healthy says nil (looked at every second): the upgrade is done. It
// returns then, when ctx ends, or at once when version is not on
// probation.
func Probate(ctx context.Context, dir Dir, version string, healthy func() error, log *slog.Logger) error {
	st, err := dir.Load()
	if err != nil {
		return err
	}
	if st.Probation == nil || st.Probation.Version != version {
		return nil
	}
	log.Info("agent: on probation until healthy", "version", version, "deadline", st.Probation.Deadline)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var since time.Time // healthy since, without a break
	for {
		if healthy() != nil {
			since = time.Time{}
		} else if since.IsZero() {
			since = time.Now()
		}
		if !since.IsZero() && time.Since(since) >= MinHealthy {
			st, err := dir.Update(func(s *State) error {
				if s.Probation != nil && s.Probation.Version == version {
					s.commit(time.Now())
				}
				return nil
			})
			if err == nil && st.Last != nil {
				log.Info("agent: upgrade committed", "from", orInstalled(st.Last.From), "to", st.Last.To)
				fault("committed")
				dir.prune(st)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// orInstalled names the installed binary in messages.
func orInstalled(version string) string {
	if version == "" {
		return "the installed binary"
	}
	return version
}

// prune removes the binaries of versions the state no longer names: the
// current one and the one before it are kept (the way back).
func (d Dir) prune(st State) {
	entries, err := os.ReadDir(string(d))
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == st.Current || e.Name() == st.Previous || strings.HasSuffix(e.Name(), ".new") {
			continue
		}
		_ = os.RemoveAll(filepath.Join(string(d), e.Name()))
	}
}
