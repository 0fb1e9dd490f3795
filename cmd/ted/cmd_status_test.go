package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"ted/fleet"
)

// --watch shows the view again every --every until interrupted, each time
// as it is then; without a terminal, one after the other.
func TestStatusWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	fetches := 0
	fetch := func(context.Context, fleet.Filter) (fleet.View, error) {
		fetches++
		if fetches == 3 {
			cancel() // the operator's Ctrl-C, after the third
		}
		n := fleet.Node{Name: "web-01", Parent: "dist-1", Role: "subscriber", Connected: true,
			Distributions: []fleet.Dist{{Name: "app", Revision: uint64(fetches), Version: "1", State: "extracted"}}}
		self := fleet.Node{Name: "dist-1", Role: "distributor", Connected: true}
		return fleet.Build(self, []fleet.Node{n}, nil, fleet.Filter{}, time.Now(), time.Minute), nil
	}
	var out bytes.Buffer
	if err := showStatus(ctx, fetch, statusOptions{tree: true, watch: true, every: time.Millisecond}, false, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"app@1 extracted", "app@2 extracted", "app@3 extracted"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
	if fetches != 3 {
		t.Errorf("%d fetches, want 3", fetches)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     {},
		"24h":                  now.Add(-24 * time.Hour),
		"7d":                   now.AddDate(0, 0, -7),
		"2026-12-01T08:00:00Z": time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "-3h", "7x"} {
		if _, err := parseSince(bad, now); err == nil {
			t.Errorf("parseSince(%q) took it", bad)
		}
	}
}
