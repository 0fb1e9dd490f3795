package distributor_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ted/distribution"
	"ted/distributor"
	"ted/pki"
	"ted/store"
	"ted/transport"
)

// fleet is a distributor over a memory store with many children connected
// over pipes, for the benchmarks of what a distributor does per child.
type fleet struct {
	tb       testing.TB
	d        *distributor.Distributor
	sessions chan transport.Session
	children []*fleetChild
	stop     func()
}

type fleetChild struct {
	id      transport.Identity
	sess    transport.Session
	control *transport.Conn
	// offers counts the offers received; last is the latest, of revision
	// lastRev. A revision may be offered twice: while it is being received,
	// and once stored.
	offers  atomic.Int64
	lastRev atomic.Uint64
	mu      sync.Mutex
	last    *distribution.Signed
}

func (f *fleet) Accept(ctx context.Context) (transport.Session, error) {
	select {
	case s := <-f.sessions:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// newFleet starts a distributor whose channel web lists n children, and
// connects them all.
func newFleet(tb testing.TB, n int) *fleet { return newFleetStore(tb, n, store.NewMemory()) }

// newFleetStore is newFleet over st, which it closes when stopped.
func newFleetStore(tb testing.TB, n int, st store.Store) *fleet {
	cfg := testConfig()
	web := cfg.Channels["web"]
	for i := range n {
		web.Children = append(web.Children, fmt.Sprintf("sim-%05d", i))
	}
	cfg.Channels["web"] = web
	d, err := distributor.New(cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	f := &fleet{tb: tb, d: d, sessions: make(chan transport.Session)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, f, nil) }()
	var readers sync.WaitGroup
	f.stop = func() {
		for _, c := range f.children {
			c.sess.Close(nil)
		}
		readers.Wait()
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
		_ = st.Close()
	}
	for i := range n {
		id := transport.Identity{Name: fmt.Sprintf("sim-%05d", i), Role: pki.RoleSubscriber}
		if err := d.Accept(id); err != nil {
			tb.Fatal(err)
		}
		mine, theirs := transport.NewPipe(id, distID)
		f.sessions <- theirs
		control, _, err := transport.ClientHello(ctx, mine, &transport.Hello{Name: id.Name, Agent: "bench", Channels: []string{"web"}})
		if err != nil {
			tb.Fatal(err)
		}
		c := &fleetChild{id: id, sess: mine, control: control}
		f.children = append(f.children, c)
		readers.Go(func() {
			for {
				m, err := c.control.Receive()
				if err != nil {
					return
				}
				if o, ok := m.(*transport.Offer); ok {
					c.mu.Lock()
					c.last = o.Signed
					c.mu.Unlock()
					if m, err := o.Signed.Manifest(); err == nil {
						c.lastRev.Store(m.Revision)
					}
					c.offers.Add(1)
				}
			}
		})
	}
	return f
}

// publish offers s as pub-1, serving its chunks from src, and waits for
// the result.
func (f *fleet) publish(src distribution.ChunkSource, s *distribution.Signed) {
	mine, theirs := transport.NewPipe(pubID, distID)
	defer mine.Close(nil)
	if err := f.d.Accept(pubID); err != nil {
		f.tb.Fatal(err)
	}
	f.sessions <- theirs
	ctx := context.Background()
	control, _, err := transport.ClientHello(ctx, mine, &transport.Hello{Name: pubID.Name, Agent: "bench"})
	if err != nil {
		f.tb.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = transport.ServeChunks(ctx, mine, transport.StoreProvider(src), nil, nil)
	}()
	if err := control.Send(&transport.Offer{Signed: s}); err != nil {
		f.tb.Fatal(err)
	}
	m, err := control.Receive()
	if err != nil {
		f.tb.Fatal(err)
	}
	if _, ok := m.(*transport.Result); !ok {
		f.tb.Fatalf("publish answered with %#v", m)
	}
	mine.Close(nil)
	<-served
}

// waitOffered waits until every child has been offered revision rev.
func (f *fleet) waitOffered(rev uint64) {
	deadline := time.Now().Add(time.Minute)
	for _, c := range f.children {
		for c.lastRev.Load() < rev {
			if time.Now().After(deadline) {
				f.tb.Fatalf("%s was last offered rev %d, want %d", c.id.Name, c.lastRev.Load(), rev)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// buildRevision builds revision rev of "app" in channel web from size
// bytes of random data into sink.
func buildRevision(tb testing.TB, sink distribution.ChunkSink, rev uint64, size int) (*distribution.Signed, *distribution.Manifest) {
	dir := tb.TempDir()
	data := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{byte(rev), byte(rev >> 8)}).Read(data)
	if err := os.WriteFile(filepath.Join(dir, "app.bin"), data, 0o644); err != nil {
		tb.Fatal(err)
	}
	m, _, err := distribution.BuildDir(context.Background(), dir, distribution.BuildOptions{
		Name: "app", Revision: rev, Version: fmt.Sprintf("1.%d", rev), Channels: []string{"web"},
		Created: time.Unix(1_700_000_000+int64(rev), 0),
	}, sink)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := distribution.Sign(m, ed25519.PrivateKey(publisherKey()))
	if err != nil {
		tb.Fatal(err)
	}
	return s, m
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// BenchmarkOfferFanout is one publish of a 1 MiB revision reaching 1,000
// connected children as an offer (they fetch nothing): the time from the
// offer to the last child having it, and the allocations per child.
func BenchmarkOfferFanout(b *testing.B) {
	const n = 1000
	f := newFleet(b, n)
	defer f.stop()
	src := store.NewMemory()
	defer src.Close()
	b.ResetTimer()
	var allocs uint64
	for i := range b.N {
		b.StopTimer()
		s, _ := buildRevision(b, src, uint64(i+1), 1<<20)
		runtime.GC()
		before := mallocs()
		b.StartTimer()
		f.publish(src, s)
		f.waitOffered(uint64(i + 1))
		b.StopTimer()
		allocs += mallocs() - before
		b.StartTimer()
	}
	b.ReportMetric(float64(allocs)/float64(b.N)/n, "allocs/child")
}

// BenchmarkChunkServing is 200 children fetching every chunk of a 1 MiB
// revision at once, each on two streams as a subscriber does: the time and
// allocations per child for the whole revision.
func BenchmarkChunkServing(b *testing.B) {
	const n = 200
	f := newFleet(b, n)
	defer f.stop()
	src := store.NewMemory()
	defer src.Close()
	s, m := buildRevision(b, src, 1, 1<<20)
	f.publish(src, s)
	f.waitOffered(1)
	ids := m.ChunkIDs()
	b.SetBytes(int64(n) << 20)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for _, c := range f.children {
			wg.Go(func() {
				if err := transport.Fetch(context.Background(), c.sess, ids, discard{}, transport.FetchOptions{}); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) HasChunk(distribution.ChunkID) (bool, error) { return false, nil }
func (discard) PutChunk(distribution.ChunkID, []byte) error { return nil }

// BenchmarkStatus10000 is `ted distributor status --json` with 10,000
// children connected: Status and its JSON, as the admin server encodes it.
func BenchmarkStatus10000(b *testing.B) {
	const n = 10000
	f := newFleet(b, n)
	defer f.stop()
	for _, c := range f.children {
		st := &transport.Status{Role: "single", ActiveNode: c.id.Name, Revisions: []transport.RevisionState{{Name: "app", Revision: 1, Version: "1.1", State: "extracted", Chunks: 64, HaveChunks: 64}}}
		if err := c.control.Send(st); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		st := f.d.Status()
		reported := 0
		for _, c := range st.Children {
			if len(c.Revisions) == 1 {
				reported++
			}
		}
		if reported == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d children reported", reported, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		out, err := json.Marshal(f.d.Status())
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(out)))
	}
}
