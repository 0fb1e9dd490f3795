package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeScheduleFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "schedules.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestScheduleCheckLists(t *testing.T) {
	file := writeScheduleFile(t, `schedules:
  nights:
    windows:
      - cron: "0 22 * * *"
        duration: 8h
    timezone: Asia/Tokyo
  never: {never: true}
`)
	// A schedule that is always open lists one window that never closes.
	always := writeScheduleFile(t, "schedules:\n  always: {always: true}\n")
	var aout bytes.Buffer
	if err := runScheduleCheck(scheduleCheckOptions{at: "2026-11-23T14:00:00Z", next: 3}, always, true, &aout); err != nil {
		t.Fatal(err)
	}
	var ares scheduleCheckResult
	if err := json.Unmarshal(aout.Bytes(), &ares); err != nil {
		t.Fatal(err)
	}
	if len(ares.Schedules) != 1 || !ares.Schedules[0].OpenNow || len(ares.Schedules[0].Windows) != 1 ||
		ares.Schedules[0].Windows[0] != (windowListing{"2026-11-23T14:00:00Z", ""}) {
		t.Errorf("always = %+v", ares.Schedules)
	}
	var out bytes.Buffer
	opts := scheduleCheckOptions{at: "2026-11-23T14:00:00Z", next: 3}
	if err := runScheduleCheck(opts, file, true, &out); err != nil {
		t.Fatal(err)
	}
	var res scheduleCheckResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	byName := map[string]scheduleListing{}
	for _, s := range res.Schedules {
		byName[s.Name] = s
	}
	nights := byName["nights"]
	// 22:00 Tokyo is 13:00 UTC: open at 14:00 UTC, until 21:00 UTC.
	if !nights.OpenNow || len(nights.Windows) != 3 || nights.Windows[0] != (windowListing{"2026-11-23T13:00:00Z", "2026-11-23T21:00:00Z"}) ||
		nights.Windows[1].Start != "2026-11-24T13:00:00Z" {
		t.Errorf("nights = %+v", nights)
	}
	if never := byName["never"]; never.OpenNow || len(never.Windows) != 0 {
		t.Errorf("never = %+v", never)
	}
	if len(res.Schedules) != 2 {
		t.Errorf("%d schedules listed, want the file's 2", len(res.Schedules))
	}
}

func TestScheduleCheckRefusesBadFile(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"cron", "schedules:\n  x:\n    windows:\n      - cron: \"0 99 * * *\"\n        duration: 1h\n", `schedules.x.windows[0].cron`},
		{"duration", "schedules:\n  x:\n    windows:\n      - cron: \"0 1 * * *\"\n        duration: 0s\n", `windows[0].duration`},
		{"longer than its interval", "schedules:\n  x:\n    windows:\n      - cron: \"0 * * * *\"\n        duration: 2h\n", `windows[0].duration`},
		{"timezone", "schedules:\n  x:\n    windows:\n      - cron: \"0 1 * * *\"\n        duration: 1h\n    timezone: Mars/Olympus\n", `timezone`},
		{"rate", "schedules:\n  x:\n    always: true\n    max_rate: 20\n", `max_rate`},
		{"unknown field", "schedules:\n  x:\n    always: true\n    colour: blue\n", `:4: schedules.x.colour: unknown field (known here: windows, blackouts, timezone, jitter, max_rate, always, never)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := writeScheduleFile(t, tc.text)
			err := runScheduleCheck(scheduleCheckOptions{next: 5}, file, false, &bytes.Buffer{})
			if exitCode(err) != exitUsage {
				t.Fatalf("exit %d (%v), want %d", exitCode(err), err, exitUsage)
			}
			if !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name the file and %q", err, tc.want)
			}
		})
	}
	if err := runScheduleCheck(scheduleCheckOptions{at: "yesterday", next: 5}, writeScheduleFile(t, "schedules: {}\n"), false, &bytes.Buffer{}); exitCode(err) != exitUsage {
		t.Fatalf("--at yesterday: %v, want a usage error", err)
	}
}
