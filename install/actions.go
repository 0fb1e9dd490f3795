package install

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// actionTail is how many of the last output lines a failing action's
// error carries.
const actionTail = 10

// ActionError is a command of Actions that failed.
type ActionError struct {
	Phase, Command string
	// ExitCode is the command's exit status; -1 when it did not exit on
	// its own (killed at the timeout, or it could not start).
	ExitCode int
	TimedOut bool
	// Tail is the last lines of its output.
	Tail []string
	Err  error
}

func (e *ActionError) Error() string {
	what := "exited " + strconv.Itoa(e.ExitCode)
	switch {
	case e.TimedOut:
		what = "timed out and was killed"
	case e.ExitCode < 0:
		what = "could not run: " + e.Err.Error()
	}
	msg := fmt.Sprintf("%s-action %q %s", e.Phase, e.Command, what)
	if len(e.Tail) > 0 {
		msg += "; last output: " + strings.Join(e.Tail, " | ")
	}
	return msg
}

// Actions run a revision's pre and post commands (dist build --pre/--post),
// or a package component's pre, post and undo commands: each a shell
// command line, run with `sh -c` in Dir, with the environment of the
// process plus TED_NAME, TED_REVISION, TED_VERSION, TED_TARGET (the
// absolute target directory), TED_PHASE (pre, post or undo) and
// TED_COMPONENT. Output goes to the log line by line; the last lines go
// into the error of a failing command. A command still running after the
// timeout is killed with its whole process group.
type Actions struct {
	Name     string
	Revision uint64
	Version  string
	// Component is the package component, "" for a distribution's own
	// actions; it is TED_COMPONENT.
	Component string
	// Dir is the working directory; Target the absolute target directory
	// (TED_TARGET).
	Dir, Target string
	// Timeout bounds each command; it must be positive.
	Timeout time.Duration
	// Log receives the commands' output; nil discards it.
	Log *slog.Logger
	// Fence, if set, is asked before each command starts: a command
	// changes the shared directory of a cluster as much as a file does.
	Fence func() error
}

// Run runs cmds in order as phase (TED_PHASE) and stops at the first that
// fails: its error is an *ActionError, or the fence's.
func (a Actions) Run(ctx context.Context, phase string, cmds []string) error {
	if a.Log == nil {
		a.Log = slog.New(slog.DiscardHandler)
	}
	for _, cmd := range cmds {
		if err := a.runOne(ctx, phase, cmd); err != nil {
			return err
		}
	}
	return nil
}

func (a Actions) runOne(ctx context.Context, phase, command string) error {
	if a.Fence != nil {
		if err := a.Fence(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	cmd := exec.Command("sh", "-c", command)
	cmd.Dir = a.Dir
	cmd.Env = append(os.Environ(),
		"TED_NAME="+a.Name,
		"TED_REVISION="+strconv.FormatUint(a.Revision, 10),
		"TED_VERSION="+a.Version,
		"TED_TARGET="+a.Target,
		"TED_PHASE="+phase,
		"TED_COMPONENT="+a.Component,
	)
	// A group of its own, so the timeout kills what the command started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	log := a.Log.With("dist", a.Name, "rev", a.Revision, "phase", phase, "command", command)
	if a.Component != "" {
		log = log.With("component", a.Component)
	}
	tail := &lastLines{n: actionTail}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
		for sc.Scan() {
			log.Info("action output", "line", sc.Text())
			tail.add(sc.Text())
		}
		_, _ = io.Copy(io.Discard, out) // a line over 64 KiB: drain the rest
	}()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		w.Close()
		wg.Wait()
		return &ActionError{Phase: phase, Command: command, ExitCode: -1, Err: err}
	}
	stop := context.AfterFunc(ctx, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	err := cmd.Wait()
	stop()
	w.Close()
	wg.Wait()
	if err == nil {
		log.Info("action done", "took", time.Since(start).Round(time.Millisecond))
		return nil
	}
	ae := &ActionError{Phase: phase, Command: command, ExitCode: -1, Tail: tail.lines(), Err: err}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Exited() {
		ae.ExitCode = exit.ExitCode()
	}
	ae.TimedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
	log.Error("action failed", "err", ae)
	return ae
}

// lastLines keeps the last n lines written.
type lastLines struct {
	mu  sync.Mutex
	n   int
	buf []string
}

func (l *lastLines) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(line) > 200 {
		line = strings.ToValidUTF8(line[:200], "") + "…"
	}
	l.buf = append(l.buf, line)
	if len(l.buf) > l.n {
		l.buf = l.buf[len(l.buf)-l.n:]
	}
}

func (l *lastLines) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.buf...)
}
