package transport

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"ted/distribution"
	"ted/pki"
)

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// helloBoth opens the control stream of sess as a child and a distributor
// do, and returns both ends once the welcome has arrived: an idle session.
func helloBoth(ctx context.Context, dialled, accepted Session) (client, server *Conn, err error) {
	type res struct {
		c   *Conn
		err error
	}
	done := make(chan res, 1)
	go func() {
		c, _, err := ServerHello(ctx, accepted, &Welcome{Name: dialled.Peer().Name}, func(*Hello) error { return nil })
		done <- res{c, err}
	}()
	client, _, err = ClientHello(ctx, dialled, &Hello{Name: accepted.Peer().Name, Channels: []string{"apps"}})
	r := <-done
	return client, r.c, errors.Join(err, r.err)
}

// BenchmarkIdleSessionPipe is the heap that idle sessions hold beyond the
// session itself: n pipe sessions, each with its control stream open at
// both ends after a hello and a welcome, as every child's is between
// offers. B/session counts both ends.
func BenchmarkIdleSessionPipe(b *testing.B) {
	const n = 1000
	ctx := context.Background()
	for range b.N {
		type pair struct {
			a, b   Session
			ca, cb *Conn
		}
		pairs := make([]pair, n)
		for i := range pairs {
			pairs[i].a, pairs[i].b = NewPipe(Identity{Name: fmt.Sprintf("child-%d", i)}, Identity{Name: "dist-1"})
		}
		before := heapInUse()
		for i := range pairs {
			p := &pairs[i]
			// The dialled end is a's view: its peer is dist-1.
			ca, cb, err := helloBoth(ctx, p.a, p.b)
			if err != nil {
				b.Fatal(err)
			}
			p.ca, p.cb = ca, cb
		}
		after := heapInUse()
		b.ReportMetric(float64(after-before)/n, "B/session")
		for _, p := range pairs {
			p.ca.Close()
			p.cb.Close()
			p.a.Close(nil)
		}
		runtime.KeepAlive(pairs)
	}
}

// BenchmarkIdleSessionQUIC is BenchmarkIdleSessionPipe over real QUIC on
// loopback: n sessions dialled to one listener, each with its control
// stream open after a hello. B/session counts both ends, including
// quic-go's own state and each dialler's socket.
func BenchmarkIdleSessionQUIC(b *testing.B) {
	const n = 300
	p := newTestPKI(b)
	load := func(name string, role pki.Role) *Credentials { return p.issue(b, name, role) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := Listen("127.0.0.1:0", load("dist-1", pki.RoleDistributor), nil, QUICConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	client := load("web-01", pki.RoleSubscriber)
	for range b.N {
		before := heapInUse()
		var sessions []Session
		var conns []*Conn
		for range n {
			acc := make(chan acceptResult, 1)
			go func() {
				s, err := l.Accept(ctx)
				acc <- acceptResult{s, err}
			}()
			d, err := Dial(ctx, l.Addr().String(), client, pki.RoleDistributor, QUICConfig{})
			if err != nil {
				b.Fatal(err)
			}
			r := <-acc
			if r.err != nil {
				b.Fatal(r.err)
			}
			ca, cb, err := helloBoth(ctx, d, r.sess)
			if err != nil {
				b.Fatal(err)
			}
			sessions = append(sessions, d, r.sess)
			conns = append(conns, ca, cb)
		}
		after := heapInUse()
		b.ReportMetric(float64(after-before)/n, "B/session")
		for _, c := range conns {
			c.Close()
		}
		for _, s := range sessions {
			s.Close(nil)
		}
	}
}

// BenchmarkConnChunks is the framing's cost per chunk over a pipe: one
// stream, wants of 64 ids, 16 KiB chunks, as a fetch moves them.
func BenchmarkConnChunks(b *testing.B) {
	a, z := NewPipe(Identity{Name: "child"}, Identity{Name: "dist-1"})
	defer a.Close(nil)
	ctx := context.Background()
	data := make([]byte, 16<<10)
	_, _ = rand.Read(data)
	ids := make([]distribution.ChunkID, 64)
	for i := range ids {
		ids[i][0] = byte(i)
	}
	served := make(chan error, 1)
	go func() {
		st, err := z.AcceptStream(ctx)
		if err != nil {
			served <- err
			return
		}
		served <- serveStream(ctx, NewChunkConn(st, "child"), ChunkProviderFunc(func(context.Context, distribution.ChunkID) ([]byte, error) {
			return data, nil
		}), nil, nil)
	}()
	st, err := a.OpenStream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	c := NewChunkConn(st, "dist-1")
	b.SetBytes(int64(len(ids) * len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := c.Send(&Want{IDs: ids}); err != nil {
			b.Fatal(err)
		}
		for range ids {
			if _, err := c.Receive(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	c.Close()
	if err := <-served; err != nil {
		b.Fatal(err)
	}
}

// countSink counts what Fetch stores, and keeps nothing.
type countSink struct {
	mu sync.Mutex
	n  int
}

func (s *countSink) HasChunk(distribution.ChunkID) (bool, error) { return false, nil }
func (s *countSink) PutChunk(_ distribution.ChunkID, data []byte) error {
	s.mu.Lock()
	s.n += len(data)
	s.mu.Unlock()
	return nil
}

// BenchmarkFetchQUIC is a fetch of 256 chunks of 16 KiB over real QUIC on
// loopback, served from memory: the framing's cost in CPU and allocations
// per chunk on both ends, with quic-go's beside it.
func BenchmarkFetchQUIC(b *testing.B) {
	p := newTestPKI(b)
	load := func(name string, role pki.Role) *Credentials { return p.issue(b, name, role) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := Listen("127.0.0.1:0", load("dist-1", pki.RoleDistributor), nil, QUICConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	chunks := map[distribution.ChunkID][]byte{}
	var ids []distribution.ChunkID
	for range 256 {
		raw := make([]byte, 16<<10)
		_, _ = rand.Read(raw)
		id, enc := distribution.SumChunk(raw), distribution.EncodeChunk(raw)
		chunks[id] = enc
		ids = append(ids, id)
	}
	served := make(chan error, 1)
	go func() {
		sess, err := l.Accept(ctx)
		if err != nil {
			served <- err
			return
		}
		served <- ServeChunks(ctx, sess, ChunkProviderFunc(func(_ context.Context, id distribution.ChunkID) ([]byte, error) {
			return chunks[id], nil
		}), nil, nil)
	}()
	sess, err := Dial(ctx, l.Addr().String(), load("web-01", pki.RoleSubscriber), pki.RoleDistributor, QUICConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(ids)) * 16 << 10)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		sink := &countSink{}
		if err := Fetch(ctx, sess, ids, sink, FetchOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	sess.Close(nil)
	if err := <-served; err != nil {
		b.Fatal(err)
	}
}
