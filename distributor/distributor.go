package distributor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"ted/distribution"
	"ted/fleet"
	"ted/pki"
	"ted/store"
	"ted/transport"
)

// Listener gives the sessions that peers dial; *transport.Listener is one.
type Listener interface {
	Accept(ctx context.Context) (transport.Session, error)
}

// Distributor is the relay daemon. Create it with New and run it with Run.
type Distributor struct {
	cfg     Config
	store   store.Store
	log     *slog.Logger
	metrics *metrics

	// live is the part of the configuration that a reload changes (who
	// may publish and receive, the clusters, the trusted keys), swapped
	// whole: a session reads one consistent version of it (members).
	live atomic.Pointer[membership]
	// reloadMu makes reloads one at a time.
	reloadMu sync.Mutex

	mu sync.Mutex
	// sessions are the sessions that peers dialled, each with its hello
	// once known: what a reload or a new revocation list checks again.
	sessions map[transport.Session]*transport.Hello
	// children are the connected children, by name: a cluster's by the
	// cluster's, whatever certificate its active node uses (childKey).
	children map[string]*child
	// seen is the last status of every child that ever connected since
	// start, kept when it disconnects so status shows it; keyed as
	// children.
	seen map[string]*ChildStatus
	// incoming are the revisions being received, by distribution name.
	incoming map[string]*incoming
	// waiting holds, for every chunk a child waits for and an incoming
	// revision still lacks, a channel closed when it is stored or no
	// incoming revision lacks it any more. Waiters are made when a child
	// asks, not for every chunk of a revision, so memory follows what
	// children wait for, not the revision's size.
	// channel closed when it is stored or the transfer ends.
	waiting map[distribution.ChunkID]chan struct{}
	// wake is closed and replaced whenever there is something new to
	// offer.
	wake chan struct{}
	// parent is the address of the parent connected now.
	parent string
	// chunkLists caches the sorted chunk ids of revisions offered to
	// children, to check what a child may fetch (providerFor).
	chunkLists map[revKey]*revChunks
	// serving is what children share to be offered and served (serve.go).
	serving *serving
	// limits caps each channel's send rate.
	limits limiters
	// upstream is the session with the parent, for repairs, and
	// parentAgent the parent's ted version.
	upstream    transport.Session
	parentAgent string
	started     time.Time
	// leases fence the nodes of cluster children: one lease per cluster,
	// kept in DataDir so a restart does not take it from its holder.
	leases *transport.Leases
	// fleet is what this node knows of its subtree (fleet.go).
	fleet        *fleet.Table
	fleetMetrics fleetMetrics
	// waves are the rollouts in waves, by revision (waves.go), under mu.
	waves map[revKey]*waveState
	// wavesDecided: the rollouts were decided once since the start, and
	// may be passed down (rollouts).
	wavesDecided bool
	// wavesSave writes waves.json one at a time (saveWaves).
	wavesSave sync.Mutex
	// reportNow asks the reporter to send this node's status again.
	reportNow chan struct{}
}

// incoming is a revision being received.
type incoming struct {
	signed *distribution.Signed
	m      *distribution.Manifest
	from   string
	// lacking are the chunks it had to fetch, sorted for binary search.
	lacking []distribution.ChunkID
}

// lacks reports whether the revision had to fetch id.
func (in *incoming) lacks(id distribution.ChunkID) bool {
	_, found := slices.BinarySearchFunc(in.lacking, id, compareIDs)
	return found
}

func compareIDs(a, b distribution.ChunkID) int { return bytes.Compare(a[:], b[:]) }

// New creates a distributor over an open store. Dependencies come in here,
// so tests give it a memory store and pipe sessions. It loads the cluster
// lease table from DataDir, and refuses to start on a damaged one.
func New(cfg Config, st store.Store, log *slog.Logger) (*Distributor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("distributor config: %w", err)
	}
	leases := transport.NewLeases(cfg.LeaseTTL, nil)
	if cfg.DataDir != "" {
		var err error
		if leases, err = transport.OpenLeases(filepath.Join(cfg.DataDir, LeaseFile), cfg.LeaseTTL, nil); err != nil {
			return nil, err
		}
	}
	d := &Distributor{
		cfg: cfg, store: st, log: log.With("node", cfg.Name),
		children:   map[string]*child{},
		seen:       map[string]*ChildStatus{},
		incoming:   map[string]*incoming{},
		waiting:    map[distribution.ChunkID]chan struct{}{},
		chunkLists: map[revKey]*revChunks{},
		serving:    newServing(),
		limits:     limiters{per: map[string]channelLimiter{}},
		wake:       make(chan struct{}),
		started:    time.Now(),
		leases:     leases,
		sessions:   map[transport.Session]*transport.Hello{},
		reportNow:  make(chan struct{}, 1),
	}
	d.loadWaves()
	d.live.Store(newMembership(&cfg))
	for _, name := range sortedNames(cfg.Clusters) {
		if holder := leases.Holder(name); holder != "" {
			d.log.Info("cluster lease kept from before the start: its holder may renew it at once, others wait", "cluster", name, "cluster_node", nodeOf(holder), "for", cfg.LeaseTTL)
		}
	}
	d.metrics = newMetrics(func() float64 {
		d.mu.Lock()
		defer d.mu.Unlock()
		return float64(len(d.children))
	}, cfg.Self)
	d.fleet = d.newFleet()
	d.registerFleetMetrics(d.metrics.registry)
	return d, nil
}

// Accept decides, from its certificate alone, whether a peer may connect at
// all: a publisher listed for some channel, or a child listed for some
// channel, and not revoked. The hello then says what it wants, and is
// checked again.
func (d *Distributor) Accept(id transport.Identity) error {
	if err := transport.RevokedError(d.revocations(), id); err != nil {
		return d.refuse("revoked", err)
	}
	mb := d.members()
	switch id.Role {
	case pki.RolePublisher:
		for _, name := range mb.names {
			if mb.publishers[name].matches(id) {
				return nil
			}
		}
		// The peer is told only that it is not listed: what every channel
		// lists is this node's business, and is logged here instead.
		d.log.Warn("publisher listed by no channel", "peer", describe(id), "publishers", mb.listing(mb.publishers))
		return d.refuse("publisher", fmt.Errorf("%w: publisher %s is not listed for any channel of %s",
			transport.ErrUnauthorized, describe(id), d.cfg.Name))
	case pki.RoleDistributor, pki.RoleSubscriber:
		for _, name := range mb.names {
			if mb.listed(name, id) {
				return nil
			}
		}
		d.log.Warn("child listed by no channel", "peer", describe(id), "role", id.Role, "children", mb.listing(mb.children))
		err := d.refuse("child", fmt.Errorf("%w: %s %s is not a child of any channel of %s",
			transport.ErrUnauthorized, id.Role, describe(id), d.cfg.Name))
		d.refusedChild(id.Name, string(id.Role), err)
		return err
	}
	return d.refuse("role", fmt.Errorf("%w: role %q", transport.ErrUnauthorized, id.Role))
}

// describe names a certificate in a refusal: its name and groups.
func describe(id transport.Identity) string {
	if len(id.Groups) == 0 {
		return id.Name
	}
	return fmt.Sprintf("%s (groups: %s)", id.Name, strings.Join(id.Groups, ", "))
}

func (d *Distributor) refuse(reason string, err error) error {
	d.metrics.refused.WithLabelValues(reason).Inc()
	return err
}

// Run serves the sessions ln accepts and, for a lower tier, keeps a session
// with a parent through dial. It returns when ctx ends, after every session
// has ended.
func (d *Distributor) Run(ctx context.Context, ln Listener, dial transport.DialFunc) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		d.watchSchedules(ctx)
		return nil
	})
	g.Go(func() error {
		d.fleetLoop(ctx)
		return nil
	})
	g.Go(func() error {
		d.wavesLoop(ctx)
		return nil
	})
	if d.cfg.Revocations != nil {
		g.Go(func() error {
			d.watchRevocations(ctx)
			return nil
		})
	}
	if len(d.cfg.Parents.Addrs) > 0 {
		g.Go(func() error {
			pc := d.cfg.Parents
			pc.Logger = d.log
			transport.RunParents(ctx, pc, dial, d.runParent, func(addr string) {
				d.mu.Lock()
				d.parent = addr
				d.mu.Unlock()
			})
			return nil
		})
	}
	g.Go(func() error {
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			sess, err := ln.Accept(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("accept: %w", err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.handle(ctx, sess)
			}()
		}
	})
	return g.Wait()
}

// handle runs one session that a peer dialled, until it ends.
func (d *Distributor) handle(ctx context.Context, sess transport.Session) {
	// The reason travels in the close itself: closing is abrupt, and would
	// overtake a refusal sent on the control stream.
	var closeReason error
	defer func() {
		if closeReason == nil && ctx.Err() != nil {
			closeReason = transport.ErrStopping
		}
		sess.Close(closeReason)
	}()
	peer := sess.Peer()
	log := d.log.With("peer", peer.Name, "addr", sess.RemoteAddr())
	d.track(sess, nil)
	defer d.untrack(sess)
	// The listener checked the revocation list at the handshake, but the
	// session may have waited in its queue since: a list put in force
	// meanwhile was applied (closeRevoked) before it was tracked. Checked
	// after tracking, so that a list either is seen here or sees it.
	if err := transport.RevokedError(d.revocations(), peer); err != nil {
		d.metrics.revokedClosed.Inc()
		log.Warn("session closed: the peer's certificate is revoked", "err", err)
		closeReason = err
		return
	}
	var check func(*transport.Hello) error
	var cluster string // the cluster the hello names, for the log
	switch peer.Role {
	case pki.RolePublisher:
		check = func(*transport.Hello) error { return nil }
	default:
		check = func(h *transport.Hello) error {
			cluster = h.Cluster
			return d.checkChild(peer, h)
		}
	}
	control, hello, err := transport.ServerHello(ctx, sess, &transport.Welcome{Name: d.cfg.Name, Agent: d.cfg.Agent}, check)
	if err != nil {
		if ctx.Err() == nil {
			if cluster != "" {
				log = log.With("cluster", cluster)
			}
			log.Warn("peer refused", "err", err)
			closeReason = err
			if peer.Role != pki.RolePublisher && errors.Is(err, transport.ErrUnauthorized) && cluster == "" {
				d.refusedChild(peer.Name, string(peer.Role), err)
			}
		}
		return
	}
	defer control.Close()
	d.track(sess, hello)
	// A reload between the hello's check and track would not have seen
	// this session's hello: check again against what is in force now.
	if err := d.stillAllowed(d.members(), peer, hello); err != nil {
		log.Warn("peer refused", "err", err)
		closeReason = err
		return
	}
	if peer.Role == pki.RolePublisher {
		d.servePublisher(ctx, sess, control, log)
		return
	}
	if hello.Cluster != "" && hello.Epoch == 0 {
		d.serveLease(ctx, control, peer, hello, log.With("cluster", hello.Cluster, "cluster_node", hello.Node))
		return
	}
	d.serveChild(ctx, sess, control, hello, log)
}

// checkChild refuses a child that asks for a channel it is not listed for,
// a cluster node whose certificate is not a member of its cluster, and a
// cluster node's content session without the lease.
func (d *Distributor) checkChild(peer transport.Identity, h *transport.Hello) error {
	if err := d.checkMembership(peer, h); err != nil {
		return err
	}
	if h.Cluster != "" && h.Epoch != 0 {
		if err := d.checkLease(h); err != nil {
			return err
		}
	}
	if len(h.Channels) == 0 {
		return d.refuse("child", fmt.Errorf("%w: %s asked for no channel", transport.ErrProtocol, peer.Name))
	}
	return d.checkChannels(d.members(), peer, h)
}

// checkChannels refuses a child that asks for a channel not carried here,
// or one it is not a child of: by its name, a group, a pattern or its
// cluster.
func (d *Distributor) checkChannels(mb *membership, peer transport.Identity, h *transport.Hello) error {
	for _, name := range h.Channels {
		if _, ok := mb.channels[name]; !ok {
			return d.refuse("child", fmt.Errorf("%w: channel %s is not carried by %s (asked by %s)", transport.ErrUnauthorized, name, d.cfg.Name, peer.Name))
		}
		if !mb.listed(name, peer) {
			via := ""
			if cl, ok := mb.clusterOf[peer.Name]; ok {
				via = ", nor is its cluster " + cl
			}
			return d.refuse("child", fmt.Errorf("%w: %s is not a child of channel %s on %s%s: children are %s",
				transport.ErrUnauthorized, describe(peer), name, d.cfg.Name, via, mb.children[name]))
		}
	}
	return nil
}

// notify wakes every child sender: there is something new to offer.
func (d *Distributor) notify() {
	d.mu.Lock()
	close(d.wake)
	d.wake = make(chan struct{})
	d.mu.Unlock()
	d.kickAll()
}

// watchSchedules kicks every child's sender when the schedules change: a
// send window may have opened. It returns when ctx ends.
func (d *Distributor) watchSchedules(ctx context.Context) {
	changed := d.cfg.Schedules.Changed()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		changed = d.cfg.Schedules.Changed()
		d.kickAll()
	}
}

// receive takes an offered revision from a publisher or a parent (from):
// it verifies and authorises it, announces it to children at once so they
// can pull through, fetches the chunks this store lacks from the sender,
// stores the revision and prunes. publisher is the publishing peer's name,
// or "" when the sender is a parent.
func (d *Distributor) receive(ctx context.Context, from transport.Session, s *distribution.Signed, publisher string) (transport.Result, error) {
	m, err := d.members().trust.Verify(s)
	if err != nil {
		return transport.Result{}, d.refuse("signature", fmt.Errorf("revision from %s: %w", from.Peer().Name, err))
	}
	res := transport.Result{Name: m.Name, Revision: m.Revision}
	if err := d.authorise(m, publisher, from.Peer()); err != nil {
		return res, err
	}
	latest, err := d.store.Latest(m.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return res, err
	case latest.Revision > m.Revision:
		return res, d.refuse("rollback", fmt.Errorf("%w: %s@%d is older than %s@%d held by %s", transport.ErrRollback, m.Name, m.Revision, m.Name, latest.Revision, d.cfg.Name))
	case latest.Revision == m.Revision:
		held, err := d.store.Signed(m.Name, m.Revision)
		if err != nil {
			return res, err
		}
		if !slices.Equal(held.Encode(), s.Encode()) {
			return res, d.refuse("rollback", fmt.Errorf("%w: a different %s@%d is already held by %s", transport.ErrRollback, m.Name, m.Revision, d.cfg.Name))
		}
		res.AlreadyStored = true
		// A build of ted held already, offered again (a new session with
		// the parent, which may run a new version now): looked at again.
		d.agentStored(m)
		return res, nil
	}

	missing, err := d.begin(s, m, from.Peer().Name)
	if err != nil {
		return res, err
	}
	if err := store.CheckFree(d.cfg.DataDir, d.cfg.MinFreeDisk, missingBytes(m, len(missing))); err != nil {
		d.end(m)
		return res, d.refuse("disk", fmt.Errorf("%w: %s@%d on %s: %v", transport.ErrUnavailable, m.Name, m.Revision, d.cfg.Name, err))
	}
	d.notify()
	log := d.log.With("dist", m.Name, "rev", m.Revision, "peer", from.Peer().Name)
	log.Info("receiving revision", "chunks", len(missing))
	err = d.fetch(ctx, from, missing, &res)
	if err == nil {
		var info store.RevisionInfo
		info, err = d.store.AddRevision(s, m)
		if err == nil {
			d.metrics.revisionsIn.Inc()
			kind, detail := fleet.KindReceived, "from parent "+from.Peer().Name
			if publisher != "" {
				kind, detail = fleet.KindPublished, "by "+publisher
			}
			d.recordEvent(fleet.Event{Kind: kind, Node: d.cfg.Name, Dist: m.Name, Revision: m.Revision, Version: m.Version, Detail: detail})
			d.agentStored(m)
			log.Info("revision stored", "files", info.Files, "bytes", info.Bytes, "fetched_chunks", res.FetchedChunks, "fetched_bytes", res.FetchedBytes)
			d.prune(m.Name, log)
		}
	}
	d.end(m)
	d.notify()
	if err != nil {
		return res, fmt.Errorf("receive %s@%d from %s: %w", m.Name, m.Revision, from.Peer().Name, err)
	}
	return res, nil
}

// agentStored gives a build of ted for this node's platform to OnAgent,
// in a goroutine of its own: the distributor's own upgrade.
// A build whose rollout in waves holds this node back is not given yet
// (reofferAgent gives it when the rollout opens); its state says why
// (parentStatus).
func (d *Distributor) agentStored(m *distribution.Manifest) {
	if m.Kind != distribution.KindAgent || m.Platform != runtime.GOOS+"/"+runtime.GOARCH || d.cfg.OnAgent == nil {
		return
	}
	if held, why := d.waveHolds(revKey{m.Name, m.Revision}, m.Version, m.Channels); held {
		d.log.Info("agent revision", "dist", m.Name, "rev", m.Revision, "version", m.Version, "state", "blocked", "reason", why)
		d.Report()
		return
	}
	go d.cfg.OnAgent(m, d.ParentAgent())
}

// prune keeps KeepRevisions revisions of name. While another revision is
// being received it waits: the chunks that revision found present are not
// pinned, and a prune could delete them under it. The next stored revision
// prunes then.
func (d *Distributor) prune(name string, log *slog.Logger) {
	d.mu.Lock()
	busy := len(d.incoming) > 1
	d.mu.Unlock()
	if busy {
		log.Debug("prune deferred: another revision is being received")
		return
	}
	if pr, err := d.store.Prune(name, d.cfg.KeepRevisions); err != nil {
		log.Error("prune", "err", err)
	} else if len(pr.RemovedRevisions) > 0 {
		d.forgetRevisions(name, pr.RemovedRevisions)
		log.Info("pruned", "revisions", pr.RemovedRevisions, "chunks", pr.RemovedChunks, "bytes", pr.FreedBytes)
	}
}

// missingBytes estimates the plain size of missing chunks of m.
func missingBytes(m *distribution.Manifest, missing int) int64 {
	_, bytes, chunks := m.Totals()
	if chunks == 0 {
		return 0
	}
	return bytes / int64(chunks) * int64(missing)
}

// authorise checks the revision's channels: a publisher (its name, and id
// its certificate) must be listed for every one of them, and each must be
// carried here.
func (d *Distributor) authorise(m *distribution.Manifest, publisher string, id transport.Identity) error {
	mb := d.members()
	for _, name := range m.Channels {
		_, ok := mb.channels[name]
		if !ok {
			if publisher == "" {
				continue // a parent may carry more channels than we relay
			}
			return d.refuse("channel", fmt.Errorf("%w: channel %s of %s@%d is not carried by %s", transport.ErrUnauthorized, name, m.Name, m.Revision, d.cfg.Name))
		}
		if publisher != "" && !mb.publishers[name].matches(id) {
			return d.refuse("publisher", fmt.Errorf("%w: %s may not publish into channel %s on %s: publishers are %s", transport.ErrUnauthorized, describe(id), name, d.cfg.Name, mb.publishers[name]))
		}
	}
	if publisher == "" && !slices.ContainsFunc(m.Channels, func(c string) bool { _, ok := mb.channels[c]; return ok }) {
		return fmt.Errorf("%w: %s@%d is in no channel carried by %s", transport.ErrUnauthorized, m.Name, m.Revision, d.cfg.Name)
	}
	return nil
}

// begin registers an incoming revision and returns the chunks to fetch.
func (d *Distributor) begin(s *distribution.Signed, m *distribution.Manifest, from string) ([]distribution.ChunkID, error) {
	missing, err := d.store.MissingChunks(m.ChunkIDs())
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if in, ok := d.incoming[m.Name]; ok {
		return nil, fmt.Errorf("%w: %s@%d is being received from %s", transport.ErrUnavailable, m.Name, in.m.Revision, in.from)
	}
	lacking := slices.Clone(missing)
	slices.SortFunc(lacking, compareIDs)
	d.incoming[m.Name] = &incoming{signed: s, m: m, from: from, lacking: lacking}
	return missing, nil
}

// lackedLocked reports whether an incoming revision is still fetching id;
// d.mu is held.
func (d *Distributor) lackedLocked(id distribution.ChunkID) bool {
	for _, in := range d.incoming {
		if in.lacks(id) {
			return true
		}
	}
	return false
}

// arrived releases the children waiting for a chunk.
func (d *Distributor) arrived(id distribution.ChunkID) {
	d.mu.Lock()
	if w, ok := d.waiting[id]; ok {
		close(w)
		delete(d.waiting, id)
	}
	d.mu.Unlock()
}

// end unregisters an incoming revision; children still waiting for its
// chunks are released and find them stored, or missing if it failed. A
// chunk that another incoming revision also lacks stays awaited.
func (d *Distributor) end(m *distribution.Manifest) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.incoming, m.Name)
	for id, w := range d.waiting {
		if !d.lackedLocked(id) {
			close(w)
			delete(d.waiting, id)
		}
	}
}

// fetch gets the missing chunks from the sender, syncing the store every
// CheckpointBytes.
func (d *Distributor) fetch(ctx context.Context, from transport.Session, missing []distribution.ChunkID, res *transport.Result) error {
	var chunks, bytes atomic.Int64
	opts := d.cfg.Fetch
	opts.Stored = func(id distribution.ChunkID, n int) {
		chunks.Add(1)
		bytes.Add(int64(n))
		d.metrics.chunksIn.Inc()
		d.metrics.bytesIn.Add(float64(n))
		d.arrived(id)
	}
	opts.Corrupt = func(id distribution.ChunkID, err error) {
		d.metrics.corrupt.Inc()
		d.log.Warn("corrupt chunk received; asking again", "peer", from.Peer().Name, "chunk", id.Short(), "err", err)
	}
	opts.Checkpoint, opts.CheckpointBytes = d.store.Sync, d.cfg.CheckpointBytes
	err := transport.Fetch(ctx, from, missing, d.store, opts)
	res.FetchedChunks, res.FetchedBytes = int(chunks.Load()), bytes.Load()
	return err
}

// ServeChunk serves a chunk to a child from the store, waiting for one that
// an incoming revision still lacks (pull-through). A stored chunk whose
// bytes do not match its id is never served. A chunk is read and checked
// once for all the children that ask for it meanwhile, and kept while they
// go on asking (chunkCache).
func (d *Distributor) ServeChunk(ctx context.Context, id distribution.ChunkID) ([]byte, error) {
	if data, ok := d.serving.chunks.get(id); ok {
		return data, nil
	}
	return d.serving.chunks.load(ctx, id, func() ([]byte, error) { return d.readChunk(ctx, id) })
}

// readChunk reads a chunk from the store and checks it, repairing a
// corrupt copy from the parent, or waits for one still incoming.
func (d *Distributor) readChunk(ctx context.Context, id distribution.ChunkID) ([]byte, error) {
	repaired := false
	for {
		data, err := d.store.Chunk(id)
		if err == nil {
			if _, err := distribution.DecodeChunk(id, data); err != nil {
				d.metrics.corrupt.Inc()
				d.log.Error("corrupt chunk in the store; not serving it", "chunk", id.Short(), "err", err)
				if repaired {
					return nil, fmt.Errorf("%s: %w", d.cfg.Name, err)
				}
				repaired = true
				if rerr := d.repair(ctx, id); rerr != nil {
					d.log.Error("corrupt chunk not repaired", "chunk", id.Short(), "err", rerr)
					return nil, fmt.Errorf("%s: %w", d.cfg.Name, err)
				}
				d.log.Info("corrupt chunk repaired from the parent", "chunk", id.Short())
				continue
			}
			return data, nil
		}
		if !errors.Is(err, distribution.ErrChunkMissing) {
			return nil, err
		}
		d.mu.Lock()
		var w chan struct{}
		if d.lackedLocked(id) {
			if w = d.waiting[id]; w == nil {
				w = make(chan struct{})
				d.waiting[id] = w
			}
		}
		d.mu.Unlock()
		// Look again: it may have been stored before the waiter existed,
		// and arrived then had no one to release.
		if held, _ := d.store.HasChunk(id); held {
			continue
		}
		if w == nil {
			return nil, fmt.Errorf("%w: chunk %s is not held by %s", distribution.ErrChunkMissing, id.Short(), d.cfg.Name)
		}
		// A child's stream waiting for a chunk still on its way holds no
		// send slot meanwhile.
		transport.ReleaseSendSlot(ctx)
		select {
		case <-w:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// repair fetches a good copy of a chunk found corrupt in the store from the
// parent, if this is a lower tier connected to one.
func (d *Distributor) repair(ctx context.Context, id distribution.ChunkID) error {
	d.mu.Lock()
	up := d.upstream
	d.mu.Unlock()
	if up == nil {
		return errors.New("no parent connected to fetch a good copy from")
	}
	return transport.Fetch(ctx, up, []distribution.ChunkID{id}, repairSink{d.store}, transport.FetchOptions{Streams: 1})
}

// repairSink stores what it is given in place of the stored copy.
type repairSink struct{ st store.Store }

func (r repairSink) HasChunk(distribution.ChunkID) (bool, error) { return false, nil }
func (r repairSink) PutChunk(id distribution.ChunkID, encoded []byte) error {
	return r.st.RepairChunk(id, encoded)
}

// servePublisher takes the offers of a publisher session, one at a time,
// and answers each with a result or an error.
func (d *Distributor) servePublisher(ctx context.Context, sess transport.Session, control *transport.Conn, log *slog.Logger) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { control.Close() })
	defer stop()
	for {
		msg, err := control.Receive()
		if err != nil {
			if ctx.Err() == nil && !transport.Ended(err) {
				log.Warn("publisher session", "err", err)
			}
			return
		}
		offer, ok := msg.(*transport.Offer)
		if !ok {
			err := fmt.Errorf("%w: publisher sent %T", transport.ErrProtocol, msg)
			log.Warn("publisher session", "err", err)
			_ = control.Send(transport.ErrorOf(err))
			return
		}
		res, err := d.receive(ctx, sess, offer.Signed, sess.Peer().Name)
		if err != nil {
			log.Warn("publish refused", "err", err)
			if err := control.Send(transport.ErrorOf(err)); err != nil {
				return
			}
			continue
		}
		if err := control.Send(&res); err != nil {
			return
		}
	}
}

// sortedNames returns the keys of m, sorted.
func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
