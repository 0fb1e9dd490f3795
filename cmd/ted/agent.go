package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/Masterminds/semver/v3"
	"go.yaml.in/yaml/v3"

	"ted/agent"
	"ted/distribution"
	"ted/schedule"
	"ted/store"
	"ted/subscriber"
	"ted/transport"
	"ted/yamlfile"
)

// agentFile is the agent block of a distributor's or subscriber's config:
// where new builds of ted arrive and when this node upgrades to them
// (docs/upgrade.md).
type agentFile struct {
	// Channel is the channel agent revisions arrive on; a subscriber
	// takes it beside its channels, a distributor must carry it.
	Channel string `yaml:"channel"`
	// Upgrade is always, never, or the name of a schedule whose windows
	// the upgrade waits for.
	Upgrade string `yaml:"upgrade"`
	// FollowParent: upgrade only to a version the parent runs already (or
	// an older one), so an upgrade rolls down the tree tier by tier.
	FollowParent bool `yaml:"follow_parent"`
	// Probation is how long a new version has to become healthy (60s).
	Probation time.Duration `yaml:"probation"`
}

// Upgrade policies besides a schedule's name.
const (
	upgradeAlways = "always"
	upgradeNever  = "never"
)

// check validates the block; schedules are checked with the others
// (loadSchedules), names says where this one is named.
func (a *agentFile) check(d *yamlfile.Doc) {
	if a == nil {
		return
	}
	if err := distribution.ValidName("channel", a.Channel); err != nil {
		d.Errorf("agent.channel", "%v", err)
	}
	switch a.Upgrade {
	case "":
		a.Upgrade = upgradeAlways
	case upgradeAlways, upgradeNever:
	default:
		if err := distribution.ValidName("schedule", a.Upgrade); err != nil {
			d.Errorf("agent.upgrade", "%q: want always, never or a schedule's name", a.Upgrade)
		}
	}
	if a.Probation < 0 {
		d.Errorf("agent.probation", "%v: must be positive", a.Probation)
	}
	if a.Probation == 0 {
		a.Probation = agent.DefaultProbation
	}
}

// agentDir is a node's agent directory.
func agentDir(dataDir string) agent.Dir { return agent.Dir(filepath.Join(dataDir, "agent")) }

// exitStatus ends the process with this status and nothing printed: the
// agent this launcher ran has ended so.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// agentFault is set at link time by the upgrade tests (-ldflags "-X
// main.agentFault=exit"), to build a broken agent: "exit" exits at the
// start of a daemon run on probation, "stall" never connects to a parent.
// Empty in every real build.
var agentFault = ""

// brokenAgent applies agentFault to a daemon started by a launcher.
func brokenAgent(ctx context.Context) error {
	if agentFault == "" || !agent.Launched() {
		return nil
	}
	switch agentFault {
	case "exit":
		return errors.New("broken agent (test build): exits at start")
	case "stall":
		<-ctx.Done() // neither serves nor connects, until stopped
		return ctx.Err()
	}
	return nil
}

// dataDirOf reads only data_dir from a daemon's config, leniently: the
// launcher may be older than the config (a key only the agent version
// running knows), and the version that runs reads it whole.
func dataDirOf(config string) (string, error) {
	b, err := os.ReadFile(config)
	if err != nil {
		return "", usageError{fmt.Errorf("config: %w", err)}
	}
	var v struct {
		DataDir string `yaml:"data_dir"`
	}
	if err := yaml.Unmarshal(b, &v); err != nil || v.DataDir == "" {
		// The whole read says what is wrong, with its line.
		return "", nil
	}
	return resolve(config, v.DataDir), nil
}

// agentKillAtEnv names an upgrade step (agent.Fault) at which the
// process kills itself: the upgrade crash tests.
const agentKillAtEnv = "TED_TEST_AGENT_KILL_AT"

// launchAgent runs, at the start of `distributor run` and `subscriber
// run`, the version the agent directory says (agent.Launcher): nil means
// this process goes on; an exitStatus that the version it ran has ended.
func launchAgent(ctx context.Context, config string, args []string, log *slog.Logger) error {
	dataDir, err := dataDirOf(config)
	if err != nil {
		return err
	}
	if point := os.Getenv(agentKillAtEnv); point != "" {
		// Crash tests: die at an upgrade step as kill -9 would.
		log.Warn("fault injection: the process kills itself at an upgrade step", "env", agentKillAtEnv, "point", point)
		agent.Fault = func(step string) {
			if step == point {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		}
	}
	if dataDir == "" {
		return nil // the config's own check says why, next
	}
	l := &agent.Launcher{Dir: agentDir(dataDir), Version: buildVersion().Version, Args: args, Log: log}
	run, code, err := l.Launch(ctx)
	if err != nil {
		return err
	}
	if !run {
		return exitStatus(code)
	}
	return brokenAgent(ctx)
}

// upgrader is a node's agent upgrades (agent.* for one daemon): it takes
// the agent revisions the daemon stores, decides by the agent block,
// installs and checks the new binary, records its probation and stops the
// daemon so that the launcher runs it.
type upgrader struct {
	dir       agent.Dir
	file      *agentFile
	kind      string // subscriber or distributor, for config check
	config    string
	version   string
	schedules *schedule.Source
	src       distribution.ChunkSource
	restart   context.CancelCauseFunc
	log       *slog.Logger

	mu      sync.Mutex
	retry   map[string]*time.Timer // by distribution name: a window to wait for
	stopped bool
}

// offer decides what to do with agent revision m (stored here), the
// parent running parentAgent; it returns the state and reason to show.
// again, if set, is called when the decision may change (a window opens).
func (u *upgrader) offer(ctx context.Context, m *distribution.Manifest, parentAgent string, again func()) (state, reason string) {
	return u.offerFrom(ctx, m, u.src, parentAgent, again)
}

// offerFrom is offer with the build's chunks read from src (a cluster
// node's agent pack).
func (u *upgrader) offerFrom(ctx context.Context, m *distribution.Manifest, src distribution.ChunkSource, parentAgent string, again func()) (state, reason string) {
	// One decision at a time: two builds arriving together must not both
	// be installed and begun.
	u.mu.Lock()
	defer u.mu.Unlock()
	if state, reason, ok := u.decideLocked(m, parentAgent, again); !ok {
		return state, reason
	}
	return u.installLocked(ctx, m, src, again)
}

// ready says whether this node would upgrade to m now, by its agent
// block (the policy, the window, the parent); if not, the state and
// reason to show.
func (u *upgrader) ready(m *distribution.Manifest, parentAgent string, again func()) (state, reason string, ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.decideLocked(m, parentAgent, again)
}

// decideLocked is ready; u.mu is held.
func (u *upgrader) decideLocked(m *distribution.Manifest, parentAgent string, again func()) (state, reason string, ok bool) {
	st, err := u.dir.Load()
	if err != nil {
		return subscriber.StateFailed, err.Error(), false
	}
	if p := st.Probation; p != nil {
		if p.Name == m.Name && p.Revision == m.Revision {
			return subscriber.StateReceived, fmt.Sprintf("upgrading: %s is on probation until healthy, at the latest %s", p.Version, p.Deadline.UTC().Format(time.RFC3339)), false
		}
		return subscriber.StateBlocked, fmt.Sprintf("waiting: %s is on probation", p.Version), false
	}
	if m.Version == u.version {
		return subscriber.StateExtracted, "this version runs here", false
	}
	if f, failed := st.FailedAt(m.Name, m.Revision); failed && f.Revision == m.Revision {
		return subscriber.StateFailed, f.Reason, false
	}
	if ok, why := agent.Wanted(st, m, u.version); !ok {
		return subscriber.StateSuperseded, why, false
	}
	switch u.file.Upgrade {
	case upgradeNever:
		return subscriber.StateReceived, "upgrades are off here (agent.upgrade: never)", false
	case upgradeAlways:
	default:
		sch := u.schedules.Lookup(u.file.Upgrade)
		now := time.Now()
		if !sch.OpenAt(now) {
			w, ok := sch.Next(now)
			if !ok {
				return subscriber.StateBlocked, fmt.Sprintf("the upgrade schedule %q never opens", u.file.Upgrade), false
			}
			u.laterLocked(m.Name, w.Start.Sub(now), again)
			return subscriber.StateBlocked, fmt.Sprintf("waiting for the upgrade window (%s) opening at %s", u.file.Upgrade, w.Start.UTC().Format(time.RFC3339)), false
		}
	}
	if u.file.FollowParent && (parentAgent == "" || newerVersion(m.Version, parentAgent)) {
		return subscriber.StateBlocked, fmt.Sprintf("waiting for the parent to run %s first (it runs %s; agent.follow_parent)", m.Version, orDash(parentAgent)), false
	}
	if parentAgent != "" {
		if err := transport.CheckAgents("this node", m.Version, "its parent", parentAgent); err != nil {
			// It would not work with the parent: wait for the parent.
			return subscriber.StateBlocked, fmt.Sprintf("waiting: %s would not work with the parent, which runs %s", m.Version, parentAgent), false
		}
	}
	return "", "", true
}

// installLocked installs m from src, checks it and begins its probation
// (the daemon restarts on it); u.mu is held.
func (u *upgrader) installLocked(ctx context.Context, m *distribution.Manifest, src distribution.ChunkSource, again func()) (state, reason string) {
	u.log.Info("agent: upgrading", "from", u.version, "to", m.Version, "revision", m.Revision)
	if err := agent.Install(ctx, u.dir, m, src, u.kind, u.config); err != nil {
		if ctx.Err() != nil {
			return subscriber.StateReceived, "upgrade interrupted: " + err.Error()
		}
		if errors.Is(err, agent.ErrNotWritten) {
			// Not the build's fault (its chunks did not read, the disk
			// is full): tried again, not failed.
			u.log.Warn("agent: new version not written; trying again", "version", m.Version, "err", err)
			u.laterLocked(m.Name, time.Minute, again)
			return subscriber.StateReceived, "not written yet, trying again: " + err.Error()
		}
		reason := "its check failed: " + err.Error()
		if _, serr := u.dir.Update(func(s *agent.State) error { s.RecordFailure(m, reason, time.Now()); return nil }); serr != nil {
			u.log.Error("agent: state not saved", "err", serr)
		}
		u.log.Error("agent: new version refused", "version", m.Version, "err", err)
		return subscriber.StateFailed, reason
	}
	if err := agent.Begin(u.dir, m, u.file.Probation, time.Now()); err != nil {
		return subscriber.StateFailed, err.Error()
	}
	u.log.Info("agent: new version checked; restarting on it, on probation", "version", m.Version, "probation", u.file.Probation)
	u.restart(agent.ErrRestart)
	return subscriber.StateReceived, fmt.Sprintf("upgrading: restarting on %s", m.Version)
}

// later is laterLocked for a caller that does not hold u.mu.
func (u *upgrader) later(name string, d time.Duration, again func()) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.laterLocked(name, d, again)
}

// laterLocked calls again after d, once per distribution; u.mu is held.
func (u *upgrader) laterLocked(name string, d time.Duration, again func()) {
	if u.stopped || again == nil {
		return // nil: the caller looks again by itself
	}
	if u.retry == nil {
		u.retry = map[string]*time.Timer{}
	}
	if t := u.retry[name]; t != nil {
		t.Stop()
	}
	u.retry[name] = time.AfterFunc(d, func() { go again() })
}

// stop cancels the waits for windows.
func (u *upgrader) stop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.stopped = true
	for _, t := range u.retry {
		t.Stop()
	}
}

// newerVersion reports whether a is a newer version than b.
func newerVersion(a, b string) bool {
	va, err := semver.NewVersion(a)
	if err != nil {
		return false
	}
	vb, err := semver.NewVersion(b)
	return err != nil || va.GreaterThan(vb)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// agentShower is what probate shows its states on: a subscriber.
type agentShower interface {
	SetAgentState(m *distribution.Manifest, state, reason string)
}

// probate shows the state of the agent revisions held (running, failed)
// and, if this version is on probation, commits it once healthy has said
// nil for agent.MinHealthy: the upgrade is done. Then it looks again at
// the newest build held (reconsider), which may have waited for this one.
func (u *upgrader) probate(ctx context.Context, show agentShower, st store.Store, reconsider func(*distribution.Manifest), healthy func() error) {
	name := distribution.AgentName(agent.Platform())
	manifests := map[string]*distribution.Manifest{} // by version
	var newest *distribution.Manifest
	if revs, err := st.Revisions(name); err == nil {
		for _, r := range revs {
			if s, err := st.Signed(name, r.Revision); err == nil {
				if m, err := s.Manifest(); err == nil {
					manifests[m.Version] = m
					if newest == nil || m.Revision > newest.Revision {
						newest = m
					}
				}
			}
		}
	}
	state, err := u.dir.Load()
	if err != nil {
		u.log.Error("agent: state", "err", err)
		return
	}
	if f, ok := state.Failed[name]; ok {
		if m := manifests[f.Version]; m != nil && m.Revision == f.Revision {
			show.SetAgentState(m, subscriber.StateFailed, f.Reason)
		}
	}
	running := manifests[u.version]
	if p := state.Probation; p != nil && p.Version == u.version && running != nil {
		show.SetAgentState(running, subscriber.StateReceived, fmt.Sprintf("on probation until healthy, at the latest %s", p.Deadline.UTC().Format(time.RFC3339)))
	}
	if err := agent.Probate(ctx, u.dir, u.version, healthy, u.log); err != nil {
		u.log.Error("agent: probation", "err", err)
		return
	}
	if ctx.Err() != nil {
		return
	}
	if running != nil {
		show.SetAgentState(running, subscriber.StateExtracted, "this version runs here")
	}
	if newest != nil && newest != running && reconsider != nil {
		reconsider(newest)
	}
}

// logShower shows agent states in the log, and has report send the
// node's status up again (a distributor's own build: AgentState says its
// state there).
type logShower struct {
	log    *slog.Logger
	report func()
}

func (l logShower) SetAgentState(m *distribution.Manifest, state, reason string) {
	l.log.Info("agent revision", "dist", m.Name, "rev", m.Revision, "version", m.Version, "state", state, "reason", reason)
	if l.report != nil {
		l.report()
	}
}

// state says what became of agent revision rev (version) of name here:
// it runs, it failed (with the reason), it is on probation, or held.
func (u *upgrader) state(name string, rev uint64, version string) (state, reason string) {
	st, err := u.dir.Load()
	if err != nil {
		return subscriber.StateReceived, err.Error()
	}
	if p := st.Probation; p != nil && p.Name == name && p.Revision == rev && version == u.version {
		return subscriber.StateReceived, "on probation until healthy"
	}
	if version == u.version {
		return subscriber.StateExtracted, "this version runs here"
	}
	if f, ok := st.Failed[name]; ok && f.Revision == rev {
		return subscriber.StateFailed, f.Reason
	}
	if p := st.Probation; p != nil && p.Name == name && p.Revision == rev {
		return subscriber.StateReceived, "upgrading: on probation"
	}
	if !newerVersion(version, u.version) {
		return subscriber.StateSuperseded, fmt.Sprintf("version %s is not newer than %s, which runs", version, u.version)
	}
	return subscriber.StateReceived, "held"
}
