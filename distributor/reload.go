package distributor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"ted/distribution"
	"ted/pki"
	"ted/transport"
)

// membership is the part of a distributor's configuration that a reload
// changes: the channels (who may publish, who may receive, the send
// schedule), the clusters and the trusted publisher keys. It is never
// modified once in use; a reload makes a new one.
type membership struct {
	channels map[string]Channel
	// names are the channels' names, sorted.
	names    []string
	clusters map[string]Cluster
	// clusterOf is the cluster of each member certificate.
	clusterOf map[string]string
	trust     *distribution.Trust
	// children and publishers are each channel's, compiled.
	children, publishers map[string]*matcher
}

func newMembership(cfg *Config) *membership {
	mb := &membership{
		channels: cfg.Channels, names: sortedNames(cfg.Channels),
		clusters: cfg.Clusters, clusterOf: map[string]string{}, trust: cfg.Trust,
		children: map[string]*matcher{}, publishers: map[string]*matcher{},
	}
	for name, cl := range cfg.Clusters {
		for _, m := range cl.Members {
			mb.clusterOf[m] = name
		}
	}
	for name, ch := range cfg.Channels {
		mb.children[name] = newMatcher(ch.Children)
		mb.publishers[name] = newMatcher(ch.Publishers)
	}
	return mb
}

// listed reports whether the certificate id may receive channel: by its
// name, a group, a pattern, or through its cluster.
func (mb *membership) listed(channel string, id transport.Identity) bool {
	m, ok := mb.children[channel]
	if !ok {
		return false
	}
	if m.matches(id) {
		return true
	}
	cl, ok := mb.clusterOf[id.Name]
	return ok && m.named(cl)
}

// listing shows what each channel lists, for a refusal that names no
// channel: "apps [group:web], beta [app-*]", the first few channels only.
func (mb *membership) listing(per map[string]*matcher) string {
	const most = 4
	var parts []string
	for i, name := range mb.names {
		if i == most {
			parts = append(parts, fmt.Sprintf("and %d channels more", len(mb.names)-most))
			break
		}
		parts = append(parts, name+" "+per[name].String())
	}
	return strings.Join(parts, ", ")
}

// members is the membership in force.
func (d *Distributor) members() *membership { return d.live.Load() }

// revocations is the revocation list in force, nil if none.
func (d *Distributor) revocations() *pki.Revocations {
	if d.cfg.Revocations == nil {
		return nil
	}
	return d.cfg.Revocations.Current()
}

// track records a session that a peer dialled, with its hello once known.
func (d *Distributor) track(sess transport.Session, hello *transport.Hello) {
	d.mu.Lock()
	d.sessions[sess] = hello
	d.mu.Unlock()
}

func (d *Distributor) untrack(sess transport.Session) {
	d.mu.Lock()
	delete(d.sessions, sess)
	d.mu.Unlock()
}

// peerSessions returns the sessions peers dialled, with their hellos, and
// the parent's session, if any.
func (d *Distributor) peerSessions() (map[transport.Session]*transport.Hello, transport.Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.sessions), d.upstream
}

// Reload puts in force the channels, clusters and trusted keys of next,
// which Validate checks first: an invalid next changes nothing. The rest
// of next is ignored; it takes a restart. Every session that the new
// membership no longer allows is closed with the reason, told to the peer;
// a child newly allowed is admitted when it next dials. If the channels
// this node carries changed, the session with the parent is closed too,
// so that the next one asks for the new set. It returns what changed, in
// words, for the log.
func (d *Distributor) Reload(next Config) ([]string, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	next.Name, next.Parents, next.Schedules, next.Clock = d.cfg.Name, d.cfg.Parents, d.cfg.Schedules, d.cfg.Clock
	if err := next.Validate(); err != nil {
		return nil, err
	}
	old := d.members()
	mb := newMembership(&next)
	changes := membershipChanges(old, mb)
	if len(changes) == 0 {
		return nil, nil
	}
	d.live.Store(mb)
	sessions, upstream := d.peerSessions()
	var wg sync.WaitGroup
	for sess, hello := range sessions {
		err := d.stillAllowed(mb, sess.Peer(), hello)
		if err == nil {
			continue
		}
		reason := fmt.Errorf("%w (config of %s reloaded)", err, d.cfg.Name)
		d.log.Warn("session closed: no longer allowed by the reloaded config", "peer", sess.Peer().Name, "addr", sess.RemoteAddr(), "err", err)
		// Close waits for the connection to end: all at once, not one
		// after the other.
		wg.Go(func() { sess.Close(reason) })
	}
	if upstream != nil && !slices.Equal(old.names, mb.names) {
		d.log.Info("channels changed: connecting to the parent again with the new set", "channels", mb.names)
		wg.Go(func() { upstream.Close(nil) })
	}
	wg.Wait()
	// A send window or a channel's children may have changed: the senders
	// look again.
	d.kickAll()
	return changes, nil
}

// stillAllowed checks a live session against mb as its start was checked:
// a certificate not revoked; a publisher listed for some channel; a child
// listed for every channel it asked for, as its cluster's node if it is a
// member of one. A session whose hello is not known yet is checked at its
// hello.
func (d *Distributor) stillAllowed(mb *membership, peer transport.Identity, hello *transport.Hello) error {
	if err := transport.RevokedError(d.revocations(), peer); err != nil {
		return err
	}
	if peer.Role == pki.RolePublisher {
		for _, name := range mb.names {
			if mb.publishers[name].matches(peer) {
				return nil
			}
		}
		d.log.Warn("publisher listed by no channel", "peer", describe(peer), "publishers", mb.listing(mb.publishers))
		return fmt.Errorf("%w: publisher %s is not listed for any channel of %s",
			transport.ErrUnauthorized, describe(peer), d.cfg.Name)
	}
	if hello == nil {
		return nil
	}
	if err := d.checkMembershipOf(mb, peer, hello); err != nil {
		return err
	}
	if hello.Cluster != "" && hello.Epoch == 0 {
		return nil // a lease session: its cluster is still configured
	}
	return d.checkChannels(mb, peer, hello)
}

// membershipChanges says, in words, what differs between two memberships.
func membershipChanges(old, mb *membership) []string {
	var out []string
	for _, name := range mb.names {
		o, ok := old.channels[name]
		n := mb.channels[name]
		switch {
		case !ok:
			out = append(out, "channel "+name+" added")
		case !slices.Equal(o.Children, n.Children):
			out = append(out, fmt.Sprintf("channels.%s.children: %v", name, n.Children))
		}
		if ok && !slices.Equal(o.Publishers, n.Publishers) {
			out = append(out, fmt.Sprintf("channels.%s.publishers: %v", name, n.Publishers))
		}
		if ok && o.Send != n.Send {
			out = append(out, fmt.Sprintf("channels.%s.send: %s", name, n.Send))
		}
		if ok && !wavesEqual(o.Waves, n.Waves) {
			out = append(out, fmt.Sprintf("channels.%s.waves", name))
		}
	}
	for _, name := range old.names {
		if _, ok := mb.channels[name]; !ok {
			out = append(out, "channel "+name+" removed")
		}
	}
	if !maps.EqualFunc(old.clusters, mb.clusters, func(a, b Cluster) bool { return slices.Equal(a.Members, b.Members) }) {
		out = append(out, "clusters")
	}
	if !slices.Equal(old.trust.KeyIDs(), mb.trust.KeyIDs()) {
		out = append(out, "trust: keys "+strings.Join(mb.trust.KeyIDs(), ", "))
	}
	return out
}

// watchRevocations closes, whenever the revocation list in force changes,
// every session with a peer whose certificate it now revokes: children,
// publishers and the parent alike. The reason is told to the peer and
// logged on both sides.
func (d *Distributor) watchRevocations(ctx context.Context) {
	k := d.cfg.Revocations
	for {
		changed := k.Changed()
		d.closeRevoked(k.Current())
		// The children left are sent the list (offerPass).
		d.kickAll()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		r := k.Current()
		d.log.Info("revocation list in force", "number", r.Number.String(), "revoked", len(r.Serials()))
	}
}

// closeRevoked closes the sessions whose peers r revokes.
func (d *Distributor) closeRevoked(r *pki.Revocations) {
	if r == nil {
		return
	}
	sessions, upstream := d.peerSessions()
	if upstream != nil {
		sessions[upstream] = nil
	}
	var wg sync.WaitGroup
	for sess := range sessions {
		err := transport.RevokedError(r, sess.Peer())
		if err == nil {
			continue
		}
		d.metrics.revokedClosed.Inc()
		d.log.Warn("session closed: the peer's certificate is revoked", "peer", sess.Peer().Name, "addr", sess.RemoteAddr(), "err", err)
		wg.Go(func() { sess.Close(err) })
	}
	wg.Wait()
}

// parentRevocations takes a revocation list that the parent sent: checked
// against the CA and kept if newer, it is put in force (watchRevocations
// then closes the sessions it revokes) and passed on to the children.
func (d *Distributor) parentRevocations(peer string) func(*transport.Revocations) error {
	return func(m *transport.Revocations) error {
		k := d.cfg.Revocations
		if k == nil {
			return errors.New("this node keeps no revocation list")
		}
		r, changed, err := k.Receive(peer, m)
		if err != nil {
			return err
		}
		if changed {
			d.log.Info("newer revocation list from the parent", "peer", peer, "number", r.Number.String())
		}
		return nil
	}
}

// heldRevocations is the number of the revocation list this node holds,
// for its hello to a parent (Hello.CRLNumber): only on a session whose
// protocol has revocation lists.
func (d *Distributor) heldRevocations(sess transport.Session) string {
	if d.cfg.Revocations == nil || !transport.CarriesRevocations(sess) {
		return ""
	}
	return d.cfg.Revocations.HeldNumber()
}

// wavesEqual reports whether two channels' waves are the same.
func wavesEqual(a, b *Waves) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
