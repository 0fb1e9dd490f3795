package distributor

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"ted/distribution"
)

// TestChunkCacheBoundedInBytes: the least recently served chunk leaves
// first, and the cache never holds more than its bound.
func TestChunkCacheBoundedInBytes(t *testing.T) {
	cc := newChunkCache(64 << 10)
	id := func(i byte) distribution.ChunkID { return distribution.ChunkID{i} }
	for i := range byte(16) {
		cc.put(id(i), make([]byte, 4<<10))
	}
	if _, ok := cc.get(id(0)); !ok { // 0 is now the most recent
		t.Fatal("chunk 0 not cached")
	}
	cc.put(id(16), make([]byte, 4<<10))
	if _, ok := cc.get(id(1)); ok {
		t.Error("chunk 1, the least recently served, is still cached")
	}
	for _, i := range []byte{0, 2, 15, 16} {
		if _, ok := cc.get(id(i)); !ok {
			t.Errorf("chunk %d not cached", i)
		}
	}
	if cc.size > cc.max {
		t.Errorf("cache holds %d bytes, bound %d", cc.size, cc.max)
	}
	cc.put(id(200), make([]byte, 8<<10)) // over max/16: not cached
	if _, ok := cc.get(id(200)); ok {
		t.Error("a chunk of more than a sixteenth of the cache was cached")
	}
}

// TestChunkCacheReadsOnceForAll: children asking for a chunk at once wait
// for one read; a read that fails for its reader's context is made again
// by a waiter, and a failed read is not cached.
func TestChunkCacheReadsOnceForAll(t *testing.T) {
	cc := newChunkCache(1 << 20)
	id := distribution.ChunkID{7}
	var reads atomic.Int64
	started, proceed := make(chan struct{}), make(chan struct{})
	read := func() ([]byte, error) {
		if reads.Add(1) == 1 {
			close(started)
		}
		<-proceed
		return []byte("chunk"), nil
	}
	var wg sync.WaitGroup
	results := make(chan string, 20)
	wg.Go(func() {
		data, _ := cc.load(context.Background(), id, read)
		results <- string(data)
	})
	<-started
	for range 19 {
		wg.Go(func() {
			data, err := cc.load(context.Background(), id, read)
			if err != nil {
				t.Error(err)
			}
			results <- string(data)
		})
	}
	close(proceed)
	wg.Wait()
	close(results)
	for r := range results {
		if r != "chunk" {
			t.Errorf("load returned %q", r)
		}
	}
	// 19 waiters may not all have joined before the read ended; those that
	// came after found it cached.
	if n := reads.Load(); n != 1 {
		t.Errorf("%d reads for 20 loads, want 1", n)
	}

	// A reader whose child went away: its waiters read again themselves.
	other := distribution.ChunkID{8}
	gone := errors.New("gone")
	if _, err := cc.load(context.Background(), other, func() ([]byte, error) { return nil, gone }); !errors.Is(err, gone) {
		t.Fatalf("load = %v, want the read's error", err)
	}
	if _, ok := cc.get(other); ok {
		t.Error("a failed read was cached")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := cc.load(ctx, other, func() ([]byte, error) { return nil, ctx.Err() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("load = %v, want context.Canceled", err)
	}
}
