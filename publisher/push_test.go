package publisher

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ted/distribution"
	"ted/pki"
	"ted/store"
	"ted/transport"
)

const (
	pubName  = "pub-1"
	distName = "dist-1"
	agent    = "ted-test"
)

// prompt bounds how long a push may take to notice that its distributor or
// its context has gone. It is far below transport.HandshakeTimeout, so a
// push that only ends on some timeout fails the test.
const prompt = 5 * time.Second

func publisherKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed([]byte("ted publisher push tests: key!!!"))
}

// revision is a signed revision in a publisher's store.
type revision struct {
	store    *store.Memory
	signed   *distribution.Signed
	manifest *distribution.Manifest
	// chunks are the revision's distinct chunk ids, in first use order.
	chunks []distribution.ChunkID
}

// newRevision builds revision 7 of "app" from a tree of small files, each
// its own chunk, and one duplicate, so the revision has several distinct
// chunks and one shared by two files.
func newRevision(t *testing.T) *revision {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{"share/copy.txt": []byte("file 0 of the app\n")}
	for i := range 10 {
		files[fmt.Sprintf("share/%d.txt", i)] = fmt.Appendf(nil, "file %d of the app\n%s", i, strings.Repeat("x", 100*i))
	}
	for name, data := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	m, _, err := distribution.BuildDir(context.Background(), dir, distribution.BuildOptions{
		Name: "app", Revision: 7, Version: "1.7", Channels: []string{"web"},
		Created: time.Unix(1_700_000_000, 0),
	}, st)
	if err != nil {
		t.Fatal(err)
	}
	s, err := distribution.Sign(m, publisherKey())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddRevision(s, m); err != nil {
		t.Fatal(err)
	}
	r := &revision{store: st, signed: s, manifest: m, chunks: m.ChunkIDs()}
	if len(r.chunks) < 6 {
		t.Fatalf("the fixture has %d distinct chunks; the tests need several", len(r.chunks))
	}
	return r
}

// encodedSize sums the encoded sizes of ids in the publisher's store.
func (r *revision) encodedSize(t *testing.T, ids []distribution.ChunkID) int64 {
	t.Helper()
	var n int64
	for _, id := range ids {
		data, err := r.store.Chunk(id)
		if err != nil {
			t.Fatal(err)
		}
		n += int64(len(data))
	}
	return n
}

// connect returns the publisher's and the distributor's ends of a session,
// both closed when the test ends.
func connect(t *testing.T) (pub, dist transport.Session) {
	t.Helper()
	pub, dist = transport.NewPipe(
		transport.Identity{Name: pubName, Role: pki.RolePublisher},
		transport.Identity{Name: distName, Role: pki.RoleDistributor})
	t.Cleanup(func() {
		_ = pub.Close(nil)
		_ = dist.Close(nil)
	})
	return pub, dist
}

// answerFunc is what the fake distributor does once it has checked the
// offer: it replies on control, and returns why it failed, if it did.
type answerFunc func(ctx context.Context, f *fakeDistributor, control *transport.Conn, offer *distribution.Signed, m *distribution.Manifest) error

// fakeDistributor plays the distributor's side of a push with package
// transport alone: daemon packages do not import each other.
type fakeDistributor struct {
	sess transport.Session
	// want is the revision the publisher must offer.
	want *distribution.Signed
	// store is the distributor's own; the chunks it already holds are put
	// there before the push.
	store *store.Memory
	// check vets the publisher's hello; nil accepts it.
	check func(*transport.Hello) error
}

func newFake(t *testing.T, sess transport.Session, want *distribution.Signed) *fakeDistributor {
	t.Helper()
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	return &fakeDistributor{sess: sess, want: want, store: st}
}

// start runs the distributor's side in a goroutine; the channel gives its
// error when it is done. Every test waits for it, so no goroutine outlives
// the test.
func (f *fakeDistributor) start(ctx context.Context, answer answerFunc) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f.serve(ctx, answer) }()
	return done
}

func (f *fakeDistributor) serve(ctx context.Context, answer answerFunc) error {
	check := f.check
	if check == nil {
		check = func(*transport.Hello) error { return nil }
	}
	control, hello, err := transport.ServerHello(ctx, f.sess, &transport.Welcome{Name: distName, Agent: "fake"}, check)
	if err != nil {
		return err
	}
	defer control.Close()
	if hello.Name != pubName || hello.Agent != agent {
		return fmt.Errorf("hello from %q, agent %q; want %q, %q", hello.Name, hello.Agent, pubName, agent)
	}
	msg, err := control.Receive()
	if err != nil {
		return fmt.Errorf("waiting for the offer: %w", err)
	}
	offer, ok := msg.(*transport.Offer)
	if !ok {
		return fmt.Errorf("the publisher sent %T, want an offer", msg)
	}
	if !bytes.Equal(offer.Signed.Encode(), f.want.Encode()) {
		return errors.New("the offer is not the revision pushed")
	}
	m, err := offer.Signed.Manifest()
	if err != nil {
		return err
	}
	return answer(ctx, f, control, offer.Signed, m)
}

// missing returns the chunks of m the fake does not hold.
func (f *fakeDistributor) missing(m *distribution.Manifest) ([]distribution.ChunkID, error) {
	var ids []distribution.ChunkID
	for _, id := range m.ChunkIDs() {
		ok, err := f.store.HasChunk(id)
		if err != nil {
			return nil, err
		}
		if !ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// storeRevision is what a distributor does with an offer it accepts: fetch
// the chunks it lacks, on several streams at once, store the revision, and
// say so.
func storeRevision(ctx context.Context, f *fakeDistributor, control *transport.Conn, offer *distribution.Signed, m *distribution.Manifest) error {
	ids, err := f.missing(m)
	if err != nil {
		return err
	}
	var fetched struct {
		sync.Mutex
		chunks int
		bytes  int64
	}
	opts := transport.FetchOptions{Streams: 3, Batch: 2, Stored: func(_ distribution.ChunkID, n int) {
		fetched.Lock()
		defer fetched.Unlock()
		fetched.chunks++
		fetched.bytes += int64(n)
	}}
	if err := transport.Fetch(ctx, f.sess, ids, f.store, opts); err != nil {
		_ = control.Send(transport.ErrorOf(err))
		return fmt.Errorf("fetch: %w", err)
	}
	if _, err := f.store.AddRevision(offer, m); err != nil {
		_ = control.Send(transport.ErrorOf(err))
		return err
	}
	return control.Send(&transport.Result{Name: m.Name, Revision: m.Revision,
		FetchedChunks: fetched.chunks, FetchedBytes: fetched.bytes})
}

// reply answers the offer with msg at once, fetching nothing.
func reply(msg transport.Message) answerFunc {
	return func(_ context.Context, _ *fakeDistributor, control *transport.Conn, _ *distribution.Signed, _ *distribution.Manifest) error {
		return control.Send(msg)
	}
}

// progressLog records every progress report.
type progressLog struct {
	mu      sync.Mutex
	reports []Progress
}

func (l *progressLog) report(p Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reports = append(l.reports, p)
}

func (l *progressLog) all() []Progress {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Progress(nil), l.reports...)
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// wait returns the fake's error, failing the test if it does not finish.
func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(prompt):
		t.Fatal("the fake distributor did not finish")
		return nil
	}
}

func TestPushServesWhatTheDistributorLacks(t *testing.T) {
	tests := []struct {
		name string
		// held picks, by index into the revision's chunks, those the
		// distributor holds before the push.
		held func(i int) bool
	}{
		{"holds nothing", func(int) bool { return false }},
		{"holds every other chunk", func(i int) bool { return i%2 == 0 }},
		{"holds all but the last", func(i int) bool { return i != 10 }},
		{"holds every chunk but not the revision", func(int) bool { return true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRevision(t)
			pub, dist := connect(t)
			fake := newFake(t, dist, r.signed)
			var lacks []distribution.ChunkID
			for i, id := range r.chunks {
				if !tt.held(i) {
					lacks = append(lacks, id)
					continue
				}
				data, err := r.store.Chunk(id)
				if err != nil {
					t.Fatal(err)
				}
				if err := fake.store.PutChunk(id, data); err != nil {
					t.Fatal(err)
				}
			}
			done := fake.start(t.Context(), storeRevision)
			var progress progressLog
			res, err := Push(t.Context(), pub, pubName, agent, r.store, r.signed, progress.report, testLog(t))
			if ferr := wait(t, done); ferr != nil {
				t.Fatalf("distributor: %v", ferr)
			}
			if err != nil {
				t.Fatalf("Push: %v", err)
			}

			want := PushResult{Name: "app", Revision: 7, Version: "1.7", Distributor: distName,
				SentChunks: len(lacks), SentBytes: r.encodedSize(t, lacks)}
			if res != want {
				t.Errorf("Push = %+v, want %+v", res, want)
			}
			reports := progress.all()
			if len(reports) != len(lacks) {
				t.Fatalf("progress called %d times, want once per chunk sent (%d)", len(reports), len(lacks))
			}
			var last Progress
			for i, p := range reports {
				if p.SentChunks != i+1 || p.SentBytes <= last.SentBytes {
					t.Errorf("progress report %d = %+v after %+v, want counts rising by one chunk", i, p, last)
				}
				last = p
			}
			if last.SentChunks != res.SentChunks || last.SentBytes != res.SentBytes {
				t.Errorf("last progress %+v, result %+v", last, res)
			}

			for _, id := range r.chunks {
				got, err := fake.store.Chunk(id)
				if err != nil {
					t.Fatalf("distributor lacks chunk %s: %v", id.Short(), err)
				}
				wantData, _ := r.store.Chunk(id)
				if !bytes.Equal(got, wantData) {
					t.Errorf("distributor's chunk %s differs from the publisher's", id.Short())
				}
			}
			held, err := fake.store.Signed("app", 7)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(held.Encode(), r.signed.Encode()) {
				t.Error("distributor stored another envelope")
			}
		})
	}
}

func TestPushAlreadyStored(t *testing.T) {
	r := newRevision(t)
	pub, dist := connect(t)
	fake := newFake(t, dist, r.signed)
	done := fake.start(t.Context(), reply(&transport.Result{Name: "app", Revision: 7, AlreadyStored: true}))
	var progress progressLog
	res, err := Push(t.Context(), pub, pubName, agent, r.store, r.signed, progress.report, testLog(t))
	if ferr := wait(t, done); ferr != nil {
		t.Fatalf("distributor: %v", ferr)
	}
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	want := PushResult{Name: "app", Revision: 7, Version: "1.7", Distributor: distName, AlreadyStored: true}
	if res != want {
		t.Errorf("Push = %+v, want %+v", res, want)
	}
	if n := len(progress.all()); n != 0 {
		t.Errorf("progress called %d times for a push that sent nothing", n)
	}
}

// TestPushAnswers covers every answer but success: the push fails with an
// error naming the distributor that errors.Is can tell apart, since the CLI
// turns some into exit codes (an untrusted key is a verification failure).
func TestPushAnswers(t *testing.T) {
	tests := []struct {
		name   string
		answer answerFunc
		// want is the sentinel the error wraps; nil for any error.
		want error
	}{
		{"unauthorised", reply(transport.ErrorOf(fmt.Errorf("%w: %s may not publish into web", transport.ErrUnauthorized, pubName))),
			transport.ErrUnauthorized},
		{"untrusted key", reply(transport.ErrorOf(fmt.Errorf("revision from %s: %w", pubName, distribution.ErrUntrustedKey))),
			distribution.ErrUntrustedKey},
		{"rollback", reply(transport.ErrorOf(fmt.Errorf("app@7: %w", transport.ErrRollback))),
			transport.ErrRollback},
		{"unknown failure", reply(transport.ErrorOf(errors.New("disk on fire"))),
			transport.ErrInternal},
		{"result for another revision", reply(&transport.Result{Name: "app", Revision: 8}),
			transport.ErrProtocol},
		{"result for another distribution", reply(&transport.Result{Name: "web", Revision: 7}),
			transport.ErrProtocol},
		{"another message", reply(&transport.Welcome{Name: distName}),
			transport.ErrProtocol},
		{"hangs up", func(context.Context, *fakeDistributor, *transport.Conn, *distribution.Signed, *distribution.Manifest) error {
			return nil // serve closes the control stream
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRevision(t)
			pub, dist := connect(t)
			fake := newFake(t, dist, r.signed)
			done := fake.start(t.Context(), tt.answer)
			res, err := Push(t.Context(), pub, pubName, agent, r.store, r.signed, nil, testLog(t))
			if ferr := wait(t, done); ferr != nil {
				t.Fatalf("distributor: %v", ferr)
			}
			if err == nil {
				t.Fatalf("Push = %+v, want an error", res)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Push error %q does not wrap %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), distName) {
				t.Errorf("Push error %q does not name the distributor", err)
			}
			if res.SentChunks != 0 || res.AlreadyStored {
				t.Errorf("Push = %+v, want nothing sent nor stored", res)
			}
		})
	}
}

func TestPushHelloRefused(t *testing.T) {
	r := newRevision(t)
	pub, dist := connect(t)
	fake := newFake(t, dist, r.signed)
	fake.check = func(h *transport.Hello) error {
		return fmt.Errorf("%w: %s is no publisher here", transport.ErrUnauthorized, h.Name)
	}
	done := fake.start(t.Context(), storeRevision)
	_, err := Push(t.Context(), pub, pubName, agent, r.store, r.signed, nil, testLog(t))
	if ferr := wait(t, done); !errors.Is(ferr, transport.ErrUnauthorized) {
		t.Fatalf("distributor: %v, want its refusal", ferr)
	}
	if !errors.Is(err, transport.ErrUnauthorized) || !strings.Contains(err.Error(), distName) {
		t.Errorf("Push error %v, want the refusal of %s", err, distName)
	}
}

// TestPushEndsMidTransfer checks that a push whose distributor goes away, or
// whose context ends, while a chunk stream is open, returns at once and
// leaves nothing running.
func TestPushEndsMidTransfer(t *testing.T) {
	tests := []struct {
		name string
		// interrupt ends the push after the first chunk has arrived.
		interrupt func(cancel context.CancelFunc, dist transport.Session)
	}{
		{"distributor closes the session", func(_ context.CancelFunc, dist transport.Session) {
			_ = dist.Close(errors.New("distributor crashed"))
		}},
		{"context cancelled", func(cancel context.CancelFunc, _ transport.Session) { cancel() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRevision(t)
			pub, dist := connect(t)
			fake := newFake(t, dist, r.signed)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			first := r.chunks[0]
			// The fake asks for one chunk on a stream of its own, then
			// interrupts and waits for the publisher to close both streams.
			done := fake.start(t.Context(), func(ctx context.Context, f *fakeDistributor, control *transport.Conn, _ *distribution.Signed, _ *distribution.Manifest) error {
				st, err := f.sess.OpenStream(ctx)
				if err != nil {
					return err
				}
				chunks := transport.NewChunkConn(st, pubName)
				defer chunks.Close()
				if err := chunks.Send(&transport.Want{IDs: r.chunks[:2]}); err != nil {
					return err
				}
				msg, err := chunks.Receive()
				if err != nil {
					return err
				}
				if c, ok := msg.(*transport.Chunk); !ok || c.ID != first {
					return fmt.Errorf("publisher answered %T, want chunk %s", msg, first.Short())
				}
				tt.interrupt(cancel, f.sess)
				if msg, err := chunks.Receive(); err == nil {
					// The second chunk may have been on its way.
					if c, ok := msg.(*transport.Chunk); !ok || c.ID != r.chunks[1] {
						return fmt.Errorf("publisher answered %T, want chunk %s", msg, r.chunks[1].Short())
					}
					if _, err := chunks.Receive(); err == nil {
						return errors.New("the chunk stream outlived the push")
					}
				}
				if _, err := control.Receive(); err == nil {
					return errors.New("the control stream outlived the push")
				}
				return nil
			})
			type outcome struct {
				res PushResult
				err error
			}
			pushed := make(chan outcome, 1)
			var progress progressLog
			go func() {
				res, err := Push(ctx, pub, pubName, agent, r.store, r.signed, progress.report, testLog(t))
				pushed <- outcome{res, err}
			}()
			var got outcome
			select {
			case got = <-pushed:
			case <-time.After(prompt):
				t.Fatal("Push did not return")
			}
			if ferr := wait(t, done); ferr != nil {
				t.Errorf("distributor: %v", ferr)
			}
			if got.err == nil {
				t.Fatalf("Push = %+v, want an error", got.res)
			}
			t.Logf("Push: %v", got.err)
			if got.res.SentChunks < 1 || got.res.SentChunks > 2 || got.res.AlreadyStored {
				t.Errorf("Push = %+v, want one or two chunks sent", got.res)
			}
			if n := len(progress.all()); n != got.res.SentChunks {
				t.Errorf("progress called %d times for %d chunks sent", n, got.res.SentChunks)
			}
		})
	}
}

func TestPushUnreadableRevision(t *testing.T) {
	r := newRevision(t)
	pub, _ := connect(t)
	bad := &distribution.Signed{Body: []byte("not a manifest"), KeyID: r.signed.KeyID, Signature: r.signed.Signature}
	if _, err := Push(t.Context(), pub, pubName, agent, r.store, bad, nil, testLog(t)); err == nil {
		t.Fatal("Push offered a revision it cannot read")
	}
}

// TestPushDistributorLeavesBeforeOffer: the distributor welcomes the
// publisher and closes the control stream before reading the offer.
func TestPushDistributorLeavesBeforeOffer(t *testing.T) {
	r := newRevision(t)
	pub, dist := connect(t)
	done := make(chan error, 1)
	go func() {
		control, _, err := transport.ServerHello(t.Context(), dist, &transport.Welcome{Name: distName}, func(*transport.Hello) error { return nil })
		if err == nil {
			err = control.Close()
		}
		done <- err
	}()
	res, err := Push(t.Context(), pub, pubName, agent, r.store, r.signed, nil, testLog(t))
	if ferr := wait(t, done); ferr != nil {
		t.Fatalf("distributor: %v", ferr)
	}
	if err == nil {
		t.Fatalf("Push = %+v, want an error", res)
	}
	if !strings.Contains(err.Error(), distName) {
		t.Errorf("Push error %q does not name the distributor", err)
	}
}
