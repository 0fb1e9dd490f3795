package main

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// TestMemoryLimitFollowsLiveHeap: a small process keeps the fixed budget;
// one whose live heap is large gets half of it again as headroom, never a
// limit under what is live.
func TestMemoryLimitFollowsLiveHeap(t *testing.T) {
	cases := []struct {
		live, other uint64
		want        int64
	}{
		{0, 0, minMemoryLimit},
		{50 << 20, 20 << 20, minMemoryLimit},
		{600 << 20, 100 << 20, (100 + 900) << 20},
		{1 << 62, 1 << 62, 1<<63 - 1},
	}
	for _, c := range cases {
		if got := memoryLimitFor(c.live, c.other); got != c.want {
			t.Errorf("memoryLimitFor(%d MiB live, %d MiB other) = %d MiB, want %d MiB", c.live>>20, c.other>>20, got>>20, c.want>>20)
		}
	}
}

// TestMemoryNowReadsTheRuntime: the metrics memoryNow reads exist in this
// Go, and a live allocation shows in the live heap.
func TestMemoryNowReadsTheRuntime(t *testing.T) {
	samples := make([]metrics.Sample, len(memorySamples))
	for i, name := range memorySamples {
		samples[i].Name = name
	}
	metrics.Read(samples)
	for _, s := range samples {
		if s.Value.Kind() != metrics.KindUint64 {
			t.Fatalf("runtime metric %s is not supported", s.Name)
		}
	}
	hold := make([]byte, 64<<20)
	for i := range hold {
		hold[i] = 1
	}
	runtime.GC()
	live, other := memoryNow(samples)
	if live < 64<<20 {
		t.Errorf("live heap %d MiB while holding 64 MiB", live>>20)
	}
	if other == 0 {
		t.Error("no memory beside the heap: stacks at least are missing")
	}
	runtime.KeepAlive(hold)
}

// TestIdleReleaseAfterQuiet: memory is handed back only after quietFor
// without a collection and with more than releaseAbove free, then once
// more a quietFor later whatever is free; a process that keeps collecting
// never releases, and a quiet one with little free stops after that.
func TestIdleReleaseAfterQuiet(t *testing.T) {
	var r idleRelease
	t0 := time.Unix(1_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	const lots, little = releaseAbove + 1, releaseAbove
	steps := []struct {
		at     time.Duration
		cycles uint64
		free   uint64
		want   bool
	}{
		{0, 5, lots, false},                           // first look
		{quietFor - time.Second, 5, lots, false},      // not quiet long enough
		{quietFor + time.Second, 6, lots, false},      // a collection: busy
		{2*quietFor + time.Second, 6, lots, true},     // quiet, lots free: release
		{2*quietFor + 2*time.Second, 7, 0, false},     // the release's own collection
		{3 * quietFor, 7, little, false},              // not a quietFor since the release
		{3*quietFor + 2*time.Second, 7, little, true}, // the second release, whatever is free
		{4*quietFor + 3*time.Second, 8, little, false},
		{5*quietFor + 3*time.Second, 8, little, false},  // quiet, little free: nothing more
		{6*quietFor + 3*time.Second, 8, lots, true},     // memory freed again: release
		{6*quietFor + 4*time.Second, 9, 0, false},       // the release's collection
		{6*quietFor + 5*time.Second, 10, little, false}, // one of its own: the second is not due
		{7*quietFor + 6*time.Second, 10, little, false},
	}
	for i, s := range steps {
		if got := r.due(at(s.at), s.cycles, s.free); got != s.want {
			t.Fatalf("step %d (at %v, %d collections, %d MiB free): due = %v, want %v", i, s.at, s.cycles, s.free>>20, got, s.want)
		}
	}
}
