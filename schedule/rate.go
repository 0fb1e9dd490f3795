package schedule

import (
	"fmt"
	"math"
	"regexp"
	"strconv"

	"golang.org/x/time/rate"
)

// unitBytes returns the bytes in one of a rate's units.
func unitBytes(unit string) (float64, bool) {
	switch unit {
	case "B":
		return 1, true
	case "kB", "KB":
		return 1e3, true
	case "MB":
		return 1e6, true
	case "GB":
		return 1e9, true
	case "TB":
		return 1e12, true
	case "KiB":
		return 1 << 10, true
	case "MiB":
		return 1 << 20, true
	case "GiB":
		return 1 << 30, true
	case "TiB":
		return 1 << 40, true
	}
	return 0, false
}

// rateSyntax is a number, a byte unit and "/s"; compiled once, never changed.
var rateSyntax = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)/s$`)

// ParseRate parses a transfer rate such as "100B/s", "512KiB/s", "20MiB/s" or
// "1GB/s" into bytes per second. The unit (B, kB/KB, MB, GB, TB decimal; KiB, MiB,
// GiB, TiB binary) and the "/s" are required, so "20M" or "20MiB" are refused,
// as is a rate that is zero or does not fit in an int64.
func ParseRate(s string) (int64, error) {
	m := rateSyntax.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("rate %q: want a number, a unit and /s, like 20MiB/s", s)
	}
	unit, ok := unitBytes(m[2])
	if !ok {
		return 0, fmt.Errorf("rate %q: unknown unit %q (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)", s, m[2])
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("rate %q: %w", s, err)
	}
	v := math.Round(n * unit)
	if v < 1 {
		return 0, fmt.Errorf("rate %q: must be at least 1B/s (leave max_rate out for no limit)", s)
	}
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("rate %q: too large", s)
	}
	return int64(v), nil
}

// minBurst is the smallest limiter burst: one chunk-sized write should not need
// to be split for a slow rate.
const minBurst = 64 << 10

// Limiter returns a token-bucket limiter (tokens are bytes) for the schedule's
// MaxRate, with a burst of max(64 KiB, MaxRate/10); without a MaxRate it never
// waits. Each call returns a new limiter: share one among the transfers that
// the rate should cover. Callers must wait for at most Burst() bytes at a time.
// The limiter knows nothing of windows: callers stop sending when the schedule
// closes.
func (s *Schedule) Limiter() *rate.Limiter {
	if s.MaxRate <= 0 {
		return rate.NewLimiter(rate.Inf, minBurst)
	}
	burst := max(int64(minBurst), s.MaxRate/10)
	if burst > math.MaxInt32 {
		burst = math.MaxInt32
	}
	return rate.NewLimiter(rate.Limit(s.MaxRate), int(burst))
}
