package subscriber

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ted/schedule"
)

// TestDaemonWaitsForExtractWindow checks that a revision received outside
// the extract window waits as received, with the opening in its reason,
// and is extracted when the window opens (fake clock: no waiting).
func TestDaemonWaitsForExtractWindow(t *testing.T) {
	file := filepath.Join(t.TempDir(), "schedules.yaml")
	if err := os.WriteFile(file, []byte("schedules:\n  nights:\n    windows:\n      - cron: \"0 22 * * *\"\n        duration: 2h\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := schedule.NewSource(file, []string{"nights"})
	if err != nil {
		t.Fatal(err)
	}
	clock := schedule.NewFakeClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))

	p := newFakeParent(t)
	s1, m1 := p.publish(daemonKey(), appRev1(), 1)
	p.setGreet(s1)
	d := newDaemon(t)
	d.cfg.Schedules, d.cfg.Extract, d.cfg.Clock = src, "nights", clock
	s := d.start(p.dial)

	r := waitState(t, s.Subscriber, "app", 1, StateReceived)
	waitUntil(t, "the reason to name the opening", func() bool {
		r, _ = stateOf(s.Subscriber, "app", 1)
		return strings.Contains(r.Reason, "2026-11-23T22:00:00Z")
	})
	if _, err := os.Stat(d.target()); !os.IsNotExist(err) {
		t.Fatalf("the target exists before the window opens: %v", err)
	}
	clock.BlockUntil(1) // the window timer
	clock.Set(time.Date(2026, 11, 23, 22, 0, 1, 0, time.UTC))
	waitState(t, s.Subscriber, "app", 1, StateExtracted)
	assertTree(t, m1, d.target(), appRev1())
}

// TestDaemonExtractNowIgnoresWindow checks `ted subscriber extract` with a
// schedule that never opens.
func TestDaemonExtractNowIgnoresWindow(t *testing.T) {
	p := newFakeParent(t)
	s1, m1 := p.publish(daemonKey(), appRev1(), 1)
	p.setGreet(s1)
	d := newDaemon(t)
	d.cfg.Extract = schedule.Never
	s := d.start(p.dial)
	r := waitState(t, s.Subscriber, "app", 1, StateReceived)
	if !strings.Contains(r.Reason, "never opens") {
		t.Errorf("reason %q, want it to say the schedule never opens", r.Reason)
	}
	if err := s.ExtractNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitState(t, s.Subscriber, "app", 1, StateExtracted)
	assertTree(t, m1, d.target(), appRev1())
}
