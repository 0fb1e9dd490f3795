package agent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ted/distribution"
)

// TestMain lets the test binary play a new agent on probation: with
// AGENT_TEST_CHILD=commit it commits its probation, as a healthy agent
// does, and exits.
func TestMain(m *testing.M) {
	if os.Getenv("AGENT_TEST_CHILD") == "commit" {
		MinHealthy = 0
		dir := Dir(os.Getenv("AGENT_TEST_DIR"))
		if err := Probate(context.Background(), dir, os.Getenv("AGENT_TEST_VERSION"), func() error { return nil }, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
			os.Exit(9)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// agentDir makes an agent directory with version's binary: a script, or
// (script "") this test binary.
func agentDir(t *testing.T, version, script string) Dir {
	t.Helper()
	dir := Dir(t.TempDir())
	bin := dir.Binary(version)
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if script == "" {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(self, bin); err != nil {
			t.Fatal(err)
		}
	} else if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func onProbation(t *testing.T, dir Dir, version string, bound time.Duration) {
	t.Helper()
	m := &distribution.Manifest{Name: "ted-linux-amd64", Revision: 7, Version: version}
	if err := Begin(dir, m, bound, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// A new version that exits during its probation is rolled back at once,
// failed with the reason; the installed binary runs again.
func TestLaunchRollsBackAnExit(t *testing.T) {
	dir := agentDir(t, "1.5.0", "exit 3")
	onProbation(t, dir, "1.5.0", time.Minute)
	l := &Launcher{Dir: dir, Version: "1.4.0", Args: []string{"ted", "subscriber", "run"}, Log: quiet()}
	run, _, err := l.Launch(t.Context())
	if err != nil || !run {
		t.Fatalf("after the rollback: run %v, %v; want the installed binary to run", run, err)
	}
	st, _ := dir.Load()
	f, ok := st.FailedAt("ted-linux-amd64", 7)
	if !ok || !strings.Contains(f.Reason, "exit status 3") || st.Probation != nil || st.Current != "" {
		t.Fatalf("state %+v", st)
	}
	// Not tried again, nor an older one; a newer one is.
	for rev, want := range map[uint64]bool{6: false, 7: false, 8: true} {
		ok, why := Wanted(st, &distribution.Manifest{Kind: distribution.KindAgent, Platform: Platform(), Name: "ted-linux-amd64", Revision: rev, Version: "1.6.0"}, "1.4.0")
		if ok != want {
			t.Errorf("revision %d wanted %v (%s), want %v", rev, ok, why, want)
		}
	}
}

// One that asks to be launched again every time (crashes, restarts) is
// rolled back after MaxAttempts starts.
func TestLaunchRollsBackAfterAttempts(t *testing.T) {
	dir := agentDir(t, "1.5.0", "exit 76")
	onProbation(t, dir, "1.5.0", time.Minute)
	l := &Launcher{Dir: dir, Version: "1.4.0", Args: []string{"ted"}, Log: quiet(), MaxAttempts: 2}
	if run, _, err := l.Launch(t.Context()); err != nil || !run {
		t.Fatalf("run %v, %v", run, err)
	}
	st, _ := dir.Load()
	if f, ok := st.Failed["ted-linux-amd64"]; !ok || !strings.Contains(f.Reason, "started 2 times") {
		t.Fatalf("state %+v", st)
	}
}

// One that never becomes healthy is stopped at its deadline and rolled
// back.
func TestLaunchRollsBackAtTheDeadline(t *testing.T) {
	dir := agentDir(t, "1.5.0", "exec sleep 60")
	onProbation(t, dir, "1.5.0", 500*time.Millisecond)
	l := &Launcher{Dir: dir, Version: "1.4.0", Args: []string{"ted"}, Log: quiet()}
	if run, _, err := l.Launch(t.Context()); err != nil || !run {
		t.Fatalf("run %v, %v", run, err)
	}
	st, _ := dir.Load()
	if f, ok := st.Failed["ted-linux-amd64"]; !ok || !strings.Contains(f.Reason, "not healthy within its probation") {
		t.Fatalf("state %+v", st)
	}
}

// Stopping the launcher during a probation (systemctl stop, a reboot) is
// no fault of the new version: it is stopped once, the launcher ends
// cleanly, and the stop is not counted as an attempt.
func TestLaunchStopIsNotAnAttempt(t *testing.T) {
	mark := filepath.Join(t.TempDir(), "trapped")
	t.Setenv("AGENT_TEST_MARK", mark)
	dir := agentDir(t, "1.5.0", `trap 'exit 0' TERM; touch "$AGENT_TEST_MARK"; while :; do sleep 0.05; done`)
	onProbation(t, dir, "1.5.0", time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		// Stopped once the child is up and handles SIGTERM (polled).
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(mark); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	l := &Launcher{Dir: dir, Version: "1.4.0", Args: []string{"ted"}, Log: quiet()}
	run, code, err := l.Launch(ctx)
	if err != nil || run || code != 0 {
		t.Fatalf("a stop: run %v, code %d, %v; want a clean end", run, code, err)
	}
	st, _ := dir.Load()
	if st.Probation == nil || st.Probation.Attempts != 0 || len(st.Failed) != 0 {
		t.Fatalf("after a stop: %+v", st)
	}
}

// Two launchers on one data directory: the second is refused.
func TestLaunchLock(t *testing.T) {
	dir := Dir(t.TempDir())
	unlock, err := dir.lock()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	l := &Launcher{Dir: dir, Version: "1.4.0", Args: []string{"ted"}, Log: quiet()}
	if _, _, err := l.Launch(t.Context()); err == nil || !strings.Contains(err.Error(), "another ted runs") {
		t.Fatalf("a second launcher: %v", err)
	}
}

// A probation of a version the installed binary is newer than is dropped
// (a package upgrade under the agent), and a state that does not read is
// moved aside: the installed binary runs either way.
func TestLaunchFallsBack(t *testing.T) {
	dir := agentDir(t, "1.3.0", "exit 0")
	onProbation(t, dir, "1.3.0", time.Minute)
	l := &Launcher{Dir: dir, Version: "1.4.0", Args: []string{"ted"}, Log: quiet()}
	if run, _, err := l.Launch(t.Context()); err != nil || !run {
		t.Fatalf("older probation: run %v, %v", run, err)
	}
	if st, _ := dir.Load(); st.Probation != nil || !strings.Contains(st.Failed["ted-linux-amd64"].Reason, "not newer than the installed") {
		t.Fatalf("state %+v", st)
	}
	if err := os.WriteFile(filepath.Join(string(dir), StateFile), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if run, _, err := l.Launch(t.Context()); err != nil || !run {
		t.Fatalf("a state that does not read: run %v, %v", run, err)
	}
	if st, err := dir.Load(); err != nil || st.Current != "" {
		t.Fatalf("after moving it aside: %+v, %v", st, err)
	}
}

// One that becomes healthy commits: it is the current version, and its
// end is the daemon's end (the launcher exits with its status).
func TestLaunchCommits(t *testing.T) {
	dir := agentDir(t, "1.5.0", "")
	onProbation(t, dir, "1.5.0", time.Minute)
	t.Setenv("AGENT_TEST_CHILD", "commit")
	t.Setenv("AGENT_TEST_DIR", string(dir))
	t.Setenv("AGENT_TEST_VERSION", "1.5.0")
	l := &Launcher{Dir: dir, Version: "1.4.0", Args: []string{"ted"}, Log: quiet()}
	run, code, err := l.Launch(t.Context())
	if err != nil || run || code != 0 {
		t.Fatalf("run %v, code %d, %v; want the child's end", run, code, err)
	}
	st, _ := dir.Load()
	if st.Current != "1.5.0" || st.Probation != nil || st.Last == nil || st.Last.To != "1.5.0" {
		t.Fatalf("state %+v", st)
	}
}

// The state survives a torn write: Save replaces the file whole.
func TestStateSaveLoad(t *testing.T) {
	dir := Dir(t.TempDir())
	if st, err := dir.Load(); err != nil || st.Current != "" {
		t.Fatalf("empty dir: %+v, %v", st, err)
	}
	if err := dir.Save(State{Current: "1.5.0"}); err != nil {
		t.Fatal(err)
	}
	// A leftover temporary file from a crash does not matter.
	if err := os.WriteFile(filepath.Join(string(dir), StateFile+".tmp"), []byte("{torn"), 0o640); err != nil {
		t.Fatal(err)
	}
	if st, err := dir.Load(); err != nil || st.Current != "1.5.0" {
		t.Fatalf("%+v, %v", st, err)
	}
}
