package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/Masterminds/semver/v3"
)

// The environment between a launcher and the agents it starts.
const (
	// envRole is "agent" in a process a launcher started: it runs the
	// daemon and launches nothing.
	envRole = "TED_AGENT_ROLE"
	// envLauncher is the launcher's path, which an agent starts again to
	// begin an upgrade.
	envLauncher = "TED_AGENT_LAUNCHER"
	// envSupervised is "1" when a launcher waits for this process (its
	// probation): it asks for a new launch by exiting with ExitRestart.
	envSupervised = "TED_AGENT_SUPERVISED"
)

// ExitRestart is the exit status by which a supervised agent asks its
// launcher to launch again: an upgrade begins.
const ExitRestart = 76

// ErrRestart is returned by a daemon that began an upgrade and stopped:
// the caller calls Relaunch once everything is closed.
var ErrRestart = errors.New("agent upgrade: starting again on the new version")

// DefaultMaxAttempts is how many times a version on probation is started
// before it is rolled back: it crashed, or was killed, each time.
const DefaultMaxAttempts = 3

// Launcher decides, as a daemon starts, which ted runs: the installed
// binary (this one), or the version the agent directory says, and during
// an upgrade's probation it runs the new version as its child and rolls
// it back if it exits, crashes or is not healthy by the deadline.
//
// Who restarts whom: the launcher is the process the service manager (or
// the operator, in the foreground) started. Outside probation it replaces
// itself (exec) with the current version, so systemd watches the same
// process as before. During probation it stays, as the new version's
// parent: a new version that exits or crashes is seen at once and rolled
// back, with or without systemd; the launcher itself being killed takes
// the child with it (parent-death signal), and the next start counts an
// attempt.
type Launcher struct {
	Dir Dir
	// Version is this binary's version.
	Version string
	// Args are the process's arguments (os.Args).
	Args        []string
	Log         *slog.Logger
	MaxAttempts int
	// now is the clock (time.Now if nil).
	now func() time.Time
}

func (l *Launcher) clock() time.Time {
	if l.now != nil {
		return l.now()
	}
	return time.Now()
}

// Launch decides. run true: this process is the version to run, and goes
// on to run the daemon. Otherwise the process ran (or replaced itself
// with) another version, and exits with code.
func (l *Launcher) Launch(ctx context.Context) (run bool, code int, err error) {
	if os.Getenv(envRole) == "agent" {
		takeEnv()
		return true, 0, nil
	}
	if l.MaxAttempts <= 0 {
		l.MaxAttempts = DefaultMaxAttempts
	}
	self, err := os.Executable()
	if err != nil {
		return false, 1, err
	}
	// One launcher per data directory: a second one (a copy of the
	// service started by hand) must not count attempts or roll back the
	// probation the first one runs. The lock goes with an exec.
	unlock, err := l.Dir.lock()
	if err != nil {
		return false, 1, err
	}
	defer unlock()
	for {
		st, err := l.Dir.Load()
		if err != nil {
			// A state that does not read must not keep the node down: it
			// is moved aside and the installed binary runs.
			l.Log.Error("agent: the upgrade state does not read; moved aside, the installed binary runs", "err", err)
			if merr := l.Dir.moveAside(); merr != nil {
				return false, 1, errors.Join(err, merr)
			}
			return true, 0, nil
		}
		if p := st.Probation; p != nil {
			if !newer(p.Version, l.Version) {
				// The package installed a binary at least as new under
				// the upgrade: the older build does not run.
				if err := l.rollback(fmt.Sprintf("version %s is not newer than the installed %s", p.Version, l.Version)); err != nil {
					return false, 1, err
				}
				continue
			}
			code, again, err := l.probation(ctx, self, st)
			if err != nil || !again {
				return false, code, err
			}
			continue
		}
		target := st.Current
		if target == "" || target == l.Version || !newer(target, l.Version) {
			// The installed binary, or one at least as new as the current
			// version (the package was upgraded under the agent): it runs.
			return true, 0, nil
		}
		bin := l.Dir.Binary(target)
		l.Log.Info("agent: running the current version", "version", target, "binary", bin)
		unlock()
		err = syscall.Exec(bin, append([]string{bin}, l.Args[1:]...), agentEnv(self, false))
		// Not run (gone, not executable, a noexec mount): the installed
		// binary runs rather than nothing.
		l.Log.Error("agent: the current version does not start; the installed binary runs", "version", target, "binary", bin, "err", err)
		return true, 0, nil
	}
}

// probation runs the version on probation as a child until it commits and
// ends, or fails; again says to look at the state again (an upgrade or a
// rollback was recorded).
func (l *Launcher) probation(ctx context.Context, self string, st State) (code int, again bool, err error) {
	p := st.Probation
	if p.Attempts >= l.MaxAttempts {
		return 0, true, l.rollback(fmt.Sprintf("started %d times without becoming healthy", p.Attempts))
	}
	// Each attempt has the whole probation, from its own start: a node
	// that was down (a reboot) or slow to stop does not eat into it.
	bound := p.Deadline.Sub(p.Started)
	if bound <= 0 {
		bound = DefaultProbation
	}
	deadline := l.clock().Add(bound)
	if _, err := l.Dir.Update(func(s *State) error {
		if s.Probation != nil {
			s.Probation.Attempts++
			s.Probation.Started, s.Probation.Deadline = l.clock(), deadline
		}
		return nil
	}); err != nil {
		return 1, false, err
	}
	fault("launching")
	bin := l.Dir.Binary(p.Version)
	l.Log.Info("agent: starting the new version on probation", "version", p.Version, "attempt", p.Attempts+1, "deadline", deadline)
	status, stopped, err := l.supervise(ctx, bin, p.Version, deadline)
	if err != nil {
		return 0, true, l.rollback(fmt.Sprintf("could not start %s: %v", bin, err))
	}
	after, err := l.Dir.Load()
	if err != nil {
		return 1, false, err
	}
	onProbation := after.Probation != nil && after.Probation.Version == p.Version
	switch {
	case status.exit == ExitRestart:
		return 0, true, nil
	case !onProbation && status.timedOut:
		// It committed as it was being stopped at its deadline: it is the
		// current version, and runs again.
		return 0, true, nil
	case !onProbation:
		// Committed (or rolled back by the child): its end is the
		// daemon's end.
		if stopped {
			return 0, false, nil
		}
		return status.exit, false, nil
	case stopped:
		// Stopped by the operator or the service manager while on
		// probation: not its fault, and not an attempt; the next start
		// goes on with it.
		_, err := l.Dir.Update(func(s *State) error {
			if s.Probation != nil && s.Probation.Attempts > 0 {
				s.Probation.Attempts--
			}
			return nil
		})
		return 0, false, err
	case status.timedOut:
		return 0, true, l.rollback(fmt.Sprintf("not healthy within its probation (%s)", bound.Round(time.Second)))
	}
	return 0, true, l.rollback(fmt.Sprintf("exited during its probation: %s", status.describe()))
}

// rollback records the probation's revision as failed and goes back.
func (l *Launcher) rollback(reason string) error {
	st, err := l.Dir.Update(func(s *State) error {
		s.fail(reason, l.clock())
		return nil
	})
	if err == nil {
		back := st.Current
		if back == "" {
			back = l.Version + " (installed)"
		}
		l.Log.Error("agent: upgrade rolled back", "reason", reason, "running", back)
	}
	return err
}

// childStatus is how a supervised child ended.
type childStatus struct {
	exit     int
	signal   string
	timedOut bool
}

func (s childStatus) describe() string {
	if s.signal != "" {
		return "killed by " + s.signal
	}
	return fmt.Sprintf("exit status %d", s.exit)
}

// supervise runs bin with the launcher's arguments until it exits,
// forwarding SIGTERM and SIGHUP, and stops it if the deadline passes while
// version is still on probation. stopped: the launcher was told to stop
// meanwhile. A child stopped is given stopGrace before it is killed.
func (l *Launcher) supervise(ctx context.Context, bin, version string, deadline time.Time) (childStatus, bool, error) {
	self, _ := os.Executable()
	cmd := exec.Command(bin, l.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = agentEnv(self, true)
	cmd.SysProcAttr = childAttr()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return childStatus{}, false, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var st childStatus
	stopped := false
	var killAt time.Time
	// stop asks the child to stop, once, and kills it after the grace.
	stop := func() {
		if killAt.IsZero() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			killAt = l.clock().Add(stopGrace)
		}
	}
	ctxDone := ctx.Done()
	for {
		select {
		case <-done:
			st.exit = cmd.ProcessState.ExitCode()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				// As a shell reports it: 128 + the signal.
				st.signal, st.exit = ws.Signal().String(), 128+int(ws.Signal())
			}
			return st, stopped, nil
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				_ = cmd.Process.Signal(sig)
			case syscall.SIGTERM:
				stopped = true
				stop()
			case syscall.SIGINT:
				// A terminal's Ctrl-C reaches the child itself.
				stopped = true
			}
		case <-ctxDone:
			ctxDone = nil // once
			stopped = true
			stop()
		case <-tick.C:
			if !killAt.IsZero() {
				if l.clock().After(killAt) {
					_ = cmd.Process.Kill()
				}
				continue
			}
			if l.clock().Before(deadline) {
				continue
			}
			cur, err := l.Dir.Load()
			if err == nil && cur.Probation != nil && cur.Probation.Version == version {
				l.Log.Warn("agent: the new version is not healthy by its deadline; stopping it", "version", version)
				st.timedOut = true
				stop()
			}
		}
	}
}

// stopGrace is how long a child asked to stop may take before it is
// killed.
const stopGrace = 30 * time.Second

// agentEnv is the environment of an agent started by this launcher.
func agentEnv(launcher string, supervised bool) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, envRole+"=") || strings.HasPrefix(kv, envLauncher+"=") || strings.HasPrefix(kv, envSupervised+"=")
	})
	env = append(env, envRole+"=agent", envLauncher+"="+launcher)
	if supervised {
		env = append(env, envSupervised+"=1")
	}
	return env
}

// The launcher's environment, as this process was given it: read once
// (takeEnv) and unset, so that the commands the daemon runs (a
// distribution's actions, which may start a ted of their own) do not
// inherit it.
var (
	launched     bool
	launcherPath string
	supervised   bool
)

// Launched reports whether this process was started by a launcher (it
// runs an agent version, or one on probation).
func Launched() bool { return launched }

// takeEnv reads and unsets the launcher's environment.
func takeEnv() {
	launched = true
	launcherPath, supervised = os.Getenv(envLauncher), os.Getenv(envSupervised) == "1"
	for _, k := range []string{envRole, envLauncher, envSupervised} {
		_ = os.Unsetenv(k)
	}
}

// Relaunch starts the launch again once a daemon has begun an upgrade
// (ErrRestart) and closed everything: a supervised agent exits with
// ExitRestart for its launcher; any other process replaces itself with
// the launcher. It returns only on an error.
func Relaunch(args []string) error {
	if supervised {
		os.Exit(ExitRestart)
	}
	launcher := launcherPath
	if launcher == "" {
		var err error
		if launcher, err = os.Executable(); err != nil {
			return err
		}
	}
	return syscall.Exec(launcher, append([]string{launcher}, args[1:]...), os.Environ())
}

// ExecSelf replaces this process with its own binary run again with args
// (a cluster node that fenced itself off), keeping its place under a
// launcher: still the agent it started, still on probation if it was.
// It returns only on an error.
func ExecSelf(args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	env := os.Environ()
	if launched {
		env = agentEnv(launcherPath, supervised)
	}
	return syscall.Exec(exe, args, env)
}

// newer reports whether version a is newer than b (semantic versions; a
// version that does not parse is never newer).
func newer(a, b string) bool {
	va, err := semver.NewVersion(a)
	if err != nil {
		return false
	}
	vb, err := semver.NewVersion(b)
	if err != nil {
		return true // a real version against a development build
	}
	return va.GreaterThan(vb)
}
