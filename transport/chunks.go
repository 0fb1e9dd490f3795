package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"ted/distribution"
)

// ChunkProvider gives the encoded bytes of a chunk to serve. A distributor's
// provider may wait for a chunk that is still on its way from its own
// parent (pull-through); ctx ends when the asking stream or session does.
type ChunkProvider interface {
	ServeChunk(ctx context.Context, id distribution.ChunkID) ([]byte, error)
}

// ChunkProviderFunc adapts a function to ChunkProvider.
type ChunkProviderFunc func(ctx context.Context, id distribution.ChunkID) ([]byte, error)

// ServeChunk calls f.
func (f ChunkProviderFunc) ServeChunk(ctx context.Context, id distribution.ChunkID) ([]byte, error) {
	return f(ctx, id)
}

// Gated is a ChunkProvider whose chunk sends share a bound: ServeChunks
// takes one of its slots once the first chunk of a want is at hand, keeps
// it while it sends that want's chunks, up to maxSlotBytes, and gives it
// back after (sendSlot); a session holds at most sessionSlots at once.
// Waiting for the first chunk (pull-through) takes no slot; a provider
// that must wait for a later one, or for a rate, gives its stream's slot
// back first (ReleaseSendSlot).
type Gated interface {
	ChunkProvider
	SendSlots() *semaphore.Weighted
}

// StoreProvider serves the chunks a source holds, and nothing else.
func StoreProvider(src distribution.ChunkSource) ChunkProvider {
	return ChunkProviderFunc(func(_ context.Context, id distribution.ChunkID) ([]byte, error) {
		return src.Chunk(id)
	})
}

// ServeChunks answers the wants of every stream the peer opens on sess, from
// p, until the session or ctx ends. served, if not nil, is called after each
// chunk sent with its encoded size.
func ServeChunks(ctx context.Context, sess Session, p ChunkProvider, served func(n int), log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	peer := sess.Peer().Name
	// A session's streams hold at most sessionSlots send slots at once,
	// whatever the number of streams it opens: a child that opens many
	// streams and stops reading cannot take every slot, and one on a slow
	// link holds no more than its share.
	var mine *semaphore.Weighted
	if _, ok := p.(Gated); ok {
		mine = semaphore.NewWeighted(sessionSlots)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	// The streams being served end with the session or when no more are
	// accepted, so a provider waiting for a chunk (pull-through) is not
	// left waiting for a peer that has gone, and wg.Wait returns.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(sess.Context(), cancel)
	defer stop()
	for {
		st, err := sess.AcceptStream(ctx)
		if err != nil {
			return nil // the session or ctx ended: nothing more to serve
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serveStream(ctx, newWantConn(st, peer), p, mine, served); err != nil {
				log.Debug("chunk stream ended", "peer", peer, "err", err)
			}
		}()
	}
}

func serveStream(ctx context.Context, c *Conn, p ChunkProvider, mine *semaphore.Weighted, served func(int)) error {
	defer c.Close()
	slot := &sendSlot{}
	if g, ok := p.(Gated); ok {
		slot.slots, slot.mine = g.SendSlots(), mine
	}
	defer slot.release()
	// The provider is called on this goroutine, and may give the slot
	// back before it waits (ReleaseSendSlot).
	ctx = context.WithValue(ctx, slotKey{}, slot)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := closeOnDone(ctx, c)
	defer stop()
	for {
		m, err := c.Receive()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		want, ok := m.(*Want)
		if !ok {
			err := fmt.Errorf("%w: %s sent %s on a chunk stream", ErrProtocol, c.Peer(), m.msgType())
			_ = c.Send(ErrorOf(err))
			return err
		}
		for _, id := range want.IDs {
			data, err := p.ServeChunk(ctx, id)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				err = c.Send(&Missing{ID: id, Error: ErrorOf(err)})
			} else {
				err = slot.send(ctx, c, id, data)
				if err == nil && served != nil {
					served(len(data))
				}
			}
			if err != nil {
				return err
			}
		}
		slot.release()
	}
}

// maxSlotBytes is the most a stream sends on one send slot before it
// queues for another behind the streams waiting, so that a child on a
// slow link cannot keep a slot for long: a quarter of a want of 64
// chunks of the 16 KiB average.
const maxSlotBytes = 256 << 10

// sendSlot is the send slot of one chunk stream, if its provider is Gated.
// A slot kept across a want's chunks, rather than taken for each, has a
// few children's connections sending at full speed, one after the other,
// where a slot per chunk had every child's connection sending a little at
// a time: each with packets packed and not yet sent, and data sent and not
// yet acknowledged, held in quic-go's buffers. At 3,000 children fetching
// 1 MiB each (bench/fleet), 64 slots kept per want took 21 s and a peak
// RSS of 472 MiB; 512 slots taken per chunk, 29–34 s and 853–1,064 MiB.
type sendSlot struct {
	slots *semaphore.Weighted // shared by every session
	mine  *semaphore.Weighted // this session's share (sessionSlots)
	held  bool
	sent  int
}

// sessionSlots is how many send slots one session's streams hold at once:
// a fetch uses two streams (DefaultFetchOptions).
const sessionSlots = 2

type slotKey struct{}

// ReleaseSendSlot gives back the send slot held by the chunk stream whose
// ServeChunk call ctx is, if it holds one. A Gated provider calls it before
// it waits — for a channel's rate, for a chunk still on its way — so that a
// stream that waits does not keep others from sending; the stream takes a
// slot again for its next chunk.
func ReleaseSendSlot(ctx context.Context) {
	if s, ok := ctx.Value(slotKey{}).(*sendSlot); ok {
		s.release()
	}
}

// send sends a chunk within the stream's slot, taking one if it has none.
func (s *sendSlot) send(ctx context.Context, c *Conn, id distribution.ChunkID, data []byte) error {
	if s.slots != nil && !s.held {
		if err := s.mine.Acquire(ctx, 1); err != nil {
			return err
		}
		if err := s.slots.Acquire(ctx, 1); err != nil {
			s.mine.Release(1)
			return err
		}
		s.held, s.sent = true, 0
	}
	err := c.Send(&Chunk{ID: id, Data: data})
	if s.sent += len(data); s.sent >= maxSlotBytes {
		s.release()
	}
	return err
}

// release gives the slot back, if the stream holds one.
func (s *sendSlot) release() {
	if s.held {
		s.slots.Release(1)
		s.mine.Release(1)
		s.held = false
	}
}

// FetchOptions tune Fetch. A zero field takes its DefaultFetchOptions value.
type FetchOptions struct {
	// Streams is the number of chunk streams used at once.
	Streams int
	// Batch is the number of chunk ids per want.
	Batch int
	// Retries is how many times a chunk that arrives corrupt is asked for
	// again before Fetch fails.
	Retries int
	// Stored, if set, is called after each chunk is checked and stored,
	// with its encoded size. It may be called from several goroutines.
	Stored func(id distribution.ChunkID, n int)
	// Corrupt, if set, is called for each chunk that arrived corrupt (it
	// is then asked for again).
	Corrupt func(id distribution.ChunkID, err error)
	// Checkpoint, if set, is called after every CheckpointBytes of chunks
	// stored, and once more when Fetch ends however it ends, never twice
	// at once: a receiver makes what arrived durable with it, so a kill
	// costs at most CheckpointBytes fetched again. Its error ends the
	// fetch.
	Checkpoint      func() error
	CheckpointBytes int64
}

// DefaultFetchOptions returns the defaults, measured with bench/hop.sh:
// two streams of wants of 64 chunks, each stream keeping two wants
// outstanding (about 4 MiB in flight at the average chunk size, which a
// pipelined stream keeps moving whatever the round trip). More streams cost
// CPU in scheduling and quic-go's stream handling without moving more;
// fewer leave a stream waiting on the store. A corrupt chunk is asked for
// three more times: once is a fluke, four times is a parent that has it
// wrong.
func DefaultFetchOptions() FetchOptions {
	return FetchOptions{Streams: 2, Batch: 64, Retries: 3}
}

func (o *FetchOptions) defaults() {
	def := DefaultFetchOptions()
	if o.Streams <= 0 {
		o.Streams = def.Streams
	}
	if o.Batch <= 0 || o.Batch > MaxWantIDs {
		o.Batch = def.Batch
	}
	if o.Retries <= 0 {
		o.Retries = def.Retries
	}
}

// Fetch asks the peer of sess for every chunk in ids, checks each against
// its id (distribution.DecodeChunk), and puts it in sink. It returns nil
// when all are stored, or the first error: the peer's refusal (wrapping
// ErrNotFound or ErrUnavailable for a chunk it cannot serve), a chunk still
// corrupt after opts.Retries refetches (wrapping
// distribution.ErrChunkCorrupt), the sink's error, or ctx's.
func Fetch(ctx context.Context, sess Session, ids []distribution.ChunkID, sink distribution.ChunkSink, opts FetchOptions) error {
	opts.defaults()
	if len(ids) == 0 {
		return nil
	}
	peer := sess.Peer().Name
	ck := &checkpointer{fn: opts.Checkpoint, every: opts.CheckpointBytes}
	batches := make(chan []distribution.ChunkID)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(batches)
		for start := 0; start < len(ids); start += opts.Batch {
			select {
			case batches <- ids[start:min(start+opts.Batch, len(ids))]:
			case <-ctx.Done():
				// Batches were left out: Fetch must not return nil.
				return ctx.Err()
			}
		}
		return nil
	})
	workers := min(opts.Streams, (len(ids)+opts.Batch-1)/opts.Batch)
	for range workers {
		g.Go(func() error {
			st, err := sess.OpenStream(ctx)
			if err != nil {
				return fmt.Errorf("open chunk stream to %s: %w", peer, err)
			}
			f := &fetcher{c: NewChunkConn(st, peer), sink: sink, opts: &opts, ck: ck, tries: map[distribution.ChunkID]int{}}
			defer f.c.Close()
			stop := closeOnDone(ctx, f.c)
			defer stop()
			if err := f.run(batches); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return err
			}
			return nil
		})
	}
	err := g.Wait()
	// Keep what arrived, whatever happened: the next try fetches only the
	// rest.
	if cerr := ck.final(); err == nil {
		err = cerr
	}
	return err
}

// checkpointer calls FetchOptions.Checkpoint every so many bytes.
type checkpointer struct {
	fn    func() error
	every int64
	mu    sync.Mutex
	since int64
}

// stored counts n bytes stored, checkpointing when enough have been.
func (c *checkpointer) stored(n int) error {
	if c.fn == nil || c.every <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.since += int64(n); c.since < c.every {
		return nil
	}
	c.since = 0
	return c.fn()
}

func (c *checkpointer) final() error {
	if c.fn == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fn()
}

type fetcher struct {
	c     *Conn
	sink  distribution.ChunkSink
	opts  *FetchOptions
	ck    *checkpointer
	tries map[distribution.ChunkID]int
}

// pipelineDepth is how many wants a stream keeps outstanding. With two,
// the peer finds the next want waiting when it has answered one, so a
// stream never idles for a round trip between batches: what a stream moves
// does not depend on the link's latency.
const pipelineDepth = 2

// run takes batches until there are none, keeping pipelineDepth wants
// outstanding; chunks that came corrupt are asked for again.
func (f *fetcher) run(batches <-chan []distribution.ChunkID) error {
	var inflight [][]distribution.ChunkID
	var retry []distribution.ChunkID
	closed := false
	for {
		for len(inflight) < pipelineDepth {
			var batch []distribution.ChunkID
			switch {
			case len(retry) > 0:
				batch = retry[:min(len(retry), MaxWantIDs)]
				retry = retry[len(batch):]
			case closed:
			case len(inflight) == 0:
				b, ok := <-batches
				closed, batch = !ok, b
			default:
				select {
				case b, ok := <-batches:
					closed, batch = !ok, b
				default:
				}
			}
			if len(batch) == 0 {
				break
			}
			if err := f.c.Send(&Want{IDs: batch}); err != nil {
				return err
			}
			inflight = append(inflight, batch)
		}
		if len(inflight) == 0 {
			return nil
		}
		again, err := f.answers(inflight[0])
		if err != nil {
			return err
		}
		inflight = inflight[1:]
		retry = append(retry, again...)
	}
}

// answers reads the answers to one want, stores the good chunks and
// returns those that came corrupt.
func (f *fetcher) answers(batch []distribution.ChunkID) ([]distribution.ChunkID, error) {
	var again []distribution.ChunkID
	for _, id := range batch {
		m, err := f.c.Receive()
		if err == io.EOF {
			err = fmt.Errorf("%s closed the stream: %w", f.c.Peer(), io.ErrUnexpectedEOF)
		}
		if err != nil {
			return nil, fmt.Errorf("fetch chunk %s: %w", id.Short(), err)
		}
		switch m := m.(type) {
		case *Chunk:
			if m.ID != id {
				return nil, fmt.Errorf("%w: %s sent chunk %s, want %s", ErrProtocol, f.c.Peer(), m.ID.Short(), id.Short())
			}
			if _, err := distribution.DecodeChunk(id, m.Data); err != nil {
				f.tries[id]++
				if f.opts.Corrupt != nil {
					f.opts.Corrupt(id, err)
				}
				if f.tries[id] > f.opts.Retries {
					return nil, fmt.Errorf("chunk from %s, %d times: %w", f.c.Peer(), f.tries[id], err)
				}
				again = append(again, id)
				continue
			}
			if err := f.sink.PutChunk(id, m.Data); err != nil {
				return nil, err
			}
			if f.opts.Stored != nil {
				f.opts.Stored(id, len(m.Data))
			}
			if err := f.ck.stored(len(m.Data)); err != nil {
				return nil, fmt.Errorf("checkpoint: %w", err)
			}
		case *Missing:
			if m.ID != id {
				return nil, fmt.Errorf("%w: %s answered for chunk %s, want %s", ErrProtocol, f.c.Peer(), m.ID.Short(), id.Short())
			}
			return nil, fmt.Errorf("chunk %s: %w", id.Short(), remote(f.c.Peer(), m.Error))
		case *Error:
			return nil, remote(f.c.Peer(), m)
		default:
			return nil, fmt.Errorf("%w: %s sent %s on a chunk stream", ErrProtocol, f.c.Peer(), m.msgType())
		}
	}
	return again, nil
}

// errStopped is the cause given when a daemon stops a session on purpose.
var errStopped = errors.New("stopping")

// ErrStopping is told to peers when this node closes a session to stop.
var ErrStopping = fmt.Errorf("%w: %w", ErrUnavailable, errStopped)
