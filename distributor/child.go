package distributor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"ted/distribution"
	"ted/schedule"
	"ted/store"
	"ted/transport"
)

// child is a connected child session.
type child struct {
	// name is its key in children and seen (childKey): a cluster's name,
	// or the child's certificate name.
	name     string
	sess     transport.Session
	channels []string

	// offered are the revisions offered to it on this session: it may
	// fetch their chunks and no others.
	mu      sync.Mutex
	offered map[revKey]struct{}
	// open caches, per offered revision, a send window known open.
	open map[revKey]openWindow
}

// revKey names one revision.
type revKey struct {
	name string
	rev  uint64
}

// offer records that key was offered to the child.
func (c *child) offer(key revKey) {
	c.mu.Lock()
	c.offered[key] = struct{}{}
	c.mu.Unlock()
}

// revisions returns what was offered to the child.
func (c *child) revisions() []revKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]revKey, 0, len(c.offered))
	for k := range c.offered {
		out = append(out, k)
	}
	return out
}

// ChildStatus is what the distributor knows of a child.
type ChildStatus struct {
	// Name is the child's certificate name, or a cluster's name: a
	// cluster is one child whichever node is active.
	Name     string   `json:"name"`
	Role     string   `json:"role"`
	Addr     string   `json:"addr"`
	Channels []string `json:"channels"`
	Agent    string   `json:"agent"`
	// Connected is whether it has a session now (from the connected
	// children, when status is taken).
	Connected bool `json:"connected"`
	// Since is when it connected, or when it went away.
	Since time.Time `json:"since"`
	// ActiveNode is the active node of a cluster child, and Certificate
	// the certificate it connected with.
	ActiveNode  string `json:"active_node,omitempty"`
	Certificate string `json:"certificate,omitempty"`
	// Revisions is the child's last report.
	Revisions []transport.RevisionState `json:"revisions"`
}

// serveChild runs a child session: offers down, status up, chunks served.
func (d *Distributor) serveChild(ctx context.Context, sess transport.Session, control *transport.Conn, hello *transport.Hello, log *slog.Logger) {
	peer := sess.Peer()
	key := childKey(peer, hello)
	c := &child{name: key, sess: sess, channels: hello.Channels, offered: map[revKey]struct{}{}, open: map[revKey]openWindow{}}
	d.mu.Lock()
	old := d.children[key]
	d.children[key] = c
	st := d.seenLocked(key, peer)
	st.Role, st.Addr, st.Channels, st.Agent = string(peer.Role), sess.RemoteAddr(), hello.Channels, hello.Agent
	if hello.Cluster != "" {
		st.ActiveNode, st.Certificate = hello.Node, peer.Name
	}
	st.Since = time.Now()
	d.mu.Unlock()
	if old != nil {
		// A child that connects again, or a cluster's new active node,
		// replaces the session before. Closing waits for the connection
		// to end: not under d.mu.
		reason := fmt.Errorf("%w: %s connected again from %s", transport.ErrUnavailable, peer.Name, sess.RemoteAddr())
		if hello.Cluster != "" {
			reason = fmt.Errorf("%w: node %s (certificate %s) of cluster %s connected from %s", transport.ErrUnavailable, hello.Node, peer.Name, hello.Cluster, sess.RemoteAddr())
		}
		old.sess.Close(reason)
	}
	if hello.Cluster != "" {
		log = log.With("cluster", hello.Cluster, "cluster_node", hello.Node, "epoch", hello.Epoch)
	}
	log.Info("child connected", "channels", hello.Channels, "agent", hello.Agent)
	defer func() {
		d.mu.Lock()
		if d.children[key] == c {
			delete(d.children, key)
			st.Since = time.Now()
		}
		d.mu.Unlock()
		log.Info("child disconnected")
	}()

	g, ctx := errgroup.WithContext(ctx)
	stop := context.AfterFunc(ctx, func() { control.Close() })
	defer stop()
	g.Go(func() error {
		return transport.ServeChunks(ctx, sess, d.providerFor(c), func(n int) {
			d.metrics.chunksOut.Inc()
			d.metrics.bytesOut.Add(float64(n))
		}, log)
	})
	g.Go(func() error {
		defer sess.Close(nil)
		return d.offerLoop(ctx, c, control, log)
	})
	if hello.Cluster != "" {
		// Fencing: the session ends the moment its node's lease does.
		g.Go(func() error {
			err := d.fence(ctx, hello)
			if ctx.Err() == nil {
				log.Info("cluster node fenced off", "cluster_node", hello.Node, "err", err)
				sess.Close(err)
			}
			return err
		})
	}
	g.Go(func() error {
		defer sess.Close(nil)
		for {
			msg, err := control.Receive()
			if err != nil {
				return err
			}
			switch msg := msg.(type) {
			case *transport.Status:
				d.mu.Lock()
				st.Revisions = msg.Revisions
				st.ActiveNode = msg.ActiveNode
				d.mu.Unlock()
				for _, r := range msg.Revisions {
					if r.State == "failed" {
						log.Warn("child reports a failure", "dist", r.Name, "rev", r.Revision, "err", r.Error)
					}
				}
			case *transport.Error:
				log.Warn("child reports an error", "err", msg.Message)
			default:
				return fmt.Errorf("%w: child sent %T", transport.ErrProtocol, msg)
			}
		}
	})
	if err := g.Wait(); err != nil && ctx.Err() == nil && !transport.Ended(err) {
		log.Debug("child session ended", "err", err)
	}
}

// offerLoop offers the child every revision of its channels it has not been
// offered yet: the latest stored one of each distribution, and any being
// received (so it can pull through). A revision first offered while
// incoming is offered again once stored, so a child whose pull failed
// mid-way tries again.
func (d *Distributor) offerLoop(ctx context.Context, c *child, control *transport.Conn, log *slog.Logger) error {
	type offered struct {
		rev    uint64
		stored bool
	}
	sent := map[string]offered{}
	// told remembers the window opening last told to the child per
	// distribution, so it is told once, not at every wake.
	told := map[string]time.Time{}
	// A cluster's jitter is the cluster's, whichever node is active.
	name := c.name
	// offer sends s unless its send window is closed for this child; then
	// the child is told when it opens, and next keeps the earliest opening.
	var next time.Time
	offer := func(s *distribution.Signed, m *distribution.Manifest) (bool, error) {
		channels := d.childChannels(m.Channels, c)
		open, at := d.sendState(channels, name)
		if open == "" {
			if !at.IsZero() {
				next = earliest(next, at)
			}
			if prev, ok := told[m.Name]; !ok || !prev.Equal(at) {
				told[m.Name] = at
				if err := control.Send(transport.ErrorOf(fmt.Errorf("%s@%d: %w", m.Name, m.Revision, closedUntil(channels, at)))); err != nil {
					return false, err
				}
			}
			return false, nil
		}
		c.offer(revKey{m.Name, m.Revision})
		return true, control.Send(&transport.Offer{Signed: s})
	}
	for {
		next = time.Time{}
		d.mu.Lock()
		wake := d.wake
		var pending []*incoming
		for _, in := range d.incoming {
			if sharesChannel(in.m.Channels, c.channels) {
				pending = append(pending, in)
			}
		}
		d.mu.Unlock()
		changed := d.cfg.Schedules.Changed()
		latest, err := d.latestFor(c.channels)
		if err != nil {
			return err
		}
		for _, info := range latest {
			if o, ok := sent[info.Name]; ok && (o.rev > info.Revision || o.rev == info.Revision && o.stored) {
				continue
			}
			s, err := d.store.Signed(info.Name, info.Revision)
			if err != nil {
				log.Warn("offer", "dist", info.Name, "rev", info.Revision, "err", err)
				continue
			}
			m, err := s.Manifest()
			if err != nil {
				continue
			}
			ok, err := offer(s, m)
			if err != nil {
				return err
			}
			if ok {
				sent[info.Name] = offered{rev: info.Revision, stored: true}
			}
		}
		for _, in := range pending {
			if o, ok := sent[in.m.Name]; ok && o.rev >= in.m.Revision {
				continue
			}
			ok, err := offer(in.signed, in.m)
			if err != nil {
				return err
			}
			if ok {
				sent[in.m.Name] = offered{rev: in.m.Revision}
			}
		}
		var opens <-chan time.Time
		var timer schedule.Timer
		if !next.IsZero() {
			timer = d.cfg.Clock.NewTimer(next.Sub(d.cfg.Clock.Now()))
			opens = timer.C()
		}
		select {
		case <-ctx.Done():
		case <-c.sess.Context().Done():
		case <-wake:
		case <-changed:
		case <-opens:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil || c.sess.Context().Err() != nil {
			return nil
		}
	}
}

// latestFor returns the latest stored revision of every distribution
// published into any of channels.
func (d *Distributor) latestFor(channels []string) ([]store.RevisionInfo, error) {
	latest := map[string]store.RevisionInfo{}
	for _, ch := range channels {
		revs, err := d.store.ChannelRevisions(ch)
		if err != nil {
			return nil, err
		}
		for _, r := range revs {
			if r.Revision > latest[r.Name].Revision {
				latest[r.Name] = r
			}
		}
	}
	out := make([]store.RevisionInfo, 0, len(latest))
	for _, name := range sortedNames(latest) {
		out = append(out, latest[name])
	}
	return out, nil
}

func sharesChannel(a, b []string) bool {
	return slices.ContainsFunc(a, func(c string) bool { return slices.Contains(b, c) })
}

// runParent runs the session with the parent: this node is its child. It
// receives offers for the channels it carries, one at a time.
func (d *Distributor) runParent(ctx context.Context, sess transport.Session) error {
	channels := sortedNames(d.cfg.Channels)
	control, _, err := transport.ClientHello(ctx, sess, &transport.Hello{Name: d.cfg.Name, Agent: d.cfg.Agent, Channels: channels})
	if err != nil {
		return err
	}
	defer control.Close()
	d.mu.Lock()
	d.upstream = sess
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.upstream = nil
		d.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { control.Close() })
	defer stop()
	log := d.log.With("peer", sess.Peer().Name)

	// Offers are handled one at a time; the reader keeps reading
	// meanwhile, so a newer offer replaces one not yet started.
	queue := transport.NewOfferQueue()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer sess.Close(nil)
		defer queue.Wait()
		for s := queue.Next(ctx); s != nil; s = queue.Next(ctx) {
			res, err := d.receive(ctx, sess, s, "")
			switch {
			case err == nil || ctx.Err() != nil:
				queue.Succeeded(res.Name)
			case refusedForGood(err):
				log.Warn("offer from parent refused", "err", err)
			default:
				// A closed send window at the parent pauses the transfer
				// until it opens; short of disk, a chunk that stayed
				// corrupt, a stream that failed: backoff. Either way on
				// this session, with only the chunks still missing.
				wait, paused := queue.RetryLater(ctx, res.Name, s, err, d.cfg.Clock.Now(), d.cfg.RetryMin, d.cfg.RetryMax)
				if paused {
					log.Info("transfer from parent paused until its send window opens", "retry_in", wait)
					break
				}
				log.Warn("offer from parent not taken; will try again", "retry_in", wait, "err", err)
			}
			if err := control.Send(d.parentStatus()); err != nil {
				return err
			}
		}
		return nil
	})
	g.Go(func() error {
		defer sess.Close(nil)
		if err := control.Send(d.parentStatus()); err != nil {
			return err
		}
		return transport.ReadOffers(control, queue, log)
	})
	return g.Wait()
}

// parentStatus is this distributor's report to its parent: every stored
// revision as received, and those being received.
func (d *Distributor) parentStatus() *transport.Status {
	st := &transport.Status{Role: "distributor"}
	names, err := d.store.Distributions()
	if err != nil {
		return st
	}
	for _, name := range names {
		revs, err := d.store.Revisions(name)
		if err != nil {
			continue
		}
		for _, r := range revs {
			st.Revisions = append(st.Revisions, transport.RevisionState{Name: r.Name, Revision: r.Revision, Version: r.Version, State: "received"})
		}
	}
	d.mu.Lock()
	for _, in := range d.incoming {
		st.Revisions = append(st.Revisions, transport.RevisionState{Name: in.m.Name, Revision: in.m.Revision, Version: in.m.Version, State: "receiving"})
	}
	d.mu.Unlock()
	return st
}

// refusedForGood reports whether an offer failed for a reason that trying
// again cannot change: a bad signature, a channel not carried, a rollback.
func refusedForGood(err error) bool {
	return errors.Is(err, distribution.ErrUntrustedKey) || errors.Is(err, distribution.ErrBadSignature) ||
		errors.Is(err, transport.ErrUnauthorized) || errors.Is(err, transport.ErrRollback)
}

// providerFor serves a child only the chunks of revisions offered to it,
// only inside a send window of their channels, at the channel's rate: a
// chunk id is a hash of content, and without the first check a child of one
// channel could fetch another channel's content, or probe whether a
// distributor holds a file, by naming its hash.
func (d *Distributor) providerFor(c *child) transport.ChunkProvider {
	return transport.ChunkProviderFunc(func(ctx context.Context, id distribution.ChunkID) ([]byte, error) {
		var next time.Time
		var waiting []string
		for _, key := range c.revisions() {
			rc := d.revisionChunks(key)
			if rc == nil || !rc.has(id) {
				continue
			}
			channels := d.childChannels(rc.channels, c)
			open, at := d.openFor(c, key, channels)
			if open == "" {
				waiting, next = channels, earliest(next, at)
				continue
			}
			data, err := d.ServeChunk(ctx, id)
			if err != nil {
				return nil, err
			}
			if err := d.waitRate(ctx, open, len(data)); err != nil {
				return nil, err
			}
			return data, nil
		}
		if waiting != nil {
			return nil, closedUntil(waiting, next)
		}
		d.metrics.refused.WithLabelValues("chunk").Inc()
		return nil, fmt.Errorf("%w: chunk %s is in no revision offered to %s", transport.ErrUnauthorized, id.Short(), c.sess.Peer().Name)
	})
}

// childChannels returns the channels of a revision that this child
// receives.
func (d *Distributor) childChannels(channels []string, c *child) []string {
	var out []string
	for _, ch := range channels {
		if slices.Contains(c.channels, ch) {
			out = append(out, ch)
		}
	}
	return out
}

// revChunks is what a child's chunk requests are checked against: a
// revision's sorted chunk ids and its channels.
type revChunks struct {
	ids      []distribution.ChunkID
	channels []string
}

func (rc *revChunks) has(id distribution.ChunkID) bool {
	_, found := slices.BinarySearchFunc(rc.ids, id, compareIDs)
	return found
}

// revisionChunks returns the chunk list of revision key, built once on
// first use and shared by every child; nil if the revision is gone.
func (d *Distributor) revisionChunks(key revKey) *revChunks {
	d.mu.Lock()
	rc, ok := d.chunkLists[key]
	var m *distribution.Manifest
	if !ok {
		if in, ok := d.incoming[key.name]; ok && in.m.Revision == key.rev {
			m = in.m
		}
	}
	d.mu.Unlock()
	if ok {
		return rc
	}
	if m == nil {
		s, err := d.store.Signed(key.name, key.rev)
		if err != nil {
			return nil // pruned since: nothing of it to serve
		}
		if m, err = s.Manifest(); err != nil {
			return nil
		}
	}
	rc = &revChunks{ids: m.ChunkIDs(), channels: m.Channels}
	slices.SortFunc(rc.ids, compareIDs)
	d.mu.Lock()
	d.chunkLists[key] = rc
	d.mu.Unlock()
	return rc
}

// forgetRevisions drops the chunk lists of pruned revisions.
func (d *Distributor) forgetRevisions(name string, revs []uint64) {
	d.mu.Lock()
	for _, rev := range revs {
		delete(d.chunkLists, revKey{name, rev})
	}
	d.mu.Unlock()
}
