package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ted/agent"
	"ted/distribution"
	"ted/schedule"
	"ted/subscriber"
)

// An upgrader decides by its agent block before it installs anything:
// upgrades off, outside the upgrade window (a wait armed only when there
// is something to call again), the parent first, a parent too far apart,
// the version that runs; otherwise it goes on.
func TestUpgraderDecides(t *testing.T) {
	dir := t.TempDir()
	// A window twelve hours from now: closed now.
	hour := (time.Now().UTC().Hour() + 12) % 24
	file := filepath.Join(dir, "schedules.yaml")
	if err := os.WriteFile(file, fmt.Appendf(nil, "schedules:\n  later:\n    windows:\n      - cron: \"0 %d * * *\"\n        duration: 1h\n", hour), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := schedule.NewSource(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	u := &upgrader{dir: agent.Dir(filepath.Join(dir, "agent")), file: &agentFile{Channel: "agents", Upgrade: "later", Probation: time.Minute},
		version: "1.4.0", schedules: src, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer u.stop()
	m := &distribution.Manifest{Name: distribution.AgentName(agent.Platform()), Revision: 3, Version: "1.5.0",
		Kind: distribution.KindAgent, Platform: agent.Platform()}

	for _, tc := range []struct {
		upgrade, parent string
		follow          bool
		again           func()
		state, reason   string
	}{
		{"later", "1.5.0", false, nil, subscriber.StateBlocked, "waiting for the upgrade window (later)"},
		{"later", "1.5.0", false, func() {}, subscriber.StateBlocked, "waiting for the upgrade window (later)"},
		{"never", "1.5.0", false, nil, subscriber.StateReceived, "upgrades are off here"},
		{"always", "1.4.0", true, nil, subscriber.StateBlocked, "waiting for the parent to run 1.5.0 first"},
		{"always", "1.7.0", false, nil, subscriber.StateBlocked, "would not work with the parent"},
		{"always", "1.5.0", true, nil, "", ""},
		{"always", "", false, nil, "", ""},
	} {
		u.file.Upgrade, u.file.FollowParent = tc.upgrade, tc.follow
		state, reason, ok := u.ready(m, tc.parent, tc.again)
		if ok != (tc.state == "") || state != tc.state || !strings.Contains(reason, tc.reason) {
			t.Errorf("upgrade %s, parent %q, follow %v: %s %q (go on: %v); want %s %q", tc.upgrade, tc.parent, tc.follow, state, reason, ok, orDash(tc.state), tc.reason)
		}
		u.mu.Lock()
		armed := u.retry[m.Name] != nil
		u.mu.Unlock()
		if tc.upgrade == "later" && armed != (tc.again != nil) {
			t.Errorf("a wait for the window armed %v with again %v: a nil again must arm nothing", armed, tc.again != nil)
		}
	}
	// The version that runs.
	u.version = "1.5.0"
	if state, _, ok := u.ready(m, "", nil); ok || state != subscriber.StateExtracted {
		t.Errorf("the version that runs: %s, go on %v", state, ok)
	}
}
