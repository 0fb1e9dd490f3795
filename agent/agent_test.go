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
	// A restart after the deadline (the launcher was killed) rolls back
	// without starting it.
	onProbation(t, dir, "1.5.0", -time.Second)
	if run, _, err := l.Launch(t.Context()); err != nil || !run {
		t.Fatalf("run %v, %v", run, err)
	}
	if st, _ := dir.Load(); st.Probation != nil {
		t.Fatalf("still on probation: %+v", st)
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
