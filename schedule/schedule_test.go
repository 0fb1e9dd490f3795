package schedule

import (
	"testing"
	"time"
)

// mustSchedule parses a one-schedule file and returns the schedule "s".
func mustSchedule(t *testing.T, body string) *Schedule {
	t.Helper()
	f, err := Parse("test.yaml", []byte("schedules:\n  s:\n"+body))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	s, err := f.Lookup("s")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func loc(t *testing.T, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Skipf("no tzdata for %s: %v", name, err)
	}
	return l
}

func utc(y int, m time.Month, d, h, min int) time.Time {
	return time.Date(y, m, d, h, min, 0, 0, time.UTC)
}

func TestWindows(t *testing.T) {
	tokyo := loc(t, "Asia/Tokyo")
	ny := loc(t, "America/New_York")
	tests := []struct {
		name string
		body string
		from time.Time
		want []Window
	}{
		{
			name: "across midnight",
			body: "    windows: [{cron: '0 22 * * *', duration: 4h}]\n",
			from: utc(2026, 1, 1, 23, 0),
			want: []Window{
				{utc(2026, 1, 1, 22, 0), utc(2026, 1, 2, 2, 0)},
				{utc(2026, 1, 2, 22, 0), utc(2026, 1, 3, 2, 0)},
			},
		},
		{
			name: "weekdays only",
			body: "    windows: [{cron: '0 22 * * MON-FRI', duration: 8h}]\n",
			from: utc(2026, 1, 2, 12, 0), // a Friday
			want: []Window{
				{utc(2026, 1, 2, 22, 0), utc(2026, 1, 3, 6, 0)},
				{utc(2026, 1, 5, 22, 0), utc(2026, 1, 6, 6, 0)},
			},
		},
		{
			name: "31st skips short months",
			body: "    windows: [{cron: '0 0 31 * *', duration: 1h}]\n",
			from: utc(2026, 1, 31, 12, 0),
			want: []Window{
				{utc(2026, 3, 31, 0, 0), utc(2026, 3, 31, 1, 0)},
				{utc(2026, 5, 31, 0, 0), utc(2026, 5, 31, 1, 0)},
				{utc(2026, 7, 31, 0, 0), utc(2026, 7, 31, 1, 0)},
				{utc(2026, 8, 31, 0, 0), utc(2026, 8, 31, 1, 0)},
			},
		},
		{
			name: "leap day",
			body: "    windows: [{cron: '0 0 29 2 *', duration: 24h}]\n",
			from: utc(2026, 1, 1, 0, 0),
			want: []Window{
				{utc(2028, 2, 29, 0, 0), utc(2028, 3, 1, 0, 0)},
			},
		},
		{
			name: "timezone Asia/Tokyo",
			body: "    timezone: Asia/Tokyo\n    windows: [{cron: '0 22 * * *', duration: 1h}]\n",
			from: utc(2026, 1, 1, 0, 0),
			want: []Window{
				{time.Date(2026, 1, 1, 22, 0, 0, 0, tokyo), time.Date(2026, 1, 1, 23, 0, 0, 0, tokyo)},
				{utc(2026, 1, 2, 13, 0), utc(2026, 1, 2, 14, 0)},
			},
		},
		{
			name: "CRON_TZ prefix overrides timezone",
			body: "    timezone: UTC\n    windows: [{cron: 'CRON_TZ=Asia/Tokyo 0 22 * * *', duration: 1h}]\n",
			from: utc(2026, 1, 1, 0, 0),
			want: []Window{{utc(2026, 1, 1, 13, 0), utc(2026, 1, 1, 14, 0)}},
		},
		{
			name: "blackout cuts a window in two",
			body: "    windows: [{cron: '0 20 * * *', duration: 10h}]\n    blackouts: [{cron: '0 0 * * *', duration: 2h}]\n",
			from: utc(2026, 1, 1, 12, 0),
			want: []Window{
				{utc(2026, 1, 1, 20, 0), utc(2026, 1, 2, 0, 0)},
				{utc(2026, 1, 2, 2, 0), utc(2026, 1, 2, 6, 0)},
				{utc(2026, 1, 2, 20, 0), utc(2026, 1, 3, 0, 0)},
			},
		},
		{
			name: "blackout over a whole window hides it",
			body: "    windows: [{cron: '0 1 * * *', duration: 1h}]\n    blackouts: [{cron: '0 0 1 * *', duration: 24h}]\n",
			from: utc(2026, 1, 31, 12, 0),
			want: []Window{{utc(2026, 2, 2, 1, 0), utc(2026, 2, 2, 2, 0)}},
		},
		{
			name: "overlapping windows merge",
			body: "    windows:\n      - {cron: '0 22 * * *', duration: 4h}\n      - {cron: '0 1 * * *', duration: 4h}\n",
			from: utc(2026, 1, 1, 12, 0),
			want: []Window{
				{utc(2026, 1, 1, 22, 0), utc(2026, 1, 2, 5, 0)},
				{utc(2026, 1, 2, 22, 0), utc(2026, 1, 3, 5, 0)},
			},
		},
		{
			name: "touching windows merge",
			body: "    windows:\n      - {cron: '0 8 * * *', duration: 2h}\n      - {cron: '0 10 * * *', duration: 2h}\n",
			from: utc(2026, 1, 1, 11, 0),
			want: []Window{{utc(2026, 1, 1, 8, 0), utc(2026, 1, 1, 12, 0)}},
		},
		{
			name: "6-field cron with seconds",
			body: "    windows: [{cron: '30 */15 * * * *', duration: 5m}]\n",
			from: utc(2026, 1, 1, 0, 0),
			want: []Window{
				{utc(2026, 1, 1, 0, 0).Add(30 * time.Second), utc(2026, 1, 1, 0, 5).Add(30 * time.Second)},
				{utc(2026, 1, 1, 0, 15).Add(30 * time.Second), utc(2026, 1, 1, 0, 20).Add(30 * time.Second)},
			},
		},
		{
			name: "@daily descriptor",
			body: "    windows: [{cron: '@daily', duration: 1h}]\n",
			from: utc(2026, 1, 1, 0, 30),
			want: []Window{
				{utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 1, 0)},
				{utc(2026, 1, 2, 0, 0), utc(2026, 1, 2, 1, 0)},
			},
		},
		{
			// Spring forward: 02:30 does not exist on 2026-03-08, and robfig/cron
			// skips that day's opening (it does not move it to 03:30).
			name: "DST spring forward skips the opening",
			body: "    timezone: America/New_York\n    windows: [{cron: '30 2 * * *', duration: 1h}]\n",
			from: time.Date(2026, 3, 7, 12, 0, 0, 0, ny),
			want: []Window{
				{time.Date(2026, 3, 9, 2, 30, 0, 0, ny), time.Date(2026, 3, 9, 3, 30, 0, 0, ny)},
			},
		},
		{
			// Fall back: 01:30 happens twice on 2026-11-01 and opens twice.
			name: "DST fall back opens twice",
			body: "    timezone: America/New_York\n    windows: [{cron: '30 1 * * *', duration: 30m}]\n",
			from: time.Date(2026, 10, 31, 12, 0, 0, 0, ny),
			want: []Window{
				{utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 0)}, // 01:30 EDT
				{utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7, 0)}, // 01:30 EST
				{utc(2026, 11, 2, 6, 30), utc(2026, 11, 2, 7, 0)},
			},
		},
		{
			// Fall back, twice-opened with a long duration: the two merge.
			name: "DST fall back double opening merges",
			body: "    timezone: America/New_York\n    windows: [{cron: '30 1 * * *', duration: 2h}]\n",
			from: time.Date(2026, 10, 31, 12, 0, 0, 0, ny),
			want: []Window{
				{utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 8, 30)},
				{utc(2026, 11, 2, 6, 30), utc(2026, 11, 2, 8, 30)},
			},
		},
		{
			// Fall back outside the repeated hour: one opening, at 02:30 EST.
			name: "DST fall back 02:30 opens once",
			body: "    timezone: America/New_York\n    windows: [{cron: '30 2 * * *', duration: 1h}]\n",
			from: time.Date(2026, 10, 31, 12, 0, 0, 0, ny),
			want: []Window{
				{utc(2026, 11, 1, 7, 30), utc(2026, 11, 1, 8, 30)},
				{utc(2026, 11, 2, 7, 30), utc(2026, 11, 2, 8, 30)},
			},
		},
		{
			// Durations are elapsed time: 8h from 22:00 EST ends 07:00 EDT.
			name: "DST duration is elapsed time",
			body: "    timezone: America/New_York\n    windows: [{cron: '0 22 7 3 *', duration: 8h}]\n",
			from: time.Date(2026, 3, 1, 0, 0, 0, 0, ny),
			want: []Window{
				{time.Date(2026, 3, 7, 22, 0, 0, 0, ny), time.Date(2026, 3, 8, 7, 0, 0, 0, ny)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustSchedule(t, tt.body)
			got := s.Windows(tt.from, len(tt.want))
			if len(got) != len(tt.want) {
				t.Fatalf("got %d windows %v, want %v", len(got), got, tt.want)
			}
			for i := range got {
				if !got[i].Start.Equal(tt.want[i].Start) || !got[i].End.Equal(tt.want[i].End) {
					t.Errorf("window %d = [%v, %v), want [%v, %v)", i,
						got[i].Start.UTC(), got[i].End.UTC(), tt.want[i].Start.UTC(), tt.want[i].End.UTC())
				}
			}
		})
	}
}

func TestOpenAtAndWindowAt(t *testing.T) {
	s := mustSchedule(t, "    windows: [{cron: '0 20 * * *', duration: 10h}]\n    blackouts: [{cron: '0 0 * * *', duration: 2h}]\n")
	tests := []struct {
		at   time.Time
		open bool
		want Window
	}{
		{utc(2026, 1, 1, 19, 59), false, Window{}},
		{utc(2026, 1, 1, 20, 0), true, Window{utc(2026, 1, 1, 20, 0), utc(2026, 1, 2, 0, 0)}},
		{utc(2026, 1, 1, 23, 59), true, Window{utc(2026, 1, 1, 20, 0), utc(2026, 1, 2, 0, 0)}},
		{utc(2026, 1, 2, 0, 0), false, Window{}},
		{utc(2026, 1, 2, 1, 59), false, Window{}},
		{utc(2026, 1, 2, 2, 0), true, Window{utc(2026, 1, 2, 2, 0), utc(2026, 1, 2, 6, 0)}},
		{utc(2026, 1, 2, 5, 59), true, Window{utc(2026, 1, 2, 2, 0), utc(2026, 1, 2, 6, 0)}},
		{utc(2026, 1, 2, 6, 0), false, Window{}},
	}
	for _, tt := range tests {
		if got := s.OpenAt(tt.at); got != tt.open {
			t.Errorf("OpenAt(%v) = %v, want %v", tt.at, got, tt.open)
		}
		w, ok := s.WindowAt(tt.at)
		if ok != tt.open || ok && (!w.Start.Equal(tt.want.Start) || !w.End.Equal(tt.want.End)) {
			t.Errorf("WindowAt(%v) = %v, %v; want %v, %v", tt.at, w, ok, tt.want, tt.open)
		}
	}
}

func TestNextSkipsOpenWindow(t *testing.T) {
	s := mustSchedule(t, "    windows: [{cron: '0 22 * * *', duration: 4h}]\n")
	w, ok := s.Next(utc(2026, 1, 1, 23, 0))
	if !ok || !w.Start.Equal(utc(2026, 1, 2, 22, 0)) {
		t.Fatalf("Next = %v, %v; want the window opening 2026-01-02 22:00", w, ok)
	}
	// Exactly at an opening: that window is open, not next.
	w, ok = s.Next(utc(2026, 1, 2, 22, 0))
	if !ok || !w.Start.Equal(utc(2026, 1, 3, 22, 0)) {
		t.Fatalf("Next at an opening = %v, %v", w, ok)
	}
}

func TestBuiltins(t *testing.T) {
	var f *File
	at := utc(2026, 6, 1, 12, 0)
	always, err := f.Lookup("always")
	if err != nil {
		t.Fatal(err)
	}
	if !always.OpenAt(at) {
		t.Error("always is closed")
	}
	w, ok := always.WindowAt(at)
	if !ok || !w.Forever() || !w.Start.IsZero() {
		t.Errorf("always.WindowAt = %v, %v", w, ok)
	}
	if w, ok := always.Next(at); !ok || !w.Forever() {
		t.Errorf("always.Next = %v, %v", w, ok)
	}
	if ws := always.Windows(at, 5); len(ws) != 1 || !ws[0].Forever() {
		t.Errorf("always.Windows = %v", ws)
	}
	never, err := f.Lookup("never")
	if err != nil {
		t.Fatal(err)
	}
	if never.OpenAt(at) {
		t.Error("never is open")
	}
	if _, ok := never.WindowAt(at); ok {
		t.Error("never has a window")
	}
	if _, ok := never.Next(at); ok {
		t.Error("never has a next window")
	}
	if ws := never.Windows(at, 5); len(ws) != 0 {
		t.Errorf("never.Windows = %v", ws)
	}
	// Defined in a file, the built-ins still work, and unknown names fail.
	file, err := Parse("s.yaml", []byte("schedules:\n  always: { always: true }\n  never: { never: true }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := file.Lookup("always"); err != nil || !s.Always {
		t.Errorf("file always = %v, %v", s, err)
	}
	if _, err := file.Lookup("nightly"); err == nil || !contains(err.Error(), "nightly", "s.yaml") {
		t.Errorf("unknown schedule error = %v", err)
	}
}

func TestChainedWindowsAreForever(t *testing.T) {
	// Each window is 12h out of 24h, but together they never close.
	s := mustSchedule(t, "    windows:\n      - {cron: '0 0 * * *', duration: 12h}\n      - {cron: '0 12 * * *', duration: 12h}\n")
	w, ok := s.WindowAt(utc(2026, 1, 1, 3, 0))
	if !ok || !w.Forever() || !w.Start.IsZero() {
		t.Fatalf("WindowAt = %v, %v; want a forever window", w, ok)
	}
	if _, ok := s.Next(utc(2026, 1, 1, 3, 0)); ok {
		t.Fatal("Next of a forever window should report none")
	}
}

func TestJitterFor(t *testing.T) {
	s := mustSchedule(t, "    jitter: 20m\n    windows: [{cron: '0 22 * * *', duration: 8h}]\n")
	short := mustSchedule(t, "    jitter: 20m\n    windows: [{cron: '0 22 * * *', duration: 5m}]\n")
	none := mustSchedule(t, "    windows: [{cron: '0 22 * * *', duration: 8h}]\n")
	seen := map[time.Duration]bool{}
	for _, w := range s.Windows(utc(2026, 1, 1, 0, 0), 50) {
		for _, key := range []string{"child-a", "child-b", "child-c"} {
			j := s.JitterFor(key, w)
			if j < 0 || j >= 20*time.Minute {
				t.Fatalf("jitter %v out of [0, 20m)", j)
			}
			if j != s.JitterFor(key, w) {
				t.Fatal("jitter not deterministic")
			}
			seen[j] = true
			if j := short.JitterFor(key, Window{w.Start, w.Start.Add(5 * time.Minute)}); j < 0 || j >= 5*time.Minute {
				t.Fatalf("jitter %v out of the 5m window", j)
			}
			if j := none.JitterFor(key, w); j != 0 {
				t.Fatalf("jitter without Jitter = %v", j)
			}
		}
	}
	if len(seen) < 100 {
		t.Errorf("only %d distinct offsets for 150 (key, window) pairs", len(seen))
	}
	always, _ := (*File)(nil).Lookup("always")
	always.Jitter = time.Hour
	w, _ := always.WindowAt(utc(2026, 1, 1, 0, 0))
	if j := always.JitterFor("k", w); j < 0 || j >= time.Hour {
		t.Errorf("always jitter %v", j)
	}
}

func TestLimiter(t *testing.T) {
	s := mustSchedule(t, "    max_rate: 20MiB/s\n    windows: [{cron: '@daily', duration: 1h}]\n")
	l := s.Limiter()
	if got := float64(l.Limit()); got != 20<<20 {
		t.Errorf("limit = %v", got)
	}
	if l.Burst() != 2<<20 {
		t.Errorf("burst = %d", l.Burst())
	}
	slow := &Schedule{MaxRate: 1000}
	if slow.Limiter().Burst() != 64<<10 {
		t.Errorf("slow burst = %d", slow.Limiter().Burst())
	}
	if !(&Schedule{}).Limiter().Allow() {
		t.Error("unlimited limiter refuses")
	}
}

// TestLimiterRateOverLongTransfer sends 64 MiB in chunks through the
// limiter on a virtual clock (each chunk waits the delay its reservation
// asks for, as rate.Limiter.WaitN does) and checks the achieved rate is
// within 10 % of max_rate: deterministic, no wall time.
func TestLimiterRateOverLongTransfer(t *testing.T) {
	for _, rateText := range []string{"512KiB/s", "1MiB/s", "20MiB/s"} {
		t.Run(rateText, func(t *testing.T) {
			s := mustSchedule(t, "    max_rate: "+rateText+"\n    windows: [{cron: '@daily', duration: 1h}]\n")
			l := s.Limiter()
			start := utc(2026, 1, 1, 0, 0)
			now := start
			const total = 64 << 20
			sizes := []int{16 << 10, 5 << 10, 64<<10 + 1, 30 << 10}
			sent := 0
			for i := 0; sent < total; i++ {
				n := sizes[i%len(sizes)]
				for left := n; left > 0; {
					step := min(left, l.Burst())
					r := l.ReserveN(now, step)
					if !r.OK() {
						t.Fatalf("reservation of %d bytes refused (burst %d)", step, l.Burst())
					}
					now = now.Add(r.DelayFrom(now))
					left -= step
				}
				sent += n
			}
			got := float64(sent) / now.Sub(start).Seconds()
			want := float64(s.MaxRate)
			if got < 0.9*want || got > 1.1*want {
				t.Errorf("%d bytes in %v: %.0f B/s, want within 10 %% of %.0f", sent, now.Sub(start), got, want)
			}
		})
	}
}
