package transport

import (
	"context"
	"errors"
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

// A provider that gives its stream's slot back before it waits lets
// another stream send meanwhile: with one slot, a stream that sent a chunk
// and waits for the next of its want does not stop another.
func TestReleaseSendSlotBeforeWaiting(t *testing.T) {
	sent, later, other := distribution.ChunkID{1}, distribution.ChunkID{2}, distribution.ChunkID{3}
	arrive := make(chan struct{})
	slots := semaphore.NewWeighted(1)
	p := gated{slots: slots, ChunkProviderFunc: func(ctx context.Context, id distribution.ChunkID) ([]byte, error) {
		if id == later {
			ReleaseSendSlot(ctx)
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
	open := func(ids ...distribution.ChunkID) *Conn {
		st, err := child.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := NewChunkConn(st, parentID.Name)
		if err := c.Send(&Want{IDs: ids}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	receive := func(c *Conn) <-chan Message {
		return async(func() Message {
			m, err := c.Receive()
			if err != nil {
				return ErrorOf(err)
			}
			return m
		})
	}
	a := open(sent, later)
	if m := await(t, receive(a)); m.msgType() != typeChunk || m.(*Chunk).ID != sent {
		t.Fatalf("first chunk: got %#v", m)
	}
	aLater := receive(a)
	// The only slot was given back while a waits for its second chunk.
	if m := await(t, receive(open(other))); m.msgType() != typeChunk || m.(*Chunk).ID != other {
		t.Fatalf("while another stream waits, got %#v", m)
	}
	close(arrive)
	if m := await(t, aLater); m.msgType() != typeChunk || m.(*Chunk).ID != later {
		t.Fatalf("the awaited chunk: got %#v", m)
	}
	child.Close(nil)
	if err := await(t, served); err != nil {
		t.Fatal(err)
	}
}

// The largest want fits the serving end's frame limit, and a frame larger
// than any want is refused before it is read.
func TestWantFrameLimit(t *testing.T) {
	ids := make([]distribution.ChunkID, MaxWantIDs)
	for i := range ids {
		ids[i][0], ids[i][1], ids[i][31] = byte(i), byte(i>>8), 0xff
	}
	body, err := (&Want{IDs: ids}).appendBody(nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(body) + 1; n > maxWantFrame {
		t.Fatalf("the largest want is a frame of %d bytes, over the limit %d", n, maxWantFrame)
	}
	child, parent := NewPipe(childID, parentID)
	defer child.Close(nil)
	ctx := testContext(t)
	go func() {
		st, err := child.OpenStream(ctx)
		if err != nil {
			return
		}
		// A header announcing a frame as large as a chunk's, and nothing.
		_, _ = st.Write([]byte{0, 1, 0, 0})
	}()
	st, err := parent.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newWantConn(st, childID.Name).Receive(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("a 64 KiB frame on the serving end: got %v, want a protocol error", err)
	}
}
