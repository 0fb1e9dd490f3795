//go:build linux

package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// copyTree copies a source tree as it is (modes, symlinks).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v: %s", src, dst, err, out)
	}
}

// changeTree turns the network's source tree into the next revision: a
// file changed in content and mode, one dropped, one added, a symlink
// retargeted, a directory's mode changed.
func changeTree(t *testing.T, dir string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "etc/app.conf"), []byte("port = 8080\n"), 0o600)
	if err := os.Remove(filepath.Join(dir, "old.txt")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "share/added.txt"), []byte("new in revision 2\n"), 0o644)
	if err := os.Remove(filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("etc/app.conf", filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "var/cache"), 0o700); err != nil {
		t.Fatal(err)
	}
}

// extractNow runs `ted subscriber extract` against n.
func (n *node) extractNow() result {
	return ted(n.nw.t, "subscriber", "extract", "--config", n.config)
}

// waitJournalGone waits until n has no extraction or rollback of app
// pending: recovery at start-up is over.
func (n *node) waitJournalGone() {
	n.nw.t.Helper()
	journal := filepath.Join(n.dataDir, "installed", "journal", "app.cbor")
	waitFor(n.nw.t, n.name+" to finish recovery", func() (bool, string) {
		_, err := os.Stat(journal)
		return errors.Is(err, os.ErrNotExist), fmt.Sprintf("%s: %v", journal, err)
	})
}

// postRuns returns the revisions whose post-action ran on n, one per run.
func (n *node) postRuns() []string {
	b, err := os.ReadFile(filepath.Join(n.root, "post-runs"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		n.nw.t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// TestCrashAtEveryJournalStep kills the real subscriber (SIGKILL, from the
// installer's fault hook) at each step of an extraction and of a rollback
// in turn, one subscriber per step, and checks that after a restart the
// target is exactly the old or the new revision, file by file (the new one
// from the write on: carried on, not redone), and that the post-action ran
// once for the revision that stays.
func TestCrashAtEveryJournalStep(t *testing.T) {
	t.Parallel()
	installPoints := []struct {
		point   string
		forward bool // recovery completes revision 2
	}{
		// Interrupted while writing or removing, a revision without a
		// pre-action is carried on from its last checkpoint; before that
		// it starts again.
		{"begin", false}, {"backup", false}, {"write", true}, {"write+1", true},
		{"remove", true}, {"commit", true}, {"post", true},
	}
	rollbackPoints := []string{"restore", "restore+1", "undone"}
	nw := newNetwork(t)
	var names []string
	for i := range len(installPoints) + len(rollbackPoints) {
		names = append(names, fmt.Sprintf("web-%02d", i+1))
	}
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: names},
	}})
	// Extraction only on demand, so what recovery leaves can be looked at.
	nw.writeSchedules("hold.yaml", "schedules:\n  hold:\n    never: true\n")
	post := `echo "$TED_REVISION" >> ../post-runs`
	nw.build("1.0.0", "--post", post)
	src1 := filepath.Join(nw.dir, "site-1")
	copyTree(t, nw.src, src1)
	changeTree(t, nw.src)
	src2 := filepath.Join(nw.dir, "site-2")
	copyTree(t, nw.src, src2)
	nw.build("2.0.0", "--post", post)
	nw.publish("app@1", dist1)

	subs := make([]*node, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			subs[i] = nw.subscriber(name, subscriberSpec{parents: []string{dist1.addr}, schedules: "hold.yaml", extract: "hold"})
		})
	}
	wg.Wait()
	for i, n := range subs {
		n.waitState(1, "received")
		if r := n.extractNow(); r.code != 0 {
			t.Fatalf("extract on %s: %s", n.name, r)
		}
		n.waitState(1, "extracted")
		// Each dies at its own point from the next run on.
		n.stop()
		if i < len(installPoints) {
			n.env = []string{"TED_TEST_KILL_AT=" + installPoints[i].point}
		} else {
			n.env = []string{"TED_TEST_KILL_AT=" + rollbackPoints[i-len(installPoints)]}
		}
		n.start()
	}
	nw.publish("app@2", dist1)

	for i, n := range subs {
		n.waitState(2, "received")
		if i < len(installPoints) {
			if r := n.extractNow(); r.code == 0 {
				t.Errorf("extract on %s succeeded; the daemon was to die at %s", n.name, installPoints[i].point)
			}
		} else {
			if r := n.extractNow(); r.code != 0 {
				t.Fatalf("extract on %s: %s", n.name, r)
			}
			requireTree(t, n.target, src2)
			if r := ted(t, "subscriber", "rollback", "--config", n.config, "--name", "app"); r.code == 0 {
				t.Errorf("rollback on %s succeeded; the daemon was to die at %s", n.name, rollbackPoints[i-len(installPoints)])
			}
		}
		n.waitKilled()
		n.env = nil
		n.start()
	}

	// recovered checks that n's restart found the journal at the step of
	// the point where it died.
	recovered := func(t *testing.T, n *node, point string) {
		t.Helper()
		step, _, _ := strings.Cut(point, "+")
		if n.logLine("recovering interrupted work", "step="+step) == "" {
			t.Errorf("%s's restart did not recover from step %s:\n%s", n.name, step, n.runLog())
		}
	}
	for i, n := range subs {
		n.waitJournalGone()
		if i >= len(installPoints) {
			point := rollbackPoints[i-len(installPoints)]
			t.Run("rollback at "+point, func(t *testing.T) {
				recovered(t, n, point)
				requireTree(t, n.target, src1)
				n.waitState(2, "rolled_back")
				n.waitState(1, "extracted")
				if runs := n.postRuns(); strings.Join(runs, " ") != "1 2" {
					t.Errorf("post-actions ran for %v, want 1 2", runs)
				}
			})
			continue
		}
		tt := installPoints[i]
		t.Run("extraction at "+tt.point, func(t *testing.T) {
			recovered(t, n, tt.point)
			if tt.forward {
				requireTree(t, n.target, src2)
				n.waitState(2, "extracted")
			} else {
				requireTree(t, n.target, src1)
				n.waitState(1, "extracted")
				// Extracted again from the start, pre- and post-actions
				// included.
				if r := n.extractNow(); r.code != 0 {
					t.Fatalf("extract on %s: %s", n.name, r)
				}
				n.waitState(2, "extracted")
				requireTree(t, n.target, src2)
			}
			if runs := n.postRuns(); strings.Join(runs, " ") != "1 2" {
				t.Errorf("post-actions ran for %v, want 1 then 2 once", runs)
			}
		})
	}
}

// TestRollbackCommand drives `ted subscriber rollback` against a real
// daemon: a rollback that would break a dependant is refused naming it;
// without a name the most recent installation goes first; a rolled back
// revision is not extracted again; a failing post-action rolls back.
func TestRollbackCommand(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-01"}},
	}})
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr}})
	state, waitState := web1.distState, web1.waitDistState

	nw.build("1.0.0", "--name", "runtime")
	src1 := filepath.Join(nw.dir, "site-1")
	copyTree(t, nw.src, src1)
	nw.publish("runtime", dist1)
	waitState("runtime", 1, "extracted")
	changeTree(t, nw.src)
	nw.build("2.0.0", "--name", "runtime")
	nw.publish("runtime", dist1)
	waitState("runtime", 2, "extracted")
	nw.build("1.0.0", "--requires", "runtime >=2")
	nw.publish("app", dist1)
	waitState("app", 1, "extracted")
	runtime := filepath.Join(web1.root, "runtime")

	r := ted(t, "subscriber", "rollback", "--config", web1.config, "--name", "runtime")
	if r.code != 1 || !strings.Contains(r.stderr, "app 1.0.0 requires runtime >=2") {
		t.Fatalf("rollback of runtime under app: %s; want exit 1 naming app", r)
	}
	requireTree(t, runtime, nw.src)

	var res struct {
		RolledBack struct {
			Name string `json:"name"`
			From uint64 `json:"from"`
			To   uint64 `json:"to"`
		} `json:"rolled_back"`
	}
	tedJSON(t, &res, "subscriber", "rollback", "--config", web1.config)
	if res.RolledBack.Name != "app" || res.RolledBack.From != 1 || res.RolledBack.To != 0 {
		t.Errorf("rollback without a name undid %+v, want app@1 to nothing", res.RolledBack)
	}
	if _, err := os.Lstat(filepath.Join(web1.root, "app")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("app's target after its rollback: %v, want it gone", err)
	}
	waitState("app", 1, "rolled_back")

	mustTed(t, "subscriber", "rollback", "--config", web1.config, "--name", "runtime")
	requireTree(t, runtime, src1)
	waitState("runtime", 2, "rolled_back")
	waitState("runtime", 1, "extracted")
	if r := ted(t, "subscriber", "rollback", "--config", web1.config, "--name", "app"); r.code != 4 || !strings.Contains(r.stderr, "app is not installed") {
		t.Errorf("rollback of what is not installed: %s; want exit 4", r)
	}

	// The rolled back revisions stay rolled back when extraction runs;
	// a new app waits for a runtime that satisfies it again.
	nw.build("1.1.0", "--requires", "runtime >=2")
	nw.publish("app", dist1)
	blocked := waitState("app", 2, "blocked")
	if !strings.Contains(blocked.Reason, "runtime 1.0.0") {
		t.Errorf("app@2 blocked with %q, want it to name the extracted runtime 1.0.0", blocked.Reason)
	}
	if st := state("runtime", 2); st.State != "rolled_back" {
		t.Errorf("runtime@2 is %s after an extract run, want rolled_back", st.State)
	}

	// A failing post-action rolls its revision back.
	nw.build("3.0.0", "--name", "runtime", "--post", "echo cannot start >&2; exit 3")
	nw.publish("runtime", dist1)
	failed := waitState("runtime", 3, "failed")
	for _, want := range []string{"exited 3", "cannot start", "rolled back to runtime@1"} {
		if !strings.Contains(failed.Error, want) {
			t.Errorf("runtime@3 failed with %q, want it to say %q", failed.Error, want)
		}
	}
	requireTree(t, runtime, src1)
	if st := state("runtime", 1); st.State != "extracted" {
		t.Errorf("runtime@1 is %s after runtime@3 rolled back, want extracted", st.State)
	}
}
