package distributor_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"ted/distribution"
	"ted/store"
	"ted/transport"
)

// countingStore counts the reads that children's offers and chunks cost.
type countingStore struct {
	*store.Memory
	chunks, signed atomic.Int64
}

func (s *countingStore) Chunk(id distribution.ChunkID) ([]byte, error) {
	s.chunks.Add(1)
	return s.Memory.Chunk(id)
}

func (s *countingStore) Signed(name string, rev uint64) (*distribution.Signed, error) {
	s.signed.Add(1)
	return s.Memory.Signed(name, rev)
}

// TestChildrenShareOffersAndChunkReads: 50 children are offered a
// revision made once, not read and compressed once per child, and fetching
// it all at once they cost one store read per chunk, not one per child per
// chunk; each child still gets every chunk intact (Fetch checks them).
func TestChildrenShareOffersAndChunkReads(t *testing.T) {
	const n = 50
	st := &countingStore{Memory: store.NewMemory()}
	f := newFleetStore(t, n, st)
	defer f.stop()
	src := store.NewMemory()
	defer src.Close()

	for rev := uint64(1); rev <= 2; rev++ {
		s, m := buildRevision(t, src, rev, 1<<20)
		signedBefore := st.signed.Load()
		f.publish(src, s)
		f.waitOffered(rev)
		if got := st.signed.Load() - signedBefore; got > 2 {
			t.Errorf("rev %d: offering it to %d children read it from the store %d times", rev, n, got)
		}
		for _, c := range f.children {
			c.mu.Lock()
			last := c.last
			c.mu.Unlock()
			if !slices.Equal(last.Encode(), s.Encode()) {
				t.Fatalf("%s was offered a rev %d that differs from the one published", c.id.Name, rev)
			}
		}

		ids := m.ChunkIDs()
		chunksBefore := st.chunks.Load()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for _, c := range f.children {
			wg.Go(func() {
				sink := &countSink{}
				if err := transport.Fetch(context.Background(), c.sess, ids, sink, transport.FetchOptions{}); err != nil {
					errs <- err
				} else if sink.n.Load() != int64(len(ids)) {
					t.Errorf("%s stored %d chunks, want %d", c.id.Name, sink.n.Load(), len(ids))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if got := st.chunks.Load() - chunksBefore; got > int64(len(ids)) {
			t.Errorf("rev %d: %d children fetching %d chunks read %d chunks from the store, want each once", rev, n, len(ids), got)
		}
	}
}

type countSink struct{ n atomic.Int64 }

func (s *countSink) HasChunk(distribution.ChunkID) (bool, error) { return false, nil }
func (s *countSink) PutChunk(distribution.ChunkID, []byte) error {
	s.n.Add(1)
	return nil
}

// TestPublishNotHeldUpBySendSlots: with every slot of the chunk sends to
// children taken, as thousands of pulling children would take them, a
// child's fetch waits, while a publisher's push is received all the same:
// what the children share does not bound it.
func TestPublishNotHeldUpBySendSlots(t *testing.T) {
	f := newFleet(t, 1)
	defer f.stop()
	src := store.NewMemory()
	defer src.Close()
	s1, m1 := buildRevision(t, src, 1, 256<<10)
	f.publish(src, s1)
	f.waitOffered(1)

	release := f.d.HoldSendSlots()
	fetched := make(chan error, 1)
	go func() {
		fetched <- transport.Fetch(context.Background(), f.children[0].sess, m1.ChunkIDs(), &countSink{}, transport.FetchOptions{})
	}()
	s2, _ := buildRevision(t, src, 2, 256<<10)
	f.publish(src, s2) // returns once rev 2 is stored
	select {
	case err := <-fetched:
		release()
		t.Fatalf("a child's fetch ended (%v) while every send slot was taken", err)
	default:
	}
	release()
	if err := <-fetched; err != nil {
		t.Fatalf("the child's fetch, once the slots were free: %v", err)
	}
}
