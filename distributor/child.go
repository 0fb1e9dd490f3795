package distributor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"ted/distribution"
	"ted/pki"
	"ted/transport"
)

// child is a connected child session.
type child struct {
	// name is its key in children and seen (childKey): a cluster's name,
	// or the child's certificate name.
	name     string
	sess     transport.Session
	channels []string
	// role is its certificate's role: waves hold subscribers only.
	role string

	// offered are the revisions offered to it on this session: it may
	// fetch their chunks and no others.
	mu      sync.Mutex
	offered map[revKey]struct{}
	// open caches, per offered revision, a send window known open.
	open map[revKey]openWindow

	// The sender (send) runs only while there is something to send: an
	// idle session keeps no goroutine for it, and at 10,000 children
	// every goroutine a session keeps costs its stack 10,000 times. kick
	// starts it, or has a running one look again (kicked); ended, once
	// the session is over, starts no more. All under mu.
	sending bool
	ended   bool
	kicked  chan struct{} // buffered 1
	senders sync.WaitGroup
	sendErr error // why a sender ended the session

	// The sender's own state, touched by one sender at a time.
	control *transport.Conn
	log     *slog.Logger
	// sent is what was offered per distribution, told the window
	// opening last told per distribution (told once, not at every look).
	sent map[string]offered
	told map[string]time.Time
	// crl is whether the session carries revocation lists, and crlHeld
	// the number of the list the child holds ("" for none).
	crl     bool
	crlHeld string
	// waves is whether the child is a distributor whose session carries
	// rollouts in waves, and wavesSent what it was last sent.
	waves     bool
	wavesSent []transport.Rollout
}

// offered is what a child was offered of one distribution: the revision,
// and whether it was stored by then (else it is offered again once stored,
// so a child whose pull-through failed mid-way tries again).
type offered struct {
	rev    uint64
	stored bool
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
	// Serial, Groups and CertificateExpires describe the certificate of
	// its session (the last one, once it went away).
	Serial             string    `json:"serial,omitempty"`
	Groups             []string  `json:"groups,omitempty"`
	CertificateExpires time.Time `json:"certificate_expires,omitzero"`
	// Revisions is the child's last report, and Problem why it says it
	// cannot do its job ("" if it can, or if it does not say).
	Revisions []transport.RevisionState `json:"revisions"`
	Problem   string                    `json:"problem,omitempty"`
}

// serveChild runs a child session: offers down, status up, chunks served.
func (d *Distributor) serveChild(ctx context.Context, sess transport.Session, control *transport.Conn, hello *transport.Hello, log *slog.Logger) {
	peer := sess.Peer()
	key := childKey(peer, hello)
	if hello.Cluster != "" {
		log = log.With("cluster", hello.Cluster, "cluster_node", hello.Node, "epoch", hello.Epoch)
	}
	// Complete before it is in children: a notify kicks every child there.
	c := &child{name: key, sess: sess, channels: hello.Channels, role: string(peer.Role), offered: map[revKey]struct{}{}, open: map[revKey]openWindow{},
		kicked: make(chan struct{}, 1), control: control, log: log, sent: map[string]offered{}, told: map[string]time.Time{},
		// A child of the first protocol version would fail on a message
		// type it does not know.
		crl: d.cfg.Revocations != nil && transport.CarriesRevocations(sess), crlHeld: hello.CRLNumber,
		waves: peer.Role == pki.RoleDistributor && transport.CarriesWaves(sess)}
	d.mu.Lock()
	old := d.children[key]
	d.children[key] = c
	st := d.seenLocked(key, peer)
	st.Role, st.Addr, st.Channels, st.Agent = string(peer.Role), sess.RemoteAddr(), hello.Channels, hello.Agent
	st.Serial, st.Groups, st.CertificateExpires = peer.Serial, peer.Groups, peer.NotAfter
	if hello.Cluster != "" {
		st.ActiveNode, st.Certificate = hello.Node, peer.Name
	}
	st.Since = time.Now()
	st.Problem = ""
	// The table is told under d.mu, in the order the sessions change:
	// the end of the session this one replaces must not be told last.
	d.fleet.Child(d.childNode(st, true))
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
	log.Info("child connected", "channels", hello.Channels, "agent", hello.Agent)
	defer func() {
		d.mu.Lock()
		if d.children[key] == c {
			delete(d.children, key)
			st.Since = time.Now()
			d.fleet.Child(d.childNode(st, false))
		}
		d.mu.Unlock()
		log.Info("child disconnected")
	}()

	// The control stream is read by this goroutine, not one of its own,
	// and offers and revocation lists are sent by a sender that runs only
	// while there is something to send (kick): at 10,000 children every
	// goroutine a session keeps costs its stack (a few KiB) 10,000 times.
	// Whichever ends first, the reading here, the sender or one of the
	// group, ends the rest: the reading and the sender close the session,
	// cancel ends what waits on ctx, and the group's end closes control.
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	stop := context.AfterFunc(ctx, func() { control.Close() })
	defer stop()
	g.Go(func() error {
		return transport.ServeChunks(ctx, sess, d.providerFor(c), func(n int) {
			d.metrics.chunksOut.Inc()
			d.metrics.bytesOut.Add(float64(n))
		}, log)
	})
	d.kick(c)
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
	err := d.readChild(control, c, st, log)
	sess.Close(nil)
	cancel()
	serr := c.end()
	if serr != nil {
		// The sender's error came first: it closed the session.
		err = serr
	}
	if gerr := g.Wait(); gerr != nil && serr == nil {
		// The group's error came first: it closed control.
		err = gerr
	}
	if err != nil && parent.Err() == nil && !transport.Ended(err) {
		log.Debug("child session ended", "err", err)
	}
}

// readChild reads a child's control stream, its status reports, subtree
// reports and errors, into st and the table of the subtree until the
// stream fails or ends.
func (d *Distributor) readChild(control *transport.Conn, c *child, st *ChildStatus, log *slog.Logger) error {
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
			st.Problem = msg.Problem
			if d.children[c.name] == c {
				// A session replaced by a newer one no longer speaks
				// for the child.
				d.fleet.Child(d.childNode(st, true))
			}
			d.mu.Unlock()
			for _, r := range msg.Revisions {
				if r.State == "failed" {
					log.Warn("child reports a failure", "dist", r.Name, "rev", r.Revision, "err", r.Error)
				}
			}
		case *transport.Subtree:
			if st.Role != string(pki.RoleDistributor) {
				return fmt.Errorf("%w: %s %s sent a subtree report", transport.ErrProtocol, st.Role, c.name)
			}
			d.mu.Lock()
			current := d.children[c.name] == c
			d.mu.Unlock()
			if !current {
				continue // replaced: the new session reports whole
			}
			if err := d.fleet.Apply(c.name, msg); err != nil {
				log.Warn("subtree report does not match its summary: starting the session again for a whole report", "err", err)
				return err
			}
		case *transport.Error:
			log.Warn("child reports an error", "err", msg.Message)
		default:
			return fmt.Errorf("%w: child sent %T", transport.ErrProtocol, msg)
		}
	}
}

// kick has c's sender look at what there is to send: it starts one
// unless one runs, and a running one looks again.
func (d *Distributor) kick(c *child) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	select {
	case c.kicked <- struct{}{}:
	default:
	}
	if c.sending {
		return
	}
	c.sending = true
	c.senders.Go(func() { d.send(c) })
}

// kickAll kicks the sender of every connected child: there may be
// something new to send them.
func (d *Distributor) kickAll() {
	d.mu.Lock()
	children := make([]*child, 0, len(d.children))
	for _, c := range d.children {
		children = append(children, c)
	}
	d.mu.Unlock()
	for _, c := range children {
		d.kick(c)
	}
}

// end starts no more senders for c, waits for a running one and returns
// why a sender ended the session, if one did.
func (c *child) end() error {
	c.mu.Lock()
	c.ended = true
	c.mu.Unlock()
	c.senders.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendErr
}

// send is c's sender: it sends what there is to send (offerPass) until
// nothing is left, then ends. While a send window it waits for is closed,
// it waits for the window to open instead, or for the next kick. An error
// sending ends the session.
func (d *Distributor) send(c *child) {
	done := c.sess.Context().Done()
	for {
		select {
		case <-c.kicked: // this pass answers it
		default:
		}
		next, err := d.offerPass(c)
		if err != nil {
			// No other sender: the session is over.
			c.mu.Lock()
			c.sending, c.ended, c.sendErr = false, true, err
			c.mu.Unlock()
			c.sess.Close(nil)
			return
		}
		if next.IsZero() {
			c.mu.Lock()
			if len(c.kicked) == 0 {
				c.sending = false
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			continue
		}
		timer := d.cfg.Clock.NewTimer(next.Sub(d.cfg.Clock.Now()))
		select {
		case <-done:
		case <-c.kicked:
		case <-timer.C():
		}
		timer.Stop()
		if c.sess.Context().Err() != nil {
			c.mu.Lock()
			c.sending = false
			c.mu.Unlock()
			return
		}
	}
}

// offerPass sends the child the revocation list in force if it does not
// hold it, then offers it every revision of its channels it has not been
// offered yet: the latest stored one of each distribution, and any being
// received (so it can pull through). A revision first offered while
// incoming is offered again once stored, so a child whose pull failed
// mid-way tries again. next is the earliest opening of a send window that
// kept an offer back, zero if none did.
func (d *Distributor) offerPass(c *child) (next time.Time, err error) {
	if c.crl {
		if m, number := d.cfg.Revocations.MessageFor(c.crlHeld); m != nil {
			if err := c.control.Send(m); err != nil {
				return time.Time{}, err
			}
			c.crlHeld = number
		}
	}
	// A cluster's jitter is the cluster's, whichever node is active.
	name := c.name
	// offer sends s unless its send window is closed for this child; then
	// the child is told when it opens, and next keeps the earliest opening.
	offer := func(or *offerRev) (bool, error) {
		channels := d.childChannels(or.channels, c)
		open, at := d.sendState(channels, name)
		if open == "" {
			if !at.IsZero() {
				next = earliest(next, at)
			}
			if prev, ok := c.told[or.key.name]; !ok || !prev.Equal(at) {
				c.told[or.key.name] = at
				if err := c.control.Send(transport.ErrorOf(fmt.Errorf("%s@%d: %w", or.key.name, or.key.rev, closedUntil(channels, at)))); err != nil {
					return false, err
				}
			}
			return false, nil
		}
		c.offer(or.key)
		return true, c.control.Send(or.offer)
	}
	d.mu.Lock()
	wake := d.wake
	var pending []*incoming
	for _, in := range d.incoming {
		if sharesChannel(in.m.Channels, c.channels) {
			pending = append(pending, in)
		}
	}
	d.mu.Unlock()
	// What to offer, and the offers themselves, are made once for all the
	// children asking for the same channels (serve.go): at 10,000
	// children, reading the store and compressing an offer per child per
	// revision is most of a publish's cost.
	latest, err := d.latestOffers(c.channels, wake)
	if err != nil {
		return time.Time{}, err
	}
	// A child distributor is told the rollouts in waves (this
	// distributor's and its parent's) before the revisions they rule, so
	// that it holds them back from its own subscribers from the start.
	// Before the first decision since this distributor started, it is
	// offered none of those revisions.
	wavesReady := true
	var passed map[revKey]bool
	if c.waves {
		for _, or := range latest {
			d.ensureRollout(or.key, or.channels)
		}
		for _, in := range pending {
			d.ensureRollout(revKey{in.m.Name, in.m.Revision}, in.m.Channels)
		}
		var m *transport.Waves
		if m, passed, wavesReady = d.rollouts(c.channels); wavesReady && !slices.EqualFunc(m.Rollouts, c.wavesSent, rolloutEqual) {
			if err := c.control.Send(m); err != nil {
				return time.Time{}, err
			}
			c.wavesSent = m.Rollouts
		}
	}
	// ruledYet: a revision ruled by a rollout this child distributor has
	// not been told (before the first decision, or beyond what one
	// message carries) waits.
	ruledYet := func(key revKey, channels []string) bool {
		if !c.waves || wavesReady && passed[key] {
			return false
		}
		_, ruled := d.rolloutOf(key, channels)
		return ruled
	}
	for _, or := range latest {
		if ruledYet(or.key, or.channels) {
			continue // offered once the rollouts are passed down
		}
		if d.held(or.key, or.channels, c) {
			// Its wave is not open for this child: it is offered the
			// newest revision before it that is not held back (a server
			// new to the tree gets something meanwhile), and the latest
			// once its wave opens.
			older := d.beforeHeld(or, c)
			if older == nil {
				continue
			}
			or = older
		}
		if o, ok := c.sent[or.key.name]; ok && (o.rev > or.key.rev || o.rev == or.key.rev && o.stored) {
			continue
		}
		ok, err := offer(or)
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			c.sent[or.key.name] = offered{rev: or.key.rev, stored: true}
		}
	}
	for _, in := range pending {
		if o, ok := c.sent[in.m.Name]; ok && o.rev >= in.m.Revision {
			continue
		}
		if ruledYet(revKey{in.m.Name, in.m.Revision}, in.m.Channels) || d.held(revKey{in.m.Name, in.m.Revision}, in.m.Channels, c) {
			continue // its wave is not open: offered once it is
		}
		or, err := d.offerRevision(revKey{in.m.Name, in.m.Revision}, in.signed, in.m)
		if err != nil {
			c.log.Warn("offer", "dist", in.m.Name, "rev", in.m.Revision, "err", err)
			continue
		}
		ok, err := offer(or)
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			c.sent[in.m.Name] = offered{rev: in.m.Revision}
		}
	}
	return next, nil
}

func sharesChannel(a, b []string) bool {
	return slices.ContainsFunc(a, func(c string) bool { return slices.Contains(b, c) })
}

// runParent runs the session with the parent: this node is its child. It
// receives offers for the channels it carries, one at a time.
func (d *Distributor) runParent(ctx context.Context, sess transport.Session) error {
	channels := d.members().names
	control, welcome, err := transport.ClientHello(ctx, sess, &transport.Hello{Name: d.cfg.Name, Agent: d.cfg.Agent, Channels: channels, CRLNumber: d.heldRevocations(sess)})
	if err != nil {
		return err
	}
	d.cfg.Parents.Watch.Welcomed()
	defer control.Close()
	d.mu.Lock()
	d.upstream, d.parentAgent = sess, welcome.Agent
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.upstream, d.parentAgent = nil, ""
		d.mu.Unlock()
	}()
	// A revocation list put in force since the handshake checked the
	// parent's certificate did not see this session (closeRevoked): check
	// it now that it is registered.
	if err := transport.RevokedError(d.revocations(), sess.Peer()); err != nil {
		d.metrics.revokedClosed.Inc()
		d.log.Warn("session closed: the peer's certificate is revoked", "peer", sess.Peer().Name, "addr", sess.RemoteAddr(), "err", err)
		sess.Close(err)
		return err
	}
	// A reload that changed the channels while the hello was under way
	// did not see this session to close it (Reload): start again.
	if now := d.members().names; !slices.Equal(now, channels) {
		d.log.Info("channels changed during the hello: connecting to the parent again with the new set", "channels", now)
		return nil
	}
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
			if err := control.Send(d.statusFor(sess)); err != nil {
				return err
			}
		}
		return nil
	})
	g.Go(func() error {
		defer sess.Close(nil)
		if err := control.Send(d.statusFor(sess)); err != nil {
			return err
		}
		return transport.ReadParent(control, queue, log, d.parentRevocations(sess.Peer().Name), d.parentWaves)
	})
	if transport.CarriesSubtree(sess) {
		g.Go(func() error {
			defer sess.Close(nil)
			return d.reportSubtree(ctx, sess, control)
		})
	}
	return g.Wait()
}

// statusFor is parentStatus for the session with the parent: with this
// node's problem, if any, where the protocol carries it.
func (d *Distributor) statusFor(sess transport.Session) *transport.Status {
	st := d.parentStatus()
	if transport.CarriesSubtree(sess) {
		st.Problem = d.problem()
	}
	return st
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
			rs := transport.RevisionState{Name: r.Name, Revision: r.Revision, Version: r.Version, State: "received"}
			if r.Kind == distribution.KindAgent && d.cfg.AgentState != nil && r.Name == distribution.AgentName(runtime.GOOS+"/"+runtime.GOARCH) {
				// This node's own build: whether it runs, failed or is
				// held, as its upgrader says.
				held, why := d.waveHolds(revKey{r.Name, r.Revision}, r.Version, r.Channels)
				if held {
					rs.State = "blocked"
				} else {
					rs.State, why = d.cfg.AgentState(r.Name, r.Revision, r.Version)
				}
				if rs.State == "failed" {
					rs.Error = why
				} else {
					rs.Reason = why
				}
			}
			st.Revisions = append(st.Revisions, rs)
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
// distributor holds a file, by naming its hash. Its sends share the
// distributor's send slots (serving), which the transfers from a publisher
// or parent do not take.
func (d *Distributor) providerFor(c *child) transport.ChunkProvider {
	return gatedProvider{slots: d.serving.sendSlots, ChunkProviderFunc: func(ctx context.Context, id distribution.ChunkID) ([]byte, error) {
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
	}}
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
// revision's sorted chunk ids and its channels. ready is closed once they
// are filled in; gone, if the revision turned out to be gone.
type revChunks struct {
	ready    chan struct{}
	gone     bool
	ids      []distribution.ChunkID
	channels []string
}

func (rc *revChunks) has(id distribution.ChunkID) bool {
	_, found := slices.BinarySearchFunc(rc.ids, id, compareIDs)
	return found
}

// revisionChunks returns the chunk list of revision key, built once on
// first use and shared by every child; nil if the revision is gone. The
// children that ask while it is being built wait for it: all of them ask
// for their first chunk the moment a revision is offered, and a manifest
// decoded and sorted per child would cost as much as the offers saved.
func (d *Distributor) revisionChunks(key revKey) *revChunks {
	d.mu.Lock()
	rc, ok := d.chunkLists[key]
	var m *distribution.Manifest
	if !ok {
		if in, ok := d.incoming[key.name]; ok && in.m.Revision == key.rev {
			m = in.m
		}
		rc = &revChunks{ready: make(chan struct{})}
		d.chunkLists[key] = rc
	}
	d.mu.Unlock()
	if ok {
		<-rc.ready
		if rc.gone {
			return nil
		}
		return rc
	}
	defer close(rc.ready)
	if m == nil {
		s, err := d.store.Signed(key.name, key.rev)
		if err == nil {
			m, err = s.Manifest()
		}
		if err != nil {
			// Pruned since: nothing of it to serve. Not remembered, so
			// a revision stored later under the key is found.
			rc.gone = true
			d.mu.Lock()
			if d.chunkLists[key] == rc {
				delete(d.chunkLists, key)
			}
			d.mu.Unlock()
			return nil
		}
	}
	rc.ids, rc.channels = m.ChunkIDs(), m.Channels
	slices.SortFunc(rc.ids, compareIDs)
	return rc
}

// forgetRevisions drops the chunk lists and offers of pruned revisions.
func (d *Distributor) forgetRevisions(name string, revs []uint64) {
	d.mu.Lock()
	for _, rev := range revs {
		delete(d.chunkLists, revKey{name, rev})
	}
	d.mu.Unlock()
	d.forgetOffers(name, revs)
}
