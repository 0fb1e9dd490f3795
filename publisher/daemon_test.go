package publisher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"ted/distribution"
	"ted/pki"
	"ted/schedule"
	"ted/store"
	"ted/transport"
)

// pushEvent is one push the fake distributor answered.
type pushEvent struct {
	revision      uint64
	alreadyStored bool
	// fetched are the chunks it fetched for the revision.
	fetched []distribution.ChunkID
}

// distributorServer is a fake distributor the daemon dials: every dial gets
// a session over transport.NewPipe, served by a goroutine that takes one
// push into a memory store.
type distributorServer struct {
	t     *testing.T
	store *store.Memory
	// pushes receives every push answered with a result.
	pushes chan pushEvent
	wg     sync.WaitGroup

	mu sync.Mutex
	// failures are consumed one per dial: "dial" fails the dial, "refuse"
	// answers the offer with an error.
	failures []string
	dials    int
}

func newDistributorServer(t *testing.T) *distributorServer {
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	return &distributorServer{t: t, store: st, pushes: make(chan pushEvent, 16)}
}

func (s *distributorServer) fail(kinds ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, kinds...)
}

func (s *distributorServer) dial(ctx context.Context, addr string) (transport.Session, error) {
	s.mu.Lock()
	s.dials++
	var failure string
	if len(s.failures) > 0 {
		failure, s.failures = s.failures[0], s.failures[1:]
	}
	s.mu.Unlock()
	if addr != "127.0.0.1:7400" {
		return nil, fmt.Errorf("dialled %s", addr)
	}
	if failure == "dial" {
		return nil, errors.New("connection refused")
	}
	pub, dist := transport.NewPipe(
		transport.Identity{Name: pubName, Role: pki.RolePublisher},
		transport.Identity{Name: distName, Role: pki.RoleDistributor})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer dist.Close(nil)
		if err := s.serve(ctx, dist, failure == "refuse"); err != nil {
			s.t.Errorf("fake distributor: %v", err)
		}
		// Hang up once the publisher has read the answer and closed.
		<-dist.Context().Done()
	}()
	return pub, nil
}

func (s *distributorServer) serve(ctx context.Context, sess transport.Session, refuse bool) error {
	control, hello, err := transport.ServerHello(ctx, sess, &transport.Welcome{Name: distName, Agent: "fake"},
		func(*transport.Hello) error { return nil })
	if err != nil {
		return err
	}
	defer control.Close()
	if hello.Name != pubName || hello.Agent != agent {
		return fmt.Errorf("hello from %q, agent %q", hello.Name, hello.Agent)
	}
	msg, err := control.Receive()
	if err != nil {
		return fmt.Errorf("waiting for the offer: %w", err)
	}
	offer, ok := msg.(*transport.Offer)
	if !ok {
		return fmt.Errorf("the publisher sent %T, want an offer", msg)
	}
	m, err := offer.Signed.Manifest()
	if err != nil {
		return err
	}
	if refuse {
		return control.Send(transport.ErrorOf(errors.New("disk on fire")))
	}
	if _, err := s.store.Signed(m.Name, m.Revision); err == nil {
		s.pushes <- pushEvent{revision: m.Revision, alreadyStored: true}
		return control.Send(&transport.Result{Name: m.Name, Revision: m.Revision, AlreadyStored: true})
	}
	ids, err := s.store.MissingChunks(m.ChunkIDs())
	if err != nil {
		return err
	}
	if err := transport.Fetch(ctx, sess, ids, s.store, transport.FetchOptions{Streams: 2, Batch: 2}); err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	if _, err := s.store.AddRevision(offer.Signed, m); err != nil {
		return err
	}
	s.pushes <- pushEvent{revision: m.Revision, fetched: ids}
	return control.Send(&transport.Result{Name: m.Name, Revision: m.Revision, FetchedChunks: len(ids)})
}

// nextPush waits for the next push.
func (s *distributorServer) nextPush(t *testing.T) pushEvent {
	t.Helper()
	select {
	case p := <-s.pushes:
		return p
	case <-time.After(prompt):
		t.Fatal("no push")
		return pushEvent{}
	}
}

// noPush fails if a push was answered.
func (s *distributorServer) noPush(t *testing.T) {
	t.Helper()
	select {
	case p := <-s.pushes:
		t.Fatalf("unexpected push of revision %d", p.revision)
	default:
	}
}

// daemonRig runs a Daemon building "app" from src in the nightly window
// 22:00–23:00 UTC, on a fake clock that starts at 21:00.
type daemonRig struct {
	src    string
	clock  *schedule.FakeClock
	pub    *store.Memory
	dist   *distributorServer
	daemon *Daemon
	// opening is the first window's opening.
	opening time.Time
}

func startDaemon(t *testing.T) *daemonRig {
	t.Helper()
	dir := t.TempDir()
	schedules := filepath.Join(dir, "schedules.yaml")
	if err := os.WriteFile(schedules, []byte("schedules:\n  nights:\n    windows:\n      - cron: \"0 22 * * *\"\n        duration: 1h\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := schedule.NewSource(schedules, []string{"nights"})
	if err != nil {
		t.Fatal(err)
	}
	r := &daemonRig{
		src:     filepath.Join(dir, "site"),
		clock:   schedule.NewFakeClock(time.Date(2026, 3, 2, 21, 0, 0, 0, time.UTC)),
		pub:     store.NewMemory(),
		dist:    newDistributorServer(t),
		opening: time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC),
	}
	t.Cleanup(func() { _ = r.pub.Close() })
	writeTree(t, r.src, map[string]string{"index.html": "hello", "css/site.css": "body{}", "js/app.js": "run()"})

	cfg := DefaultConfig()
	cfg.Name, cfg.Agent, cfg.Distributor = pubName, agent, "127.0.0.1:7400"
	cfg.Distributions = []Distribution{{Name: "app", From: r.src, Version: "1.4.0", Channels: []string{"web"}, Build: "nights"}}
	cfg.Schedules, cfg.Clock = src, r.clock
	cfg.RetryMin, cfg.RetryMax = time.Minute, 10*time.Minute
	r.daemon, err = New(cfg, r.pub, publisherKey(), r.dist.dial, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.daemon.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(prompt):
			t.Error("Run did not return")
		}
		r.dist.wg.Wait()
	})
	return r
}

// settle waits until the daemon waits on n timers: its work is done.
func (r *daemonRig) settle(n int) { r.clock.BlockUntil(n) }

func (r *daemonRig) status(t *testing.T) DistributionStatus {
	t.Helper()
	st := r.daemon.Status()
	if len(st.Distributions) != 1 {
		t.Fatalf("status: %+v", st)
	}
	return st.Distributions[0]
}

// waitFor polls the status until ok holds, failing the test after prompt.
func (r *daemonRig) waitFor(t *testing.T, ok func(DistributionStatus) bool) DistributionStatus {
	t.Helper()
	deadline := time.Now().Add(prompt)
	for {
		s := r.status(t)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never came: %+v", s)
		}
		time.Sleep(time.Millisecond)
	}
}

func (r *daemonRig) latest(t *testing.T) uint64 {
	t.Helper()
	info, err := r.pub.Latest("app")
	if errors.Is(err, store.ErrNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return info.Revision
}

func TestDaemonBuildsAndPushesInWindows(t *testing.T) {
	r := startDaemon(t)
	r.settle(1) // the timer to the opening

	if rev := r.latest(t); rev != 0 {
		t.Fatalf("revision %d built before the window opened", rev)
	}
	r.dist.noPush(t)
	s := r.status(t)
	if s.Open || s.NextWindow == nil || !s.NextWindow.Start.Equal(r.opening) || !s.LastBuild.IsZero() {
		t.Fatalf("status before the window: %+v", s)
	}

	// The window opens: revision 1 is built and pushed whole.
	r.clock.Set(r.opening)
	p := r.dist.nextPush(t)
	r.settle(1)
	m1 := r.manifest(t, 1)
	if p.revision != 1 || p.alreadyStored || len(p.fetched) != len(m1.ChunkIDs()) {
		t.Fatalf("first push: %+v, want revision 1 with its %d chunks", p, len(m1.ChunkIDs()))
	}
	s = r.status(t)
	if !s.Open || s.Revision != 1 || s.Unchanged || s.Pushed != 1 || s.PushError != "" || !s.LastBuild.Equal(r.opening) {
		t.Fatalf("status after the first window: %+v", s)
	}

	// The next night: nothing changed, so no revision and no push.
	r.clock.Advance(24 * time.Hour)
	r.settle(1)
	r.dist.noPush(t)
	if rev := r.latest(t); rev != 1 {
		t.Fatalf("an unchanged rebuild made revision %d", rev)
	}
	s = r.status(t)
	if s.Revision != 1 || !s.Unchanged || !s.LastBuild.Equal(r.opening.Add(24*time.Hour)) {
		t.Fatalf("status after an unchanged rebuild: %+v", s)
	}

	// A change: revision 2, and only its new chunk travels.
	writeTree(t, r.src, map[string]string{"index.html": "hello again"})
	r.clock.Advance(24 * time.Hour)
	p = r.dist.nextPush(t)
	r.settle(1)
	m2 := r.manifest(t, 2)
	var fresh []distribution.ChunkID
	for _, id := range m2.ChunkIDs() {
		if !slices.Contains(m1.ChunkIDs(), id) {
			fresh = append(fresh, id)
		}
	}
	if p.revision != 2 || len(fresh) != 1 || !slices.Equal(p.fetched, fresh) {
		t.Fatalf("second push: %+v, want revision 2 with only the new chunk %v", p, fresh)
	}
	if s = r.status(t); s.Revision != 2 || s.Unchanged || s.Pushed != 2 {
		t.Fatalf("status after the change: %+v", s)
	}
}

func (r *daemonRig) manifest(t *testing.T, rev uint64) *distribution.Manifest {
	t.Helper()
	s, err := r.pub.Signed("app", rev)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDaemonRetriesFailedPush(t *testing.T) {
	r := startDaemon(t)
	r.dist.fail("dial", "refuse")
	r.settle(1)

	r.clock.Set(r.opening)
	r.settle(2) // the next opening, and the retry after the failed dial
	r.dist.noPush(t)
	s := r.status(t)
	if s.Revision != 1 || s.Pushed != 0 || s.PushError == "" {
		t.Fatalf("status after a failed dial: %+v", s)
	}

	// Retried after RetryMin: the distributor refuses.
	r.clock.Advance(time.Minute)
	r.settle(2)
	r.dist.noPush(t)
	if s = r.status(t); s.Pushed != 0 || s.PushError == "" {
		t.Fatalf("status after a refused push: %+v", s)
	}

	// The backoff doubled: nothing at one minute, the push at two; the
	// unchanged rebuild makes no revision, and the latest is pushed.
	r.clock.Advance(time.Minute)
	r.dist.noPush(t)
	r.clock.Advance(time.Minute)
	p := r.dist.nextPush(t)
	if p.revision != 1 || p.alreadyStored {
		t.Fatalf("retried push: %+v", p)
	}
	s = r.waitFor(t, func(s DistributionStatus) bool { return s.Pushed == 1 && s.NextRetry.IsZero() })
	if s.PushError != "" || r.latest(t) != 1 {
		t.Fatalf("status after the retry: %+v", s)
	}
	r.dist.mu.Lock()
	dials := r.dist.dials
	r.dist.mu.Unlock()
	if dials != 3 {
		t.Errorf("%d dials, want 3", dials)
	}
}

func TestDaemonNoRetryAfterTheWindowCloses(t *testing.T) {
	r := startDaemon(t)
	r.dist.fail("dial", "dial", "dial", "dial", "dial", "dial", "dial", "dial")
	r.settle(1)
	r.clock.Set(r.opening)
	r.settle(2)
	if s := r.status(t); !s.NextRetry.Equal(r.opening.Add(time.Minute)) {
		t.Fatalf("status after a failed dial: %+v, want a retry in a minute", s)
	}
	// Past the window's end (23:00) the retry finds it closed: no dial,
	// and only the next opening is waited for.
	r.clock.Set(r.opening.Add(90 * time.Minute))
	r.waitFor(t, func(s DistributionStatus) bool { return s.NextRetry.IsZero() })
	r.settle(1)
	if n := r.clock.Pending(); n != 1 {
		t.Fatalf("%d timers after the window closed, want only the next opening", n)
	}
	r.dist.mu.Lock()
	dials := r.dist.dials
	r.dist.mu.Unlock()
	if dials != 1 {
		t.Errorf("%d dials, want 1: none after the window closed", dials)
	}
}

// TestDaemonStartPushesLatest: a revision built before the daemon started
// is pushed at the first window; the distributor that holds it says so.
func TestDaemonStartPushesLatest(t *testing.T) {
	r := startDaemon(t)
	r.settle(1)
	res, err := Build(t.Context(), r.pub, BuildOptions{From: r.src, Keep: 3, Manifest: distribution.BuildOptions{
		Name: "app", Version: "1.4.0", Channels: []string{"web"}}}, publisherKey())
	if err != nil {
		t.Fatal(err)
	}
	m, _ := res.Signed.Manifest()
	for _, id := range m.ChunkIDs() {
		data, _ := r.pub.Chunk(id)
		if err := r.dist.store.PutChunk(id, data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.dist.store.AddRevision(res.Signed, m); err != nil {
		t.Fatal(err)
	}
	r.clock.Set(r.opening)
	p := r.dist.nextPush(t)
	r.settle(1)
	if p.revision != 1 || !p.alreadyStored {
		t.Fatalf("push: %+v, want revision 1 already stored", p)
	}
	if s := r.status(t); s.Pushed != 1 || !s.Unchanged || s.PushResult == nil || !s.PushResult.AlreadyStored {
		t.Fatalf("status: %+v", s)
	}
}

func TestConfigValidate(t *testing.T) {
	src, err := schedule.NewSource("", nil)
	if err != nil {
		t.Fatal(err)
	}
	good := func() Config {
		c := DefaultConfig()
		c.Name, c.Distributor, c.Schedules = pubName, "127.0.0.1:7400", src
		c.Distributions = []Distribution{{Name: "app", From: "/srv/app", Version: "1.0.0", Channels: []string{"web"}, Build: "always"}}
		return c
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, breakIt := range map[string]func(*Config){
		"no name":        func(c *Config) { c.Name = "" },
		"bad address":    func(c *Config) { c.Distributor = "nowhere" },
		"no dists":       func(c *Config) { c.Distributions = nil },
		"twice":          func(c *Config) { c.Distributions = append(c.Distributions, c.Distributions[0]) },
		"no from":        func(c *Config) { c.Distributions[0].From = "" },
		"no build":       func(c *Config) { c.Distributions[0].Build = "" },
		"no channel":     func(c *Config) { c.Distributions[0].Channels = nil },
		"bad version":    func(c *Config) { c.Distributions[0].Version = "" },
		"loose version":  func(c *Config) { c.Distributions[0].Version = "1.0" },
		"no schedules":   func(c *Config) { c.Schedules = nil },
		"keep 0":         func(c *Config) { c.KeepRevisions = 0 },
		"retry reversed": func(c *Config) { c.RetryMax = c.RetryMin / 2 },
	} {
		c := good()
		breakIt(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
	}
}
