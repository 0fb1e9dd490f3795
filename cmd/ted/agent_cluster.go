package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ted/agent"
	"ted/distribution"
	"ted/store"
	"ted/subscriber"
	"ted/subscriber/cluster"
	"ted/transport"
)

// A cluster subscriber's nodes upgrade themselves too, each its own
// binary (its data_dir's agent directory, its own launcher), but only the
// active node has the cluster's store, where builds of ted arrive. So the
// active node copies each build into the shared directory as a pack
// (agent.WritePack, packDir) and every node takes it from there; the
// standbys go first, and the active node last: it hands its role over to
// a standby that runs the new version committed (gossiped,
// cluster.Meta.Agent), or upgrades while active after standbyWait. In the
// usual case the role moves once, to a node that already runs the new
// version, instead of once per node (docs/upgrade.md).

// packDir is where a cluster's builds of ted are laid out for its nodes.
func packDir(sharedDir string) string { return filepath.Join(sharedDir, "agent") }

// packsKept is how many builds of ted a cluster's shared directory keeps:
// the newest, and the one before while nodes still take it.
const packsKept = 2

// packPoll is how often a node looks for a new build in the shared
// directory.
const packPoll = 5 * time.Second

// standbyWait bounds how long the active node waits for the standbys to
// run a new build before it upgrades itself anyway (a standby outside its
// upgrade window, or whose upgrade failed): beyond its probation.
func standbyWait(probation time.Duration) time.Duration { return probation + 2*time.Minute }

// clusterAgent is one cluster node's agent upgrades.
type clusterAgent struct {
	u        *upgrader
	packDir  string
	trust    *distribution.Trust
	node     string
	members  func() []cluster.Member
	handover func(node string) error
	// peers: the cluster has other nodes (cluster.join); a node alone
	// upgrades while active.
	peers bool
	log   *slog.Logger
	// probation is whether the version running is on probation
	// (gossiped: the active node waits for the standbys to commit);
	// failed (a string) the newer version that failed here, and why.
	probation atomic.Bool
	failed    atomic.Value

	// sawPeers: another member was seen since the start (a node without
	// cluster.join that others join is not alone).
	sawPeers atomic.Bool
	offerMu  sync.Mutex

	mu   sync.Mutex
	last string // what the pack watch last logged
	// shown is the nodes' versions as the active node last showed them.
	shown string
	// allowed is when each build (NAME@REV) was first allowed here by the
	// agent block: the wait for the standbys counts from then.
	allowed map[string]time.Time
}

// activeOffer decides, on the active node, what to do with agent
// revision m stored in st (the cluster's store): copy it into the shared
// directory for every node; once the standbys run it (committed), hand
// the active role over to one of them, and upgrade as a standby. Only a
// node alone, or one that no standby relieves in time (none runs it by
// standbyWait), upgrades while active. check is the fence: nothing is
// written to the shared directory past the lease.
func (c *clusterAgent) activeOffer(ctx context.Context, st store.Store, check func() error, m *distribution.Manifest, parentAgent string, again func()) (state, reason string) {
	// One at a time: the build arriving and the node beginning to act
	// offer it together.
	c.offerMu.Lock()
	defer c.offerMu.Unlock()
	if m.Platform != agent.Platform() || !newerVersion(m.Version, c.u.version) {
		return c.u.offerFrom(ctx, m, st, parentAgent, again)
	}
	signed, err := st.Signed(m.Name, m.Revision)
	if err == nil {
		_, err = agent.WritePack(c.packDir, signed, m, st, parentAgent, packsKept, check)
	}
	if err != nil {
		c.log.Error("agent: build not copied to the shared directory for the cluster's nodes", "version", m.Version, "err", err)
		c.u.later(m.Name, time.Minute, again)
		return subscriber.StateBlocked, fmt.Sprintf("not copied to the shared directory for the cluster's nodes: %v", err)
	}
	// Would this node upgrade now, by its own agent block? Only then do
	// the standbys go first, and the wait for them counts from then.
	if state, reason, ok := c.u.ready(m, parentAgent, again); !ok {
		return state, reason
	}
	// Failed on a standby (rolled back there): not tried on the node that
	// serves, which would be down if it failed here too.
	for _, n := range c.members() {
		if why, ok := strings.CutPrefix(n.Meta.AgentFailed, m.Version+": "); ok && n.Name != c.node {
			return subscriber.StateFailed, fmt.Sprintf("failed on %s: %s; not tried on the active node", n.Name, why)
		}
	}
	key := fmt.Sprintf("%s@%d", m.Name, m.Revision)
	c.mu.Lock()
	since, seen := c.allowed[key]
	if !seen {
		since = time.Now()
		c.allowed[key] = since
	}
	c.mu.Unlock()
	by := since.Add(standbyWait(c.u.file.Probation))
	older, relief := c.standbys(m.Version)
	if time.Now().Before(by) {
		switch {
		case relief != "" && c.handover(relief) == nil:
			c.u.later(m.Name, packPoll, again)
			return subscriber.StateBlocked, fmt.Sprintf("handing the active role over to %s, which runs %s, to upgrade as a standby (at the latest %s)",
				relief, m.Version, by.UTC().Format(time.RFC3339))
		case c.peers || c.sawPeers.Load():
			// A standby restarting on the new version is out of the
			// gossip for a moment: none seen is no reason to go first.
			c.u.later(m.Name, packPoll, again)
			who := "none seen now"
			if len(older) > 0 {
				who = strings.Join(older, ", ")
			}
			return subscriber.StateBlocked, fmt.Sprintf("upgrading the standbys first (%s); this node follows when one runs %s, at the latest %s",
				who, m.Version, by.UTC().Format(time.RFC3339))
		}
	}
	// Alone, or no standby relieved it in time: it upgrades while active
	// (its clean stop releases the lease at once).
	return c.u.offerFrom(ctx, m, st, parentAgent, again)
}

// standbys looks at the other live members: older names those that do
// not run version yet (or only on probation); relief is the one to hand
// the active role to, healthy and running version committed (the lowest
// priority), if any.
func (c *clusterAgent) standbys(version string) (older []string, relief string) {
	best := 0
	for _, m := range c.members() {
		if m.Name != c.node {
			c.sawPeers.Store(true)
		}
		switch {
		case m.Name == c.node:
		case m.Meta.Agent == "" || newerVersion(version, m.Meta.Agent):
			older = append(older, fmt.Sprintf("%s runs %s", m.Name, orDash(m.Meta.Agent)))
		case m.Meta.Probation:
			older = append(older, fmt.Sprintf("%s runs %s on probation", m.Name, m.Meta.Agent))
		case m.Meta.Healthy && (relief == "" || m.Meta.Priority < best):
			relief, best = m.Name, m.Meta.Priority
		}
	}
	slices.Sort(older)
	return older, relief
}

// loadFailed reads from the agent state which newer version failed here,
// for the gossip.
func (c *clusterAgent) loadFailed() {
	st, err := c.u.dir.Load()
	if err != nil {
		return
	}
	failed := ""
	if f, ok := st.Failed[distribution.AgentName(agent.Platform())]; ok && newerVersion(f.Version, c.u.version) {
		failed = f.Version + ": " + transport.Truncate(f.Reason, 48)
	}
	c.failed.Store(failed)
}

// nodes says which version each live node of the cluster runs, this one
// included: "c-a 1.5.0 (active), c-b 1.4.2 (1.5.0 failed: ...)".
func (c *clusterAgent) nodes() string {
	members := c.members()
	slices.SortFunc(members, func(a, b cluster.Member) int { return cmp.Compare(a.Name, b.Name) })
	var out []string
	for _, m := range members {
		s := m.Name + " " + orDash(m.Meta.Agent)
		var notes []string
		if m.Meta.Active {
			notes = append(notes, "active")
		}
		if m.Meta.Probation {
			notes = append(notes, "on probation")
		}
		if m.Meta.AgentFailed != "" {
			notes = append(notes, m.Meta.AgentFailed)
		}
		if len(notes) > 0 {
			s += " (" + strings.Join(notes, "; ") + ")"
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

func (c *clusterAgent) lastShown() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.shown
}

// watch takes, while this node is a standby (acting says whether it
// acts), the newest build of ted the active node laid out in the shared
// directory.
func (c *clusterAgent) watch(ctx context.Context, acting func() bool, show func()) {
	t := time.NewTicker(packPoll)
	defer t.Stop()
	for {
		c.loadFailed()
		if !acting() {
			c.fromPacks(ctx)
		} else if nodes := c.nodes(); nodes != c.lastShown() {
			// The active node shows the nodes' versions with the build:
			// shown again when they change.
			show()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// fromPacks offers the newest pack to this node.
func (c *clusterAgent) fromPacks(ctx context.Context) {
	packs, bad := agent.Packs(c.packDir, distribution.AgentName(agent.Platform()), c.trust)
	var said []string
	for _, err := range bad {
		said = append(said, err.Error())
	}
	packs = slices.DeleteFunc(packs, func(p *agent.Pack) bool { return !slices.Contains(p.Manifest.Channels, c.u.file.Channel) })
	if len(packs) > 0 {
		p := packs[0]
		state, reason := c.u.offerFrom(ctx, p.Manifest, p, p.ParentAgent, nil)
		said = append(said, fmt.Sprintf("%s@%d (%s): %s: %s", p.Manifest.Name, p.Manifest.Revision, p.Manifest.Version, state, reason))
	}
	msg := strings.Join(said, "; ")
	c.mu.Lock()
	changed := msg != c.last
	c.last = msg
	c.mu.Unlock()
	switch {
	case !changed || msg == "":
	case len(bad) > 0:
		c.log.Error("agent: builds in the shared directory", "packs", msg)
	default:
		c.log.Info("agent: build in the shared directory", "pack", msg)
	}
}

// showStored shows, on the node that begins to act, what became of the
// newest build of ted in the cluster's store (this node may have
// upgraded since it was stored, or a standby may run it): it is offered
// again.
func (c *clusterAgent) showStored(ctx context.Context, st store.Store, check func() error, s *subscriber.Subscriber, again func(*distribution.Manifest)) {
	name := distribution.AgentName(agent.Platform())
	revs, err := st.Revisions(name)
	if err != nil || len(revs) == 0 {
		return
	}
	newest := slices.MaxFunc(revs, func(a, b store.RevisionInfo) int { return cmp.Compare(a.Revision, b.Revision) })
	signed, err := st.Signed(name, newest.Revision)
	if err != nil {
		return
	}
	m, err := signed.Manifest()
	if err != nil {
		return
	}
	nodes := c.nodes()
	state, reason := c.activeOffer(ctx, st, check, m, s.ParentAgent(), func() { again(m) })
	if !errors.Is(ctx.Err(), context.Canceled) {
		c.mu.Lock()
		c.shown = nodes
		c.mu.Unlock()
		s.SetAgentState(m, state, reason+"; nodes: "+nodes)
	}
}
