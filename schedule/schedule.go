package schedule

import (
	"encoding/binary"
	"hash/fnv"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule is one named schedule of a File. Its query methods are pure
// functions of their arguments and safe for concurrent use.
type Schedule struct {
	// Name is the schedule's name in the file.
	Name string
	// Location is the timezone its cron expressions are evaluated in (UTC by default).
	Location *time.Location
	// Jitter bounds the offset at which each child starts within a window (see JitterFor).
	Jitter time.Duration
	// MaxRate is the transfer rate while open, in bytes per second; 0 is unlimited.
	MaxRate int64
	// Always marks a schedule that is open at every instant.
	Always bool
	// Never marks a schedule that never opens.
	Never bool

	windows   []rule
	blackouts []rule
}

// rule is one cron line and how long each of its openings lasts.
type rule struct {
	spec     *cron.SpecSchedule
	duration time.Duration
}

// Window is one run of open time: open on [Start, End).
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Forever reports whether the window does not end within the horizon (the
// always schedule, or windows that chain into each other for five years).
func (w Window) Forever() bool { return !w.End.Before(forever()) }

// forever is the End of a window that does not end within the horizon.
func forever() time.Time { return time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC) }

const (
	// horizon bounds how far queries walk forward or back.
	horizon = 5 * 366 * 24 * time.Hour
	// maxSteps bounds the events a single query visits, for pathological specs
	// such as second-by-second chains.
	maxSteps = 100000
)

// nextAfter returns the first opening of r strictly after t, or zero if none
// within robfig/cron's five years.
func (r rule) nextAfter(t time.Time) time.Time { return r.spec.Next(t) }

// covering returns the end of the earliest interval of r that contains t.
func (r rule) covering(t time.Time) (time.Time, bool) {
	f := r.nextAfter(t.Add(-r.duration))
	if f.IsZero() || f.After(t) {
		return time.Time{}, false
	}
	return f.Add(r.duration), true
}

func covered(rules []rule, t time.Time) bool {
	for _, r := range rules {
		if _, ok := r.covering(t); ok {
			return true
		}
	}
	return false
}

// OpenAt reports whether the schedule is open at t.
func (s *Schedule) OpenAt(t time.Time) bool {
	switch {
	case s.Always:
		return true
	case s.Never:
		return false
	}
	return covered(s.windows, t) && !covered(s.blackouts, t)
}

// WindowAt returns the merged window open at t, if the schedule is open at t.
// Start is where the run began (a window opening or a blackout's end), End where
// it closes (the end of the last merged interval, or a blackout's start).
func (s *Schedule) WindowAt(t time.Time) (Window, bool) {
	if s.Always {
		return Window{End: forever()}, true
	}
	if !s.OpenAt(t) {
		return Window{}, false
	}
	return Window{Start: s.runStart(t), End: s.runEnd(t)}, true
}

// Next returns the next window that opens strictly after t; a window open at t
// is not it. It reports false for never, and when nothing opens within the
// horizon. For always it returns the endless window, as it is open now.
func (s *Schedule) Next(t time.Time) (Window, bool) {
	switch {
	case s.Always:
		return Window{End: forever()}, true
	case s.Never:
		return Window{}, false
	}
	x := t
	if s.OpenAt(t) {
		x = s.runEnd(t)
		if !x.Before(forever()) {
			return Window{}, false
		}
	}
	start, ok := s.nextStart(x, t.Add(horizon))
	if !ok {
		return Window{}, false
	}
	return Window{Start: start, End: s.runEnd(start)}, true
}

// Windows returns up to n windows from `from`: the one open at from, if any,
// then the following ones. This is what `ted schedule check` lists.
func (s *Schedule) Windows(from time.Time, n int) []Window {
	var out []Window
	x := from
	if w, ok := s.WindowAt(from); ok && n > 0 {
		out = append(out, w)
		x = w.End
		if w.Forever() {
			return out
		}
	}
	for len(out) < n {
		w, ok := s.Next(x)
		if !ok {
			break
		}
		out = append(out, w)
		if w.Forever() {
			break
		}
		x = w.End
	}
	return out
}

// runEnd returns where the open run containing p (open) closes.
func (s *Schedule) runEnd(p time.Time) time.Time {
	limit := p.Add(horizon)
	for range maxSteps {
		if p.After(limit) {
			break
		}
		// The windows cover [p, end) for the latest end among the intervals
		// covering p; a blackout opening before that closes the run.
		var end time.Time
		for _, r := range s.windows {
			if e, ok := r.covering(p); ok && e.After(end) {
				end = e
			}
		}
		for _, b := range s.blackouts {
			if g := b.nextAfter(p); !g.IsZero() && g.Before(end) {
				return g
			}
		}
		if !s.OpenAt(end) {
			return end
		}
		p = end
	}
	return forever()
}

// runStart returns where the open run containing p (open) began.
func (s *Schedule) runStart(p time.Time) time.Time {
	limit := p.Add(-horizon)
	for range maxSteps {
		if p.Before(limit) {
			break
		}
		// a is the earliest opening of an interval that covers p or ends at p:
		// the windows cover [a, p].
		a := p
		for _, r := range s.windows {
			if f := r.nextAfter(p.Add(-r.duration - time.Nanosecond)); !f.IsZero() && f.Before(a) {
				a = f
			}
		}
		if !a.Before(p) {
			return p
		}
		// The latest blackout end in (a, p] starts the run.
		var cut time.Time
		for _, b := range s.blackouts {
			for g := b.nextAfter(a.Add(-b.duration)); !g.IsZero() && g.Before(p); g = b.nextAfter(g) {
				if e := g.Add(b.duration); e.After(cut) && !e.After(p) {
					cut = e
				}
			}
		}
		if cut.After(a) {
			return cut
		}
		p = a
	}
	return time.Time{}
}

// nextStart returns the first time after x (closed) at which the schedule opens.
func (s *Schedule) nextStart(x, limit time.Time) (time.Time, bool) {
	for range maxSteps {
		if x.After(limit) {
			break
		}
		var q time.Time
		if !covered(s.windows, x) {
			// Only an opening can open a closed, uncovered schedule.
			for _, r := range s.windows {
				if f := r.nextAfter(x); !f.IsZero() && (q.IsZero() || f.Before(q)) {
					q = f
				}
			}
			if q.IsZero() {
				return time.Time{}, false
			}
		} else {
			// Covered but blacked out: stays closed until a blackout ends.
			for _, b := range s.blackouts {
				if e, ok := b.covering(x); ok && e.After(q) {
					q = e
				}
			}
			if q.IsZero() {
				return time.Time{}, false // open after all; not reached from a closed x
			}
		}
		if s.OpenAt(q) {
			return q, true
		}
		x = q
	}
	return time.Time{}, false
}

// JitterFor returns the offset into window w at which the child named key
// starts: in [0, min(Jitter, window length)), the same for the same key and
// window start in every process, and different from window to window. It is 0
// without a Jitter.
func (s *Schedule) JitterFor(key string, w Window) time.Duration {
	span := s.Jitter
	if length := w.End.Sub(w.Start); length < span {
		span = length
	}
	if span <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	var b [9]byte // a zero separator, so key bytes cannot run into the time
	binary.BigEndian.PutUint64(b[1:], uint64(w.Start.UnixNano()))
	h.Write(b[:])
	return time.Duration(mix(h.Sum64()) % uint64(span))
}

// mix is splitmix64's finaliser, spreading FNV's low bits.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
