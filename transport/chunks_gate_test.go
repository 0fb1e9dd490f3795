package transport

import (
	"context"
	"testing"

	"golang.org/x/sync/semaphore"

	"ted/distribution"
)

// gated is a provider whose sends share slots.
type gated struct {
	ChunkProviderFunc
	slots *semaphore.Weighted
}

func (g gated) SendSlots() *semaphore.Weighted { return g.slots }

// TestServeChunksGated: a Gated provider's chunks are sent within its
// slots, and a chunk being waited for (pull-through) holds none: with one
// slot, a chunk at hand is served while another is awaited.
func TestServeChunksGated(t *testing.T) {
	awaited, ready := distribution.ChunkID{1}, distribution.ChunkID{2}
	arrive := make(chan struct{})
	slots := semaphore.NewWeighted(1)
	p := gated{slots: slots, ChunkProviderFunc: func(ctx context.Context, id distribution.ChunkID) ([]byte, error) {
		if id == awaited {
			select {
			case <-arrive:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return []byte{0, id[0]}, nil
	}}
	child, parent := NewPipe(childID, parentID)
	defer child.Close(nil)
	ctx := testContext(t)
	served := async(func() error { return ServeChunks(ctx, parent, p, nil, nil) })

	want := func(id distribution.ChunkID) <-chan Message {
		st, err := child.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := NewChunkConn(st, parentID.Name)
		if err := c.Send(&Want{IDs: []distribution.ChunkID{id}}); err != nil {
			t.Fatal(err)
		}
		return async(func() Message {
			m, err := c.Receive()
			if err != nil {
				return ErrorOf(err)
			}
			return m
		})
	}
	first := want(awaited)
	if m := await(t, want(ready)); m.msgType() != typeChunk || m.(*Chunk).ID != ready {
		t.Fatalf("while another chunk is awaited, got %#v", m)
	}

	// With the only slot taken, the awaited chunk, once here, waits for it.
	if err := slots.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	close(arrive)
	select {
	case m := <-first:
		t.Fatalf("sent %#v while the only slot was taken", m)
	default:
	}
	slots.Release(1)
	if m := await(t, first); m.msgType() != typeChunk || m.(*Chunk).ID != awaited {
		t.Fatalf("once the slot was free, got %#v", m)
	}
	child.Close(nil)
	if err := await(t, served); err != nil {
		t.Fatal(err)
	}
}
