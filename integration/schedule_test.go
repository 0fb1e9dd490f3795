//go:build linux

package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeSchedules writes a schedule file (YAML) named name into the
// network's directory, where configs find it by that name.
func (nw *network) writeSchedules(name, yaml string) {
	nw.t.Helper()
	writeFile(nw.t, filepath.Join(nw.dir, name), []byte(yaml), 0o644)
}

// sighup sends SIGHUP to the running daemon.
func (n *node) sighup() {
	n.nw.t.Helper()
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		n.nw.t.Fatalf("SIGHUP %s: not running", n.name)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		n.nw.t.Fatalf("SIGHUP %s: %v", n.name, err)
	}
}

// waitLogCount waits until the current run's log holds at least count
// lines with every one of parts.
func (n *node) waitLogCount(count int, parts ...string) {
	n.nw.t.Helper()
	waitFor(n.nw.t, fmt.Sprintf("%d lines of %s's log with %q", count, n.name, parts), func() (bool, string) {
		got := 0
		for line := range strings.SplitSeq(n.runLog(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				got++
			}
		}
		return got >= count, fmt.Sprintf("%d such lines", got)
	})
}

// requireAlive fails unless the daemon runs and answers status.
func requireAlive(t *testing.T, n *node) {
	t.Helper()
	if !n.running() {
		t.Fatalf("%s is not running:\n%s", n.name, n.runLog())
	}
	if err := n.status(&map[string]any{}); err != nil {
		t.Fatalf("%s does not answer status: %v", n.name, err)
	}
}

// scheduleCheck is `ted schedule check --json`.
type scheduleCheck struct {
	Schedules []struct {
		Name    string `json:"name"`
		OpenNow bool   `json:"open_now"`
		Windows []struct {
			Start time.Time `json:"start"`
			End   time.Time `json:"end"`
		} `json:"windows"`
	} `json:"schedules"`
}

// TestScheduleNothingBeforeWindow publishes into a channel whose send
// window opens a few seconds later: until it opens, the subscriber holds
// nothing and the distributor has sent no byte; then it extracts.
func TestScheduleNothingBeforeWindow(t *testing.T) {
	t.Parallel()
	// The opening: a whole second, far enough ahead for the set-up below
	// (a few hundred milliseconds, more on a loaded machine) and the
	// checks while closed.
	opening := time.Now().UTC().Truncate(time.Second).Add(15 * time.Second)
	nw := newNetwork(t)
	nw.writeSchedules("schedules.yaml", fmt.Sprintf(
		"schedules:\n  later:\n    windows:\n      - cron: \"%d %d %d * * *\"\n        duration: 30s\n    timezone: UTC\n",
		opening.Second(), opening.Minute(), opening.Hour()))
	var check scheduleCheck
	tedJSON(t, &check, "schedule", "check", filepath.Join(nw.dir, "schedules.yaml"), "--next", "1")
	if len(check.Schedules) != 1 || check.Schedules[0].Name != "later" || check.Schedules[0].OpenNow ||
		len(check.Schedules[0].Windows) != 1 || !check.Schedules[0].Windows[0].Start.Equal(opening) ||
		!check.Schedules[0].Windows[0].End.Equal(opening.Add(30*time.Second)) {
		t.Fatalf("schedule check: %+v, want one window %s + 30s", check, opening)
	}

	dist1 := nw.distributor("dist-1", distributorSpec{schedules: "schedules.yaml", channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-01"}, send: "later"},
	}})
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr}})
	nw.build("1.0.0")
	pub := nw.publish("app", dist1)
	if pub.Revision != 1 || pub.SentChunks == 0 {
		t.Fatalf("publish: %+v", pub)
	}

	// The offer reaches the subscriber as a notice that it is held.
	web1.waitLog("parent holds an offer until its send window opens")
	if time.Now().After(opening.Add(-time.Second)) {
		// A machine this loaded says nothing about TED: skip rather than
		// fail a run for it.
		t.Skipf("set-up took until %s, too close to the opening at %s to check the closed window", time.Now().UTC(), opening)
	}
	// While closed: nothing sent, nothing received, nothing extracted,
	// checked until just before the opening.
	checks := 0
	waitFor(t, "the send window to be about to open", func() (bool, string) {
		if time.Now().After(opening.Add(-300 * time.Millisecond)) {
			return true, ""
		}
		checks++
		if sent := dist1.metric("ted_distributor_sent_bytes_total"); sent != 0 {
			t.Fatalf("%s before the window opens at %s: dist-1 sent %.0f bytes", time.Now().UTC(), opening, sent)
		}
		if got := web1.metric("ted_subscriber_received_chunks_total"); got != 0 {
			t.Fatalf("%s before the window opens at %s: web-01 received %.0f chunks", time.Now().UTC(), opening, got)
		}
		st, err := web1.subscriberStatus()
		if err != nil {
			return false, err.Error()
		}
		if r, ok := st.revision(1); ok && (r.State != "receiving" || r.HaveChunks != 0) {
			t.Fatalf("%s before the window opens at %s: web-01 says %+v", time.Now().UTC(), opening, r)
		}
		requireNothingExtracted(t, web1)
		return false, ""
	})
	if checks < 2 {
		t.Fatalf("only %d checks before the opening", checks)
	}
	t.Logf("closed window: %d checks, nothing sent", checks)

	web1.waitState(1, "extracted")
	if now := time.Now(); now.Before(opening) {
		t.Fatalf("extracted at %s, before the window opened at %s", now.UTC(), opening)
	}
	requireTree(t, web1.target, nw.src)
	if sent := dist1.metric("ted_distributor_sent_bytes_total"); sent != float64(pub.SentBytes) {
		t.Errorf("dist-1 sent %.0f bytes, want the %d of the distribution", sent, pub.SentBytes)
	}
}

// TestSchedulePauseResume sends a distribution that one short send window
// at max_rate cannot carry: the transfer pauses when the window closes and
// resumes at the next opening with only the missing chunks, so no chunk
// travels twice.
func TestSchedulePauseResume(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	writeFile(t, filepath.Join(nw.src, "bin/server"), randomBytes(6<<20), 0o755)
	// Windows of 3 s every 6 s at 1 MiB/s: about 3 MiB a window.
	nw.writeSchedules("schedules.yaml",
		"schedules:\n  short:\n    windows:\n      - cron: \"*/6 * * * * *\"\n        duration: 3s\n    max_rate: 1MiB/s\n")
	dist1 := nw.distributor("dist-1", distributorSpec{schedules: "schedules.yaml", channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-01"}, send: "short"},
	}})
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr}})
	built := nw.build("1.0.0")
	pub := nw.publish("app", dist1)
	if pub.Revision != 1 || pub.SentChunks != built.Chunks {
		t.Fatalf("publish: %+v (build %+v)", pub, built)
	}

	// A pause in the middle: some chunks held, some missing (a window
	// may also close before the first chunk, a pause with none).
	var paused revisionState
	waitFor(t, "web-01 to pause app@1 part way", func() (bool, string) {
		st, err := web1.subscriberStatus()
		if err != nil {
			return false, err.Error()
		}
		r, _ := st.revision(1)
		paused = r
		return r.State == "receiving" && strings.HasPrefix(r.Reason, "paused:") && strings.Contains(r.Reason, "window") &&
			r.HaveChunks > 0 && r.HaveChunks < r.Chunks, fmt.Sprintf("%+v", r)
	})
	t.Logf("paused: %+v", paused)
	web1.waitLog("transfer paused until the send window opens")

	web1.waitState(1, "extracted")
	requireTree(t, web1.target, nw.src)
	sentChunks := dist1.metric("ted_distributor_sent_chunks_total")
	sentBytes := dist1.metric("ted_distributor_sent_bytes_total")
	gotChunks := web1.metric("ted_subscriber_received_chunks_total")
	pauses := strings.Count(web1.runLog(), "transfer paused until the send window opens")
	t.Logf("%d chunks, %d encoded bytes; dist-1 sent %.0f chunks, %.0f bytes; web-01 received %.0f chunks; %d pauses",
		pub.SentChunks, pub.SentBytes, sentChunks, sentBytes, gotChunks, pauses)
	if sentChunks != float64(pub.SentChunks) || sentBytes != float64(pub.SentBytes) || gotChunks != float64(pub.SentChunks) {
		t.Errorf("a chunk travelled twice: dist-1 sent %.0f chunks, %.0f bytes and web-01 received %.0f chunks for %d chunks, %d bytes",
			sentChunks, sentBytes, gotChunks, pub.SentChunks, pub.SentBytes)
	}
}

// TestScheduleExtractNever holds a received revision under extract: never
// until `ted subscriber extract` extracts it.
func TestScheduleExtractNever(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-01"}},
	}})
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr}, extract: "never"})
	nw.build("1.0.0")
	nw.publish("app", dist1)

	r := web1.waitState(1, "received")
	if !strings.Contains(r.Reason, "never") {
		t.Errorf("received revision's reason %q does not say the schedule never opens", r.Reason)
	}
	requireNothingExtracted(t, web1)

	mustTed(t, "subscriber", "extract", "--config", web1.config)
	web1.waitState(1, "extracted")
	requireTree(t, web1.target, nw.src)
}

// TestScheduleSIGHUP reloads a subscriber's schedule file on SIGHUP: the
// daemon keeps running; a bad edit logs an error and keeps the schedules in
// use; a good one takes effect.
func TestScheduleSIGHUP(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	nw.writeSchedules("web-01-schedules.yaml", "schedules:\n  hold:\n    never: true\n")
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-01"}},
	}})
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr},
		schedules: "web-01-schedules.yaml", extract: "hold"})

	web1.sighup()
	web1.waitLogCount(1, "SIGHUP: schedule file reloaded")
	requireAlive(t, web1)
	// A distributor without a schedule file shrugs SIGHUP off too.
	dist1.sighup()
	dist1.waitLog("SIGHUP: no schedule file to reload")
	requireAlive(t, dist1)

	// A bad edit that would also open hold: none of it is taken.
	nw.writeSchedules("web-01-schedules.yaml",
		"schedules:\n  hold:\n    always: true\n  broken:\n    windows:\n      - cron: \"not a cron\"\n        duration: 1s\n")
	web1.sighup()
	line := web1.waitLog("SIGHUP: schedule file not reloaded")
	if !strings.Contains(line, "broken") {
		t.Errorf("the error does not name the bad schedule: %s", line)
	}
	requireAlive(t, web1)

	nw.build("1.0.0")
	nw.publish("app", dist1)
	web1.waitState(1, "received")
	// The reason follows the state at once (received, then the window is
	// looked at); wait for it rather than race it.
	waitFor(t, "app@1 held by the old hold schedule (never)", func() (bool, string) {
		st, err := web1.subscriberStatus()
		if err != nil {
			return false, err.Error()
		}
		r, _ := st.revision(1)
		return r.State == "received" && strings.Contains(r.Reason, "hold") && strings.Contains(r.Reason, "never"), fmt.Sprintf("%+v", r)
	})
	requireNothingExtracted(t, web1)

	// A good edit opens hold: the waiting revision is extracted.
	nw.writeSchedules("web-01-schedules.yaml", "schedules:\n  hold:\n    always: true\n")
	web1.sighup()
	web1.waitLogCount(2, "SIGHUP: schedule file reloaded")
	web1.waitState(1, "extracted")
	requireTree(t, web1.target, nw.src)
	requireAlive(t, web1)
}
