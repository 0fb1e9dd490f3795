package distributor_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// waitLimit bounds every wait on another goroutine: a hang fails the test
// that caused it instead of the whole run.
const waitLimit = 10 * time.Second

// The nodes of these tests. dist-1 carries two channels: web, published by
// pub-1 for sub-1 and dist-2, and db, published by pub-2 for sub-2.
var (
	distID   = transport.Identity{Name: "dist-1", Role: pki.RoleDistributor}
	parentID = transport.Identity{Name: "dist-0", Role: pki.RoleDistributor}
	pubID    = transport.Identity{Name: "pub-1", Role: pki.RolePublisher}
	pub2ID   = transport.Identity{Name: "pub-2", Role: pki.RolePublisher}
	subID    = transport.Identity{Name: "sub-1", Role: pki.RoleSubscriber}
	sub2ID   = transport.Identity{Name: "sub-2", Role: pki.RoleSubscriber}
	lowerID  = transport.Identity{Name: "dist-2", Role: pki.RoleDistributor}
)

// publisherKey is the key dist-1 trusts; strangerKey is one it does not.
func publisherKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed([]byte("ted distributor tests: publisher"))
}

func strangerKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed([]byte("ted distributor tests: stranger!"))
}

func testConfig() distributor.Config {
	cfg := distributor.DefaultConfig()
	cfg.Name = distID.Name
	cfg.Agent = "test"
	cfg.Trust = distribution.NewTrust(publisherKey().Public().(ed25519.PublicKey))
	cfg.Channels = map[string]distributor.Channel{
		"web": {Publishers: []string{pubID.Name}, Children: []string{subID.Name, lowerID.Name}},
		"db":  {Publishers: []string{pub2ID.Name}, Children: []string{sub2ID.Name}},
	}
	return cfg
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// memStore returns a memory store closed when the test ends.
func memStore(t *testing.T) *store.Memory {
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// node is a running distributor and the listener that feeds it sessions.
type node struct {
	t        *testing.T
	d        *distributor.Distributor
	store    *store.Memory
	sessions chan transport.Session
	stop     func() error
}

// Accept is the node's Listener: it gives the sessions connect made.
func (n *node) Accept(ctx context.Context) (transport.Session, error) {
	select {
	case s := <-n.sessions:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startDistributor runs a distributor over a memory store until the test
// ends, or until stop is called.
func startDistributor(t *testing.T, cfg distributor.Config, dial transport.DialFunc) *node {
	t.Helper()
	return startDistributorLog(t, cfg, dial, testLog(t))
}

// startDistributorLog is startDistributor logging to log.
func startDistributorLog(t *testing.T, cfg distributor.Config, dial transport.DialFunc, log *slog.Logger) *node {
	t.Helper()
	st := memStore(t)
	d, err := distributor.New(cfg, st, log)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, d: d, store: st, sessions: make(chan transport.Session)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, n, dial) }()
	n.stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(waitLimit):
			return fmt.Errorf("Run did not return within %v of its context ending", waitLimit)
		}
	})
	t.Cleanup(func() {
		if err := n.stop(); err != nil {
			t.Error(err)
		}
	})
	return n
}

// connect dials the distributor as id: it is shown the identity first, as
// the QUIC listener does, and given the session if it accepts it.
func (n *node) connect(id transport.Identity) (transport.Session, error) {
	n.t.Helper()
	if err := n.d.Accept(id); err != nil {
		return nil, err
	}
	mine, theirs := transport.NewPipe(id, distID)
	n.t.Cleanup(func() { mine.Close(nil) })
	select {
	case n.sessions <- theirs:
	case <-time.After(waitLimit):
		n.t.Fatalf("the distributor did not accept %s within %v", id, waitLimit)
	}
	return mine, nil
}

// receive reads one message, failing the test after waitLimit.
func receive(t *testing.T, c *transport.Conn) transport.Message {
	t.Helper()
	type received struct {
		msg transport.Message
		err error
	}
	ch := make(chan received, 1)
	go func() {
		msg, err := c.Receive()
		ch <- received{msg, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("receive from %s: %v", c.Peer(), r.err)
		}
		return r.msg
	case <-time.After(waitLimit):
		c.Close() // ends the read
		t.Fatalf("nothing from %s within %v", c.Peer(), waitLimit)
		return nil
	}
}

// await returns what ch delivers, failing the test after waitLimit.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("%s: nothing within %v", what, waitLimit)
		panic("unreachable")
	}
}

// waitFor polls cond until it holds, failing the test after waitLimit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitLimit)
		}
		<-tick.C
	}
}

// publisherSession is a publisher connected to the distributor: it serves
// its chunks from a provider and counts those served.
type publisherSession struct {
	t       *testing.T
	sess    transport.Session
	control *transport.Conn
	served  atomic.Int64
}

func (n *node) publisher(id transport.Identity, p transport.ChunkProvider) *publisherSession {
	n.t.Helper()
	sess, err := n.connect(id)
	if err != nil {
		n.t.Fatal(err)
	}
	control, _, err := transport.ClientHello(n.t.Context(), sess, &transport.Hello{Name: id.Name, Agent: "test"})
	if err != nil {
		n.t.Fatal(err)
	}
	ps := &publisherSession{t: n.t, sess: sess, control: control}
	done := make(chan struct{})
	log := testLog(n.t)
	go func() {
		defer close(done)
		_ = transport.ServeChunks(context.Background(), sess, p, func(int) { ps.served.Add(1) }, log)
	}()
	n.t.Cleanup(func() {
		sess.Close(nil)
		select {
		case <-done:
		case <-time.After(waitLimit):
			n.t.Errorf("the publisher's chunk server did not stop within %v", waitLimit)
		}
	})
	return ps
}

// offer sends an offer and returns the distributor's answer: a result, or
// its refusal.
func (p *publisherSession) offer(s *distribution.Signed) (*transport.Result, error) {
	p.t.Helper()
	p.send(s)
	return p.answer()
}

func (p *publisherSession) send(s *distribution.Signed) {
	p.t.Helper()
	if err := p.control.Send(&transport.Offer{Signed: s}); err != nil {
		p.t.Fatal(err)
	}
}

func (p *publisherSession) answer() (*transport.Result, error) {
	p.t.Helper()
	switch msg := receive(p.t, p.control).(type) {
	case *transport.Result:
		return msg, nil
	case *transport.Error:
		return nil, msg
	default:
		p.t.Fatalf("the distributor answered an offer with %T", msg)
		return nil, nil
	}
}

// publish offers a revision and fails the test unless it is stored.
func (n *node) publish(id transport.Identity, src distribution.ChunkSource, s *distribution.Signed) *transport.Result {
	n.t.Helper()
	res, err := n.publisher(id, transport.StoreProvider(src)).offer(s)
	if err != nil {
		n.t.Fatalf("publish: %v", err)
	}
	return res
}

// childSession is a child connected to the distributor.
type childSession struct {
	t       *testing.T
	sess    transport.Session
	control *transport.Conn
}

// child connects as id and asks for channels; the error is the refusal.
func (n *node) child(id transport.Identity, channels ...string) (*childSession, error) {
	n.t.Helper()
	sess, err := n.connect(id)
	if err != nil {
		return nil, err
	}
	control, _, err := transport.ClientHello(n.t.Context(), sess, &transport.Hello{Name: id.Name, Agent: "test-agent", Channels: channels})
	if err != nil {
		return nil, err
	}
	return &childSession{t: n.t, sess: sess, control: control}, nil
}

func (n *node) mustChild(id transport.Identity, channels ...string) *childSession {
	n.t.Helper()
	c, err := n.child(id, channels...)
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

// nextOffer waits for the distributor's next offer.
func (c *childSession) nextOffer() *distribution.Signed {
	c.t.Helper()
	msg := receive(c.t, c.control)
	offer, ok := msg.(*transport.Offer)
	if !ok {
		c.t.Fatalf("the distributor sent %T, want an offer", msg)
	}
	return offer.Signed
}

// fetch gets every chunk of m from the distributor into sink.
func (c *childSession) fetch(m *distribution.Manifest, sink distribution.ChunkSink) error {
	return transport.Fetch(c.t.Context(), c.sess, m.ChunkIDs(), sink, transport.FetchOptions{})
}

// appFiles is a small tree: bin/app spans several chunks, and two files
// share their content, so a revision has fewer distinct chunks than
// references.
func appFiles(seed uint64) map[string][]byte {
	app := make([]byte, 200<<10)
	_, _ = rand.NewChaCha8([32]byte{byte(seed)}).Read(app) // never fails
	return map[string][]byte{
		"bin/app":      app,
		"etc/app.conf": fmt.Appendf(nil, "listen = %d\n", 8000+seed),
		"share/a.txt":  []byte("the same bytes twice\n"),
		"share/b.txt":  []byte("the same bytes twice\n"),
	}
}

// build writes files to a directory and builds, into sink, revision rev of
// "app" in channels, signed with key.
func build(t *testing.T, sink distribution.ChunkSink, key ed25519.PrivateKey, files map[string][]byte, rev uint64, channels ...string) (*distribution.Signed, *distribution.Manifest) {
	t.Helper()
	return buildNamed(t, sink, key, "app", files, rev, channels...)
}

func buildNamed(t *testing.T, sink distribution.ChunkSink, key ed25519.PrivateKey, name string, files map[string][]byte, rev uint64, channels ...string) (*distribution.Signed, *distribution.Manifest) {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, _, err := distribution.BuildDir(context.Background(), dir, distribution.BuildOptions{
		Name: name, Revision: rev, Version: fmt.Sprintf("1.%d", rev), Channels: channels,
		Created: time.Unix(1_700_000_000+int64(rev), 0),
	}, sink)
	if err != nil {
		t.Fatal(err)
	}
	s, err := distribution.Sign(m, key)
	if err != nil {
		t.Fatal(err)
	}
	return s, m
}

// encodedSize sums the encoded sizes of ids in src.
func encodedSize(t *testing.T, src distribution.ChunkSource, ids []distribution.ChunkID) int64 {
	t.Helper()
	var n int64
	for _, id := range ids {
		data, err := src.Chunk(id)
		if err != nil {
			t.Fatal(err)
		}
		n += int64(len(data))
	}
	return n
}

// assertHolds checks that st holds s exactly and every chunk of m intact.
func assertHolds(t *testing.T, st store.Store, s *distribution.Signed, m *distribution.Manifest) {
	t.Helper()
	held, err := st.Signed(m.Name, m.Revision)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(held.Encode(), s.Encode()) {
		t.Errorf("%s@%d held differs from the one offered", m.Name, m.Revision)
	}
	for _, id := range m.ChunkIDs() {
		data, err := st.Chunk(id)
		if err != nil {
			t.Fatalf("chunk %s: %v", id.Short(), err)
		}
		if _, err := distribution.DecodeChunk(id, data); err != nil {
			t.Errorf("chunk %s: %v", id.Short(), err)
		}
	}
}

func TestPublishStoresRevisionAndEveryChunk(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	src := memStore(t)
	s, m := build(t, src, publisherKey(), appFiles(1), 1, "web")
	ids := m.ChunkIDs()
	if _, _, refs := m.Totals(); refs <= len(ids) {
		t.Fatalf("fixture: %d chunk references and %d distinct chunks: want some shared", refs, len(ids))
	}

	pub := n.publisher(pubID, transport.StoreProvider(src))
	res, err := pub.offer(s)
	if err != nil {
		t.Fatal(err)
	}
	want := transport.Result{Name: "app", Revision: 1, FetchedChunks: len(ids), FetchedBytes: encodedSize(t, src, ids)}
	if *res != want {
		t.Errorf("result %+v, want %+v", *res, want)
	}
	// The publisher counts a chunk after sending it, which may be after
	// the distributor answered.
	waitFor(t, fmt.Sprintf("the publisher to count %d chunks served, each distinct chunk once", len(ids)), func() bool {
		return pub.served.Load() == int64(len(ids))
	})
	assertHolds(t, n.store, s, m)
	st := n.d.Status()
	if len(st.Distributions) != 1 || st.Distributions[0].Name != "app" || st.Distributions[0].Revision != 1 ||
		!slices.Equal(st.Distributions[0].Channels, []string{"web"}) {
		t.Errorf("status distributions %+v, want app@1 in web", st.Distributions)
	}
	if len(st.Incoming) != 0 {
		t.Errorf("status incoming %+v after the result, want none", st.Incoming)
	}

	// The same revision again, on the same session and on a new one:
	// nothing is fetched.
	for _, p := range []*publisherSession{pub, n.publisher(pubID, transport.StoreProvider(src))} {
		before := p.served.Load()
		res, err := p.offer(s)
		if err != nil {
			t.Fatal(err)
		}
		want := transport.Result{Name: "app", Revision: 1, AlreadyStored: true}
		if *res != want {
			t.Errorf("second offer: result %+v, want %+v", *res, want)
		}
		if got := p.served.Load() - before; got != 0 {
			t.Errorf("second offer: %d chunks served, want none", got)
		}
	}
}

func TestPublishFetchesOnlyNewChunks(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	src := memStore(t)
	s1, m1 := build(t, src, publisherKey(), appFiles(1), 1, "web")
	n.publish(pubID, src, s1)

	files := appFiles(1)
	files["etc/app.conf"] = []byte("listen = 9090\n")
	s2, m2 := build(t, src, publisherKey(), files, 2, "web")
	var fresh []distribution.ChunkID
	for _, id := range m2.ChunkIDs() {
		if !slices.Contains(m1.ChunkIDs(), id) {
			fresh = append(fresh, id)
		}
	}
	if len(fresh) == 0 || len(fresh) == len(m2.ChunkIDs()) {
		t.Fatalf("fixture: %d of %d chunks new in rev 2, want some but not all", len(fresh), len(m2.ChunkIDs()))
	}
	res := n.publish(pubID, src, s2)
	if res.FetchedChunks != len(fresh) || res.FetchedBytes != encodedSize(t, src, fresh) {
		t.Errorf("result %+v, want %d chunks and %d bytes fetched", *res, len(fresh), encodedSize(t, src, fresh))
	}
	assertHolds(t, n.store, s2, m2)
}

func TestChildReceivesStoredRevision(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	src := memStore(t)
	s, m := build(t, src, publisherKey(), appFiles(1), 1, "web")
	n.publish(pubID, src, s)

	child := n.mustChild(subID, "web")
	offered := child.nextOffer()
	if !slices.Equal(offered.Encode(), s.Encode()) {
		t.Fatal("the offer differs from the published revision")
	}
	om, err := testConfig().Trust.Verify(offered)
	if err != nil {
		t.Fatal(err)
	}
	mine := memStore(t)
	if err := child.fetch(om, mine); err != nil {
		t.Fatal(err)
	}
	if _, err := mine.AddRevision(offered, om); err != nil {
		t.Fatalf("every chunk fetched, yet: %v", err)
	}

	state := transport.RevisionState{Name: "app", Revision: 1, Version: m.Version, State: "extracted", Chunks: len(m.ChunkIDs()), HaveChunks: len(m.ChunkIDs())}
	if err := child.control.Send(&transport.Status{Role: "single", ActiveNode: subID.Name, Revisions: []transport.RevisionState{state}}); err != nil {
		t.Fatal(err)
	}
	reported := func(connected bool) func() bool {
		return func() bool {
			st := n.d.Status()
			return len(st.Children) == 1 && st.Children[0].Connected == connected &&
				slices.Equal(st.Children[0].Revisions, []transport.RevisionState{state})
		}
	}
	waitFor(t, "the child's status", reported(true))
	c := n.d.Status().Children[0]
	if c.Name != subID.Name || c.Role != string(pki.RoleSubscriber) || !slices.Equal(c.Channels, []string{"web"}) ||
		c.Agent != "test-agent" || c.ActiveNode != subID.Name || c.Since.IsZero() {
		t.Errorf("child status %+v", c)
	}

	// Gone, it is still listed with its last report.
	child.sess.Close(nil)
	waitFor(t, "the child listed as disconnected", reported(false))
}

func TestChildOnlyOfferedItsChannels(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	src := memStore(t)
	web1, _ := build(t, src, publisherKey(), appFiles(1), 1, "web")
	n.publish(pubID, src, web1)
	db, _ := buildNamed(t, src, publisherKey(), "db", map[string][]byte{"schema.sql": []byte("create table t (id int);\n")}, 7, "db")
	n.publish(pub2ID, src, db)

	web := n.mustChild(subID, "web")
	dbChild := n.mustChild(sub2ID, "db")
	if got := dbChild.nextOffer(); !slices.Equal(got.Encode(), db.Encode()) {
		t.Error("sub-2 was not offered db@7")
	}
	if got := web.nextOffer(); !slices.Equal(got.Encode(), web1.Encode()) {
		t.Error("sub-1 was not offered app@1")
	}
	// Had db@7 been offered to sub-1 as well, it would come before app@2:
	// a child is offered everything due in one go.
	web2, _ := build(t, src, publisherKey(), appFiles(2), 2, "web")
	n.publish(pubID, src, web2)
	if got := web.nextOffer(); !slices.Equal(got.Encode(), web2.Encode()) {
		gm, _ := got.Manifest()
		t.Errorf("sub-1 was offered %s@%d, want app@2", gm.Name, gm.Revision)
	}
}

// gatedProvider serves src's chunks once open is closed.
func gatedProvider(src distribution.ChunkSource, open <-chan struct{}) transport.ChunkProvider {
	return transport.ChunkProviderFunc(func(ctx context.Context, id distribution.ChunkID) ([]byte, error) {
		select {
		case <-open:
			return src.Chunk(id)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// signalSession tells when the first bytes are written on a stream it
// opened: over a pipe, once the write returns the peer has read them.
type signalSession struct {
	transport.Session
	once    sync.Once
	written chan struct{}
}

func (s *signalSession) OpenStream(ctx context.Context) (transport.Stream, error) {
	st, err := s.Session.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	return &signalStream{Stream: st, s: s}, nil
}

type signalStream struct {
	transport.Stream
	s *signalSession
}

func (st *signalStream) Write(p []byte) (int, error) {
	n, err := st.Stream.Write(p)
	st.s.once.Do(func() { close(st.s.written) })
	return n, err
}

func TestChildPullsThroughWhileRevisionArrives(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	src := memStore(t)
	s, m := build(t, src, publisherKey(), appFiles(1), 1, "web")
	ids := m.ChunkIDs()

	// Connected before app is published, and offered docs meanwhile: its
	// offer loop is then waiting for news. other is a child of another
	// channel.
	docs, _ := buildNamed(t, src, publisherKey(), "docs", map[string][]byte{"index.html": []byte("<p>docs</p>\n")}, 1, "web")
	n.publish(pubID, src, docs)
	child := n.mustChild(subID, "web")
	if got := child.nextOffer(); !slices.Equal(got.Encode(), docs.Encode()) {
		t.Fatal("the child was not offered docs@1")
	}
	other := n.mustChild(sub2ID, "db")
	open := make(chan struct{})
	pub := n.publisher(pubID, gatedProvider(src, open))
	pub.send(s)

	// Offered at once, while the distributor holds none of its chunks:
	// the publisher serves nothing yet.
	offered := child.nextOffer()
	if !slices.Equal(offered.Encode(), s.Encode()) {
		t.Fatal("the offer differs from the revision being published")
	}
	for _, id := range ids {
		if ok, err := n.store.HasChunk(id); err != nil || ok {
			t.Fatalf("chunk %s held (%v) before the publisher served any", id.Short(), err)
		}
	}
	if in := n.d.Status().Incoming; len(in) != 1 || in[0].Name != "app" || in[0].Revision != 1 || in[0].From != pubID.Name {
		t.Errorf("status incoming %+v, want app@1 from %s", in, pubID.Name)
	}

	// The child asks; once the distributor has read its want, the
	// publisher starts serving.
	sess := &signalSession{Session: child.sess, written: make(chan struct{})}
	mine := memStore(t)
	fetched := make(chan error, 1)
	go func() {
		fetched <- transport.Fetch(t.Context(), sess, ids, mine, transport.FetchOptions{Streams: 2, Batch: 3})
	}()
	await(t, sess.written, "the child's first want")
	close(open)

	if err := await(t, fetched, "the child's fetch"); err != nil {
		t.Fatalf("child fetch: %v", err)
	}
	if _, err := mine.AddRevision(s, m); err != nil {
		t.Fatalf("child store: %v", err)
	}
	res, err := pub.answer()
	if err != nil {
		t.Fatal(err)
	}
	if res.FetchedChunks != len(ids) {
		t.Errorf("result %+v, want %d chunks fetched", *res, len(ids))
	}
	assertHolds(t, n.store, s, m)

	// Had app@1 been offered to the child of db while it arrived or
	// once stored, it would come before db@7.
	db, _ := buildNamed(t, src, publisherKey(), "db", map[string][]byte{"schema.sql": []byte("create table t (id int);\n")}, 7, "db")
	n.publish(pub2ID, src, db)
	if got := other.nextOffer(); !slices.Equal(got.Encode(), db.Encode()) {
		gm, _ := got.Manifest()
		t.Errorf("the child of db was offered %s@%d, want db@7", gm.Name, gm.Revision)
	}
}

func TestAccept(t *testing.T) {
	d, err := distributor.New(testConfig(), memStore(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id transport.Identity
		ok bool
	}{
		{pubID, true},
		{pub2ID, true},
		{subID, true},
		{sub2ID, true},
		{lowerID, true},
		{transport.Identity{Name: "stranger", Role: pki.RolePublisher}, false},
		{transport.Identity{Name: "stranger", Role: pki.RoleSubscriber}, false},
		{transport.Identity{Name: "stranger", Role: pki.RoleDistributor}, false},
		// Listed, but in another role.
		{transport.Identity{Name: subID.Name, Role: pki.RolePublisher}, false},
		{transport.Identity{Name: pubID.Name, Role: pki.RoleSubscriber}, false},
		{transport.Identity{Name: pubID.Name, Role: "admin"}, false},
	} {
		err := d.Accept(tc.id)
		switch {
		case tc.ok && err != nil:
			t.Errorf("Accept(%s): %v", tc.id, err)
		case !tc.ok && !errors.Is(err, transport.ErrUnauthorized):
			t.Errorf("Accept(%s): %v, want an error wrapping %v", tc.id, err, transport.ErrUnauthorized)
		case !tc.ok && tc.id.Role != "admin" && !strings.Contains(err.Error(), tc.id.Name):
			t.Errorf("Accept(%s): %q does not name the peer", tc.id, err)
		}
	}
}

func TestHelloNameMustMatchCertificate(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	for _, id := range []transport.Identity{pubID, subID} {
		sess, err := n.connect(id)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = transport.ClientHello(t.Context(), sess, &transport.Hello{Name: pub2ID.Name, Channels: []string{"web"}})
		if !errors.Is(err, transport.ErrUnauthorized) {
			t.Errorf("%s introducing itself as %s: %v, want an error wrapping %v", id.Name, pub2ID.Name, err, transport.ErrUnauthorized)
		}
	}
}

func TestChildRefusedAtHello(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	for _, tc := range []struct {
		channels []string
		want     error
		naming   string
	}{
		{[]string{"web", "db"}, transport.ErrUnauthorized, "db"}, // listed for web only
		{[]string{"mail"}, transport.ErrUnauthorized, "mail"},    // not carried
		{nil, transport.ErrProtocol, subID.Name},
	} {
		_, err := n.child(subID, tc.channels...)
		if !errors.Is(err, tc.want) {
			t.Errorf("hello for %v: %v, want an error wrapping %v", tc.channels, err, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.naming) || !strings.Contains(err.Error(), distID.Name) {
			t.Errorf("hello for %v: %q does not name %s and %s", tc.channels, err, tc.naming, distID.Name)
		}
	}
	if c := n.d.Status().Children; len(c) != 0 {
		t.Errorf("refused children listed: %+v", c)
	}
	// Refusals leave the child free to ask again for what it may have.
	n.mustChild(subID, "web")
}

func TestPublishRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		// held is published first, if set.
		held func(t *testing.T, src store.Store) *distribution.Signed
		// offer is refused with an error wrapping want and naming naming.
		offer  func(t *testing.T, src store.Store) *distribution.Signed
		as     transport.Identity
		want   error
		naming string
	}{{
		name: "untrusted key",
		offer: func(t *testing.T, src store.Store) *distribution.Signed {
			s, _ := build(t, src, strangerKey(), appFiles(1), 1, "web")
			return s
		},
		as: pubID, want: distribution.ErrUntrustedKey, naming: distribution.KeyID(strangerKey().Public().(ed25519.PublicKey)),
	}, {
		name: "bad signature",
		offer: func(t *testing.T, src store.Store) *distribution.Signed {
			s, _ := build(t, src, publisherKey(), appFiles(1), 1, "web")
			s.Signature[0] ^= 1
			return s
		},
		as: pubID, want: distribution.ErrBadSignature, naming: trustedKeyID(),
	}, {
		name: "channel of another publisher",
		offer: func(t *testing.T, src store.Store) *distribution.Signed {
			s, _ := build(t, src, publisherKey(), appFiles(1), 1, "db")
			return s
		},
		as: pubID, want: transport.ErrUnauthorized, naming: "db",
	}, {
		name: "one channel of two",
		offer: func(t *testing.T, src store.Store) *distribution.Signed {
			s, _ := build(t, src, publisherKey(), appFiles(1), 1, "web", "db")
			return s
		},
		as: pubID, want: transport.ErrUnauthorized, naming: "db",
	}, {
		name: "channel not carried",
		offer: func(t *testing.T, src store.Store) *distribution.Signed {
			s, _ := build(t, src, publisherKey(), appFiles(1), 1, "mail")
			return s
		},
		as: pubID, want: transport.ErrUnauthorized, naming: "mail",
	}, {
		name: "older revision",
		held: func(t *testing.T, src store.Store) *distribution.Signed {
			s, _ := build(t, src, publisherKey(), appFiles(2), 2, "web")
			return s
		},
		offer: func(t *testing.T, src store.Store) *distribution.Signed {
			s, _ := build(t, src, publisherKey(), appFiles(1), 1, "web")
			return s
		},
		as: pubID, want: transport.ErrRollback, naming: "app@1",
	}, {
		name: "another revision of the same number",
		held: func(t *testing.T, src store.Store) *distribution.Signed {
			s, _ := build(t, src, publisherKey(), appFiles(2), 2, "web")
			return s
		},
		offer: func(t *testing.T, src store.Store) *distribution.Signed {
			s, _ := build(t, src, publisherKey(), appFiles(3), 2, "web")
			return s
		},
		as: pubID, want: transport.ErrRollback, naming: "app@2",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			n := startDistributor(t, testConfig(), nil)
			src := memStore(t)
			var held *distribution.Signed
			if tc.held != nil {
				held = tc.held(t, src)
				n.publish(tc.as, src, held)
			}
			s := tc.offer(t, src)
			pub := n.publisher(tc.as, transport.StoreProvider(src))
			_, err := pub.offer(s)
			var wire *transport.Error
			if !errors.As(err, &wire) {
				t.Fatalf("offer answered with %v, want a *transport.Error", err)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("refusal %q (code %d), want one wrapping %v", err, wire.Code, tc.want)
			}
			if !strings.Contains(err.Error(), tc.naming) {
				t.Errorf("refusal %q does not name %s", err, tc.naming)
			}
			if got := pub.served.Load(); got != 0 {
				t.Errorf("%d chunks fetched for a refused revision", got)
			}
			// Nothing stored but what was held before.
			infos, err := n.store.ChannelRevisions("web")
			if err != nil {
				t.Fatal(err)
			}
			names, err := n.store.Distributions()
			if err != nil {
				t.Fatal(err)
			}
			if held == nil && len(names) != 0 || held != nil && (len(infos) != 1 || infos[0].Revision != 2) {
				t.Errorf("stored after the refusal: %v, %+v", names, infos)
			}
			if held != nil {
				hm, _ := held.Manifest()
				assertHolds(t, n.store, held, hm)
			}

			// The session is still good for a revision it may publish.
			good, gm := build(t, src, publisherKey(), appFiles(4), 4, "web")
			if _, err := pub.offer(good); err != nil {
				t.Fatalf("offer after a refusal: %v", err)
			}
			assertHolds(t, n.store, good, gm)
		})
	}
}

// trustedKeyID is the id of the trusted key, which a bad signature names.
func trustedKeyID() string { return distribution.KeyID(publisherKey().Public().(ed25519.PublicKey)) }

// corruptCopy returns a copy of an encoded chunk with its last byte
// flipped: whatever the codec, it no longer decodes to its id.
func corruptCopy(encoded []byte) []byte {
	bad := slices.Clone(encoded)
	bad[len(bad)-1] ^= 0xff
	return bad
}

// storeCorrupted puts m's chunks from src into dst, the first one
// corrupted, then adds the revision: a disk that rotted under a stored
// revision.
func storeCorrupted(t *testing.T, dst store.Store, src distribution.ChunkSource, s *distribution.Signed, m *distribution.Manifest) distribution.ChunkID {
	t.Helper()
	ids := m.ChunkIDs()
	for i, id := range ids {
		data, err := src.Chunk(id)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			data = corruptCopy(data)
		}
		if err := dst.PutChunk(id, data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dst.AddRevision(s, m); err != nil {
		t.Fatal(err)
	}
	return ids[0]
}

func TestCorruptChunkNotServed(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	src := memStore(t)
	s, m := build(t, src, publisherKey(), appFiles(1), 1, "web")
	bad := storeCorrupted(t, n.store, src, s, m)

	child := n.mustChild(subID, "web")
	child.nextOffer()
	mine := memStore(t)
	var arrivedCorrupt atomic.Int64
	err := transport.Fetch(t.Context(), child.sess, m.ChunkIDs(), mine, transport.FetchOptions{
		Corrupt: func(distribution.ChunkID, error) { arrivedCorrupt.Add(1) },
	})
	// Refused as corrupt by the distributor, not sent for the child to
	// find out.
	var wire *transport.Error
	if !errors.As(err, &wire) || !errors.Is(err, distribution.ErrChunkCorrupt) {
		t.Fatalf("fetch: %v, want the distributor's refusal wrapping %v", err, distribution.ErrChunkCorrupt)
	}
	if n := arrivedCorrupt.Load(); n != 0 {
		t.Errorf("the distributor sent the corrupt chunk %d times", n)
	}
	if !strings.Contains(err.Error(), bad.Short()) {
		t.Errorf("fetch error %q does not name chunk %s", err, bad.Short())
	}
	if ok, _ := mine.HasChunk(bad); ok {
		t.Error("the child stored the corrupt chunk")
	}
}

// fakeParent serves chunks from src to the distributor that dials it, and
// tells when it has had the distributor's first status: then the
// distributor has it as its upstream.
func fakeParent(t *testing.T, src distribution.ChunkSource) (transport.DialFunc, <-chan struct{}) {
	var wg sync.WaitGroup
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(waitLimit):
			t.Errorf("the fake parent did not stop within %v", waitLimit)
		}
	})
	greeted := make(chan struct{})
	var once sync.Once
	log := testLog(t)
	dial := func(ctx context.Context, addr string) (transport.Session, error) {
		if addr != "parent" {
			return nil, fmt.Errorf("no route to %s", addr)
		}
		mine, theirs := transport.NewPipe(distID, parentID)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer theirs.Close(nil)
			control, _, err := transport.ServerHello(context.Background(), theirs, &transport.Welcome{Name: parentID.Name}, func(*transport.Hello) error { return nil })
			if err != nil {
				log.Warn("fake parent: hello", "err", err)
				return
			}
			defer control.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = transport.ServeChunks(context.Background(), theirs, transport.StoreProvider(src), nil, log)
			}()
			for {
				msg, err := control.Receive()
				if err != nil {
					return
				}
				if _, ok := msg.(*transport.Status); ok {
					once.Do(func() { close(greeted) })
				}
			}
		}()
		return mine, nil
	}
	return dial, greeted
}

func TestCorruptChunkRepairedFromParent(t *testing.T) {
	src := memStore(t)
	s, m := build(t, src, publisherKey(), appFiles(1), 1, "web")
	dial, greeted := fakeParent(t, src)
	cfg := testConfig()
	cfg.Parents.Addrs = []string{"parent"}
	cfg.Parents.RetryMin, cfg.Parents.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	n := startDistributor(t, cfg, dial)
	bad := storeCorrupted(t, n.store, src, s, m)
	await(t, greeted, "the distributor's status to its parent")
	if p := n.d.Status().Parent; p != "parent" {
		t.Errorf("status parent %q, want %q", p, "parent")
	}

	child := n.mustChild(subID, "web")
	child.nextOffer()
	mine := memStore(t)
	if err := child.fetch(m, mine); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if _, err := mine.AddRevision(s, m); err != nil {
		t.Fatal(err)
	}
	data, err := n.store.Chunk(bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := distribution.DecodeChunk(bad, data); err != nil {
		t.Errorf("stored copy after the repair: %v", err)
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	src := memStore(t)
	s, _ := build(t, src, publisherKey(), appFiles(1), 1, "web")
	n.publish(pubID, src, s)
	child := n.mustChild(subID, "web")
	child.nextOffer()
	// A publisher stuck serving its first chunk, and a child waiting for
	// it: stopping must not wait for either.
	open := make(chan struct{})
	s2, _ := build(t, src, publisherKey(), appFiles(2), 2, "web")
	pub := n.publisher(pubID, gatedProvider(src, open))
	pub.send(s2)
	m2, _ := s2.Manifest()
	if got := child.nextOffer(); !slices.Equal(got.Encode(), s2.Encode()) {
		t.Fatal("the child was not offered the incoming revision")
	}
	mine := memStore(t)
	fetched := make(chan error, 1)
	go func() { fetched <- child.fetch(m2, mine) }()

	if err := n.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, sess := range []transport.Session{child.sess, pub.sess} {
		select {
		case <-sess.Context().Done():
		default:
			t.Errorf("session with %s still open after Run returned", sess.Peer().Name)
		}
	}
	if err := await(t, fetched, "the child's fetch"); err == nil {
		t.Error("the child's fetch succeeded though the distributor stopped before it had the chunks")
	}
	if _, err := n.store.Signed("app", 2); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("app@2 after an interrupted publish: %v, want %v", err, store.ErrNotFound)
	}
}

// TestChildFetchesOnlyOfferedChunks checks that a child cannot fetch the
// chunks of another channel's revision by naming their ids.
func TestChildFetchesOnlyOfferedChunks(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	src := memStore(t)
	web1, webM := build(t, src, publisherKey(), appFiles(1), 1, "web")
	n.publish(pubID, src, web1)
	db, dbM := buildNamed(t, src, publisherKey(), "db", map[string][]byte{"schema.sql": []byte("create table secrets (id int);\n")}, 7, "db")
	n.publish(pub2ID, src, db)

	web := n.mustChild(subID, "web")
	if got := web.nextOffer(); !slices.Equal(got.Encode(), web1.Encode()) {
		t.Fatal("sub-1 was not offered app@1")
	}
	if err := web.fetch(webM, memStore(t)); err != nil {
		t.Fatalf("fetch of the offered app@1: %v", err)
	}
	err := web.fetch(dbM, memStore(t))
	if !errors.Is(err, transport.ErrUnauthorized) {
		t.Fatalf("fetch of db@7's chunks by a child of web: %v, want ErrUnauthorized", err)
	}
}
