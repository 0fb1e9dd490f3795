package schedule

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// patterns are cron expressions with the shortest gap between their openings.
var propertyPatterns = []struct {
	cron string
	gap  time.Duration
}{
	{"0 22 * * *", 24 * time.Hour},
	{"30 1 * * *", 24 * time.Hour},
	{"0 */6 * * *", 6 * time.Hour},
	{"15 * * * *", time.Hour},
	{"0 22 * * MON-FRI", 24 * time.Hour},
	{"0 0 1 * *", 28 * 24 * time.Hour},
	{"0 0 31 * *", 30 * 24 * time.Hour},
	{"*/20 9-17 * * *", 20 * time.Minute},
	{"30 */15 * * * *", 15 * time.Minute},
	{"@weekly", 7 * 24 * time.Hour},
}

func genRule(t *rapid.T, label string) string {
	p := propertyPatterns[rapid.IntRange(0, len(propertyPatterns)-1).Draw(t, label+"-pattern")]
	minutes := rapid.Int64Range(1, int64(p.gap/time.Minute)).Draw(t, label+"-minutes")
	return fmt.Sprintf("{cron: '%s', duration: %dm}", p.cron, minutes)
}

func genSchedule(t *rapid.T) *Schedule {
	var b strings.Builder
	b.WriteString("schedules:\n  s:\n")
	zone := rapid.SampledFrom([]string{"UTC", "Asia/Tokyo", "America/New_York", "Europe/Berlin"}).Draw(t, "zone")
	fmt.Fprintf(&b, "    timezone: %s\n    windows:\n", zone)
	for i := range rapid.IntRange(1, 3).Draw(t, "windows") {
		fmt.Fprintf(&b, "      - %s\n", genRule(t, fmt.Sprint("w", i)))
	}
	if rapid.Bool().Draw(t, "blackout") {
		fmt.Fprintf(&b, "    blackouts:\n      - %s\n", genRule(t, "b"))
	}
	f, err := Parse("prop.yaml", []byte(b.String()))
	if err != nil {
		t.Fatalf("parse %s: %v", b.String(), err)
	}
	return f.Schedules["s"]
}

func genTime(t *rapid.T, label string) time.Time {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return base.Add(time.Duration(rapid.Int64Range(0, int64(3*365*24*time.Hour/time.Second)).Draw(t, label)) * time.Second)
}

func TestPropertyWindowAtAgreesWithOpenAt(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSchedule(t)
		at := genTime(t, "at")
		open := s.OpenAt(at)
		w, ok := s.WindowAt(at)
		if ok != open {
			t.Fatalf("OpenAt(%v) = %v but WindowAt ok = %v", at, open, ok)
		}
		if !open {
			return
		}
		if w.Start.After(at) || !w.End.After(at) {
			t.Fatalf("WindowAt(%v) = [%v, %v) does not contain it", at, w.Start, w.End)
		}
		if w.Forever() {
			return
		}
		if !s.OpenAt(w.End.Add(-time.Nanosecond)) || s.OpenAt(w.End) {
			t.Fatalf("WindowAt(%v) end %v is not where it closes", at, w.End)
		}
		if !w.Start.IsZero() && (!s.OpenAt(w.Start) || s.OpenAt(w.Start.Add(-time.Nanosecond))) {
			t.Fatalf("WindowAt(%v) start %v is not where it opens", at, w.Start)
		}
		// Every point of the window is open and has the same window.
		for i := 1; i < 8; i++ {
			mid := w.Start.Add(w.End.Sub(w.Start) * time.Duration(i) / 8)
			if w2, ok := s.WindowAt(mid); !ok || !w2.Start.Equal(w.Start) || !w2.End.Equal(w.End) {
				t.Fatalf("WindowAt(%v) = %v, %v; want %v", mid, w2, ok, w)
			}
		}
	})
}

func TestPropertyNext(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSchedule(t)
		at := genTime(t, "at")
		w, ok := s.Next(at)
		if !ok {
			if cur, open := s.WindowAt(at); open && cur.Forever() {
				return
			}
			// None within the horizon: a blackout hides every window.
			for i := range 64 {
				if p := at.Add(time.Duration(i) * 97 * time.Minute); s.OpenAt(p) {
					t.Fatalf("no next window after %v, yet open at %v", at, p)
				}
			}
			return
		}
		if !w.Start.After(at) || !s.OpenAt(w.Start) || s.OpenAt(w.Start.Add(-time.Nanosecond)) {
			t.Fatalf("Next(%v) = %v: not an opening after it", at, w)
		}
		// Closed from the end of the current window (or from at) until Next.Start.
		from := at
		if cur, open := s.WindowAt(at); open {
			from = cur.End
		}
		for i := range 16 {
			p := from.Add(w.Start.Sub(from) * time.Duration(i) / 16)
			if s.OpenAt(p) {
				t.Fatalf("open at %v, between %v and Next.Start %v", p, from, w.Start)
			}
		}
	})
}
