package transport

import (
	"errors"
	"sync/atomic"
	"testing"

	"ted/store"
)

// TestFetchCheckpoints checks that Checkpoint runs every CheckpointBytes
// and once at the end, never twice at once, and that its error ends the
// fetch.
func TestFetchCheckpoints(t *testing.T) {
	set := newChunkSet(t, 300)
	child, parent := newSessions(t)
	serveChunks(t, parent, StoreProvider(set.store), nil)

	var calls, running atomic.Int32
	every := int64(set.bytes / 10)
	opts := FetchOptions{Streams: 3, Batch: 7, CheckpointBytes: every, Checkpoint: func() error {
		if running.Add(1) != 1 {
			t.Error("two checkpoints at once")
		}
		calls.Add(1)
		running.Add(-1)
		return nil
	}}
	sink := store.NewMemory()
	if err := Fetch(t.Context(), child, set.ids, sink, opts); err != nil {
		t.Fatal(err)
	}
	set.checkStored(t, sink)
	// About ten periodic ones (chunk sizes make it inexact), plus the last.
	if n := calls.Load(); n < 5 || n > 12 {
		t.Errorf("%d checkpoints for %d bytes every %d, want about 11", n, set.bytes, every)
	}

	failed := errors.New("disk full")
	opts.Checkpoint = func() error { return failed }
	err := Fetch(t.Context(), child, set.ids, store.NewMemory(), opts)
	if !errors.Is(err, failed) {
		t.Fatalf("Fetch with a failing checkpoint: %v, want it to wrap %v", err, failed)
	}
}
