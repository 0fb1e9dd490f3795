package main

import (
	"runtime"
	"runtime/metrics"
	"testing"
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
