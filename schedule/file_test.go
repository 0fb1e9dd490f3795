package schedule

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func contains(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func TestLoadDesignExample(t *testing.T) {
	path := filepath.Join(t.TempDir(), "schedules.yaml")
	body := `schedules:
  nights:
    windows:
      - cron: "0 22 * * MON-FRI"
        duration: 8h
    timezone: Asia/Tokyo
    jitter: 20m
    max_rate: 20MiB/s
    blackouts:
      - cron: "0 0 1 * *"
        duration: 24h
  always: { always: true }
  never:  { never: true }
`
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Names(); strings.Join(got, ",") != "always,never,nights" {
		t.Errorf("names = %v", got)
	}
	s, err := f.Lookup("nights")
	if err != nil {
		t.Fatal(err)
	}
	if s.Jitter != 20*time.Minute || s.MaxRate != 20<<20 || s.Location.String() != "Asia/Tokyo" {
		t.Errorf("nights = %+v", s)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file error = %v", err)
	}
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		want  []string // substrings of the error, besides the file name
		sched string
	}{
		{"bad cron", "  s:\n    windows: [{cron: '0 25 * * *', duration: 1h}]\n", []string{"windows[0].cron", "25", ":3:"}, "s"},
		{"cron with too many fields", "  s:\n    windows: [{cron: '0 0 0 0 * * *', duration: 1h}]\n", []string{"windows[0].cron"}, "s"},
		{"missing cron", "  s:\n    windows: [{duration: 1h}]\n", []string{"windows[0].cron", "missing"}, "s"},
		{"@every refused", "  s:\n    windows: [{cron: '@every 1h', duration: 1h}]\n", []string{"windows[0].cron", "@every"}, "s"},
		{"never-opening cron", "  s:\n    windows: [{cron: '0 0 30 2 *', duration: 1h}]\n", []string{"windows[0].cron", "never opens"}, "s"},
		{"TZ prefix without spec", "  s:\n    windows: [{cron: 'CRON_TZ=UTC', duration: 1h}]\n", []string{"windows[0].cron", "timezone prefix"}, "s"},
		{"unknown CRON_TZ", "  s:\n    windows: [{cron: 'CRON_TZ=Mars/Base 0 0 * * *', duration: 1h}]\n", []string{"windows[0].cron", "Mars/Base"}, "s"},
		{"missing duration", "  s:\n    windows:\n      - cron: '0 0 * * *'\n", []string{"windows[0].duration", "missing", ":4:"}, "s"},
		{"zero duration", "  s:\n    windows: [{cron: '0 0 * * *', duration: 0s}]\n", []string{"windows[0].duration", "positive"}, "s"},
		{"negative duration", "  s:\n    windows: [{cron: '0 0 * * *', duration: -1h}]\n", []string{"windows[0].duration", "positive"}, "s"},
		{"bad duration", "  s:\n    windows: [{cron: '0 0 * * *', duration: 1day}]\n", []string{"windows[0].duration", "1day"}, "s"},
		{"duration over interval", "  s:\n    windows: [{cron: '0 * * * *', duration: 61m}]\n", []string{"windows[0].duration", "longer than", "1h0m0s"}, "s"},
		{"weekday duration over min gap", "  s:\n    windows: [{cron: '0 22 * * MON-FRI', duration: 25h}]\n", []string{"windows[0].duration", "longer than"}, "s"},
		{"blackout duration over interval", "  s:\n    windows: [{cron: '@daily', duration: 1h}]\n    blackouts: [{cron: '@hourly', duration: 2h}]\n", []string{"blackouts[0].duration", "longer than"}, "s"},
		{"unknown timezone", "  s:\n    timezone: Mars/Olympus\n    windows: [{cron: '@daily', duration: 1h}]\n", []string{"timezone", "Mars/Olympus", ":3:"}, "s"},
		{"rate without unit", "  s:\n    max_rate: 1000\n    windows: [{cron: '@daily', duration: 1h}]\n", []string{"max_rate", "1000"}, "s"},
		{"rate without /s", "  s:\n    max_rate: 20MiB\n    windows: [{cron: '@daily', duration: 1h}]\n", []string{"max_rate", "20MiB"}, "s"},
		{"negative jitter", "  s:\n    jitter: -5m\n    windows: [{cron: '@daily', duration: 1h}]\n", []string{"jitter", "negative"}, "s"},
		{"bad jitter", "  s:\n    jitter: soon\n    windows: [{cron: '@daily', duration: 1h}]\n", []string{"jitter", "soon"}, "s"},
		{"always and never", "  s: { always: true, never: true }\n", []string{"always", "both"}, "s"},
		{"always with windows", "  s:\n    always: true\n    windows: [{cron: '@daily', duration: 1h}]\n", []string{"always", "windows"}, "s"},
		{"never with blackouts", "  s:\n    never: true\n    blackouts: [{cron: '@daily', duration: 1h}]\n", []string{"never", "blackouts"}, "s"},
		{"no windows", "  s:\n    jitter: 5m\n", []string{"windows", "never: true"}, "s"},
		{"redefined built-in", "  always:\n    windows: [{cron: '@daily', duration: 1h}]\n", []string{"built-in"}, "always"},
		{"unknown field", "  s:\n    window: [{cron: '@daily', duration: 1h}]\n", []string{"sched.yaml:3:", "schedules.s.window: unknown field; did you mean windows? (known here: windows, blackouts"}, ""},
		{"unknown rule field", "  s:\n    windows: [{cron: '@daily', duration: 1h, jiter: 5m}]\n", []string{"sched.yaml:3:", "schedules.s.windows[0].jiter: unknown field (known here: cron, duration)"}, ""},
		{"not yaml", "  s: [\n", []string{"sched.yaml:2: not valid YAML"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("sched.yaml", []byte("schedules:\n"+tt.body))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			want := append([]string{"sched.yaml"}, tt.want...)
			if tt.sched != "" {
				want = append(want, `: schedules.`+tt.sched+`.`)
			}
			if !contains(err.Error(), want...) {
				t.Errorf("error %q does not contain all of %q", err, want)
			}
		})
	}
}

func TestAllErrorsReported(t *testing.T) {
	_, err := Parse("x.yaml", []byte("schedules:\n  a:\n    timezone: Nowhere\n    windows: [{cron: '@daily', duration: 1h}]\n  b:\n    windows: [{cron: 'nope', duration: 1h}]\n"))
	if err == nil || !contains(err.Error(), "x.yaml:3: schedules.a.timezone:", "x.yaml:6: schedules.b.windows[0].cron:") {
		t.Fatalf("error = %v", err)
	}
}

func TestEmptyFile(t *testing.T) {
	f, err := Parse("empty.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Lookup("always"); err != nil {
		t.Error(err)
	}
}
