package transport

import (
	"testing"
	"time"
)

func TestDaysLeft(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		expires time.Time
		want    int
	}{
		{now.Add(48 * time.Hour), 2},
		{now.Add(47 * time.Hour), 1},
		{now.Add(time.Hour), 0},
		{now, 0},
		{now.Add(-time.Hour), -1},
		{now.Add(-24 * time.Hour), -1},
		{now.Add(-25 * time.Hour), -2},
	} {
		if got := DaysLeft(tc.expires, now); got != tc.want {
			t.Errorf("DaysLeft(now%+v) = %d, want %d", tc.expires.Sub(now), got, tc.want)
		}
	}
}
