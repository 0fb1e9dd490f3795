// Edge cases of software packages found by a second reading, each a
// test that failed before its fix.

package swpkg

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestAgentVersionPrereleaseJudgedByRelease(t *testing.T) {
	env := Env{AgentVersion: "1.3.0-rc.1"}
	ok, reason, err := Prerequisite{Kind: "agent_version", Value: ">=1.0"}.Check(context.Background(), env)
	if err != nil || !ok {
		t.Fatalf("agent 1.3.0-rc.1 against >=1.0: ok=%v reason=%q err=%v", ok, reason, err)
	}
}

func TestCommandTimeoutKillsBackgroundChildren(t *testing.T) {
	env := Env{Root: t.TempDir()}
	start := time.Now()
	ok, reason, err := Prerequisite{Kind: "command", Value: "sleep 30", Timeout: 300 * time.Millisecond}.Check(context.Background(), env)
	if ok || err != nil || !strings.Contains(reason, "timed out") || time.Since(start) > 3*time.Second {
		t.Fatalf("ok=%v reason=%q err=%v after %v", ok, reason, err, time.Since(start))
	}
	start = time.Now()
	ok, reason, err = Prerequisite{Kind: "command", Value: "setsid sleep 30 & sleep 30", Timeout: 300 * time.Millisecond}.Check(context.Background(), env)
	// A child in a session of its own keeps the output open: the check
	// still ends, timed out, and does not wait for it.
	if ok || err != nil || !strings.Contains(reason, "timed out") {
		t.Errorf("setsid: ok=%v reason=%q err=%v after %v", ok, reason, err, time.Since(start))
	}
	start = time.Now()
	ok, reason, err = Prerequisite{Kind: "command", Value: "sleep 5 & exit 0", Timeout: 10 * time.Second}.Check(context.Background(), env)
	// A command that exits 0 leaving a child behind passes.
	if !ok || err != nil {
		t.Errorf("background child, exit 0: ok=%v reason=%q err=%v after %v", ok, reason, err, time.Since(start))
	}
}
