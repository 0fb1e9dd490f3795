package fleet

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"ted/transport"
)

// Defaults of Config.
const (
	// DefaultStaleAfter is how long a node may be out of touch before it
	// is stale: long enough for a restart or a parent's failover, short
	// enough that a dead server shows within minutes.
	DefaultStaleAfter = 3 * time.Minute
	// DefaultForgetAfter is how long a node out of touch is kept before it
	// is dropped from the view (its events stay in the history).
	DefaultForgetAfter = 7 * 24 * time.Hour
	// tombstones bounds the nodes-gone remembered for readers of
	// Changes; one further behind is given the whole table.
	tombstones = 10_000
	// MaxPerSource bounds the nodes one child may report: far above any
	// tree TED is built for, low enough that a child gone wrong cannot
	// fill its parent's memory.
	MaxPerSource = 1_000_000
)

// Config configures a Table.
type Config struct {
	// Self is the name of the node that keeps the table: the parent of
	// its direct children.
	Self string
	// StaleAfter and ForgetAfter: see the defaults. Zero takes them.
	StaleAfter  time.Duration
	ForgetAfter time.Duration
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Events, if set, is given the events of every change, outside the
	// table's lock, in order.
	Events func([]Event)
}

// Table is what a node knows of its subtree: its direct children as they
// report themselves, and the nodes below them as their distributors report
// them. Each report is kept by its source (the direct child it came
// through); the node's state is the best of them (connected first, then
// the latest seen), so a node that moved to another parent shows where it
// is now. Every change of a node's state is numbered, so Changes gives
// a reader only what changed since it last asked. Safe for concurrent use.
type Table struct {
	cfg Config

	mu      sync.Mutex
	nodes   map[string]*entry
	sources map[string]*source
	seq     uint64
	digest  uint64
	// gone are the nodes dropped, by the number of their dropping; floor
	// is the highest number of one forgotten since, so a reader behind it
	// must take the whole table.
	gone  map[string]uint64
	floor uint64
	// changed is closed and replaced at every change: a broadcast.
	changed chan struct{}
	// pending are events not yet given to cfg.Events; emitting serialises
	// their delivery.
	pending  []Event
	emitting bool
	// restoring: the records come from before a restart, whose events
	// were recorded then.
	restoring bool
}

// source is a direct child, through which reports come.
type source struct {
	up        bool
	downSince time.Time
	// nodes are the nodes it reports (its own record included), and sum
	// and count the digest of its subtree report (its own record not).
	nodes map[string]struct{}
	sum   uint64
	count int
	// ignored are the records of its report that name it or this table's
	// node (a loop, a name used twice, a view saved before the tree
	// changed): counted in the digest as the child counts them, kept out
	// of the table.
	ignored map[string]uint64
	// unseen, during a whole report, are the nodes it reported before and
	// has not reported again yet: dropped when the report ends.
	unseen map[string]struct{}
}

// restored is the source of the records read back at start (Restore).
const restored = "\x00restored"

// entry is one node.
type entry struct {
	bySource map[string]*transport.NodeState
	eff      transport.NodeState
	hash     uint64
	seq      uint64
	first    time.Time
	// since is when each revision reached the state it is in, as seen
	// here.
	since map[revKey]time.Time
	stale bool
}

type revKey struct {
	name string
	rev  uint64
}

// New returns an empty table.
func New(cfg Config) *Table {
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.ForgetAfter <= 0 {
		cfg.ForgetAfter = DefaultForgetAfter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// Numbers start at 1: 0 asks Changes for the whole table.
	return &Table{cfg: cfg, nodes: map[string]*entry{}, sources: map[string]*source{}, gone: map[string]uint64{}, changed: make(chan struct{}), seq: 1}
}

// Each calls fn with every node of the table, its state as the table
// holds it (fn must not keep or change it), under the table's lock.
func (t *Table) Each(fn func(n *transport.NodeState)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.nodes {
		fn(&e.eff)
	}
}

// StaleAfter is the table's bound for staleness.
func (t *Table) StaleAfter() time.Duration { return t.cfg.StaleAfter }

// Changed returns a channel closed at the next change.
func (t *Table) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// Child records a direct child's report of itself: at connection (from
// its hello), at every status report, and when it goes away (Connected
// false, LastSeen set). Its Parent is set to the table's node. A child
// that connects is the source of its subtree from then on.
func (t *Table) Child(n transport.NodeState) {
	if n.Name == t.cfg.Self {
		return // this node dialling itself: not a child
	}
	n.Parent = t.cfg.Self
	transport.ClipNodeState(&n)
	t.mu.Lock()
	src := t.sourceLocked(n.Name)
	wasUp := src.up
	src.up = n.Connected
	if !n.Connected {
		src.downSince = time.UnixMilli(n.LastSeen)
	}
	t.putLocked(n.Name, n.Name, &n)
	if wasUp != src.up {
		// Its subtree's nodes are reachable, or not, with it.
		for name := range src.nodes {
			if name != n.Name {
				t.refreshLocked(name)
			}
		}
	}
	t.unlockAndEmit()
}

func (t *Table) sourceLocked(name string) *source {
	src := t.sources[name]
	if src == nil {
		src = &source{nodes: map[string]struct{}{}}
		t.sources[name] = src
	}
	return src
}

// ErrDigest is returned by Apply when a child's subtree differs from what
// it says it is.
var ErrDigest = fmt.Errorf("%w: subtree report does not match its digest", transport.ErrProtocol)

// ErrTooMany is returned by Apply when a child reports more than
// MaxPerSource nodes.
var ErrTooMany = fmt.Errorf("%w: subtree report of more than %d nodes", transport.ErrProtocol, MaxPerSource)

// Apply applies a direct child's Subtree report. A whole report
// overwrites the records it repeats in place (a node that did not change
// makes no event and no change upward) and drops, at its last message,
// those it no longer names. An error says the table's copy of the child's
// subtree does not match the child's, or that it is too large: the caller
// ends the session, and the next one starts with a whole report.
func (t *Table) Apply(from string, m *transport.Subtree) error {
	t.mu.Lock()
	src := t.sourceLocked(from)
	if m.Full {
		src.unseen = make(map[string]struct{}, len(src.nodes)+len(src.ignored))
		for name := range src.nodes {
			if name != from {
				src.unseen[name] = struct{}{}
			}
		}
		for name := range src.ignored {
			src.unseen[name] = struct{}{}
		}
	}
	for i := range m.Nodes {
		n := m.Nodes[i]
		delete(src.unseen, n.Name)
		if n.Name == from || n.Name == t.cfg.Self {
			// A child reports itself in its Status, and nothing reports
			// its parent: a loop, or a name used twice.
			t.ignoreLocked(src, n.Name, &n)
			continue
		}
		t.unignoreLocked(src, n.Name)
		t.putLocked(n.Name, from, &n)
	}
	for _, name := range m.Gone {
		delete(src.unseen, name)
		t.unignoreLocked(src, name)
		if name != from {
			t.dropLocked(name, from)
		}
	}
	var err error
	if !m.More {
		for name := range src.unseen {
			t.unignoreLocked(src, name)
			if name != from {
				t.dropLocked(name, from)
			}
		}
		src.unseen = nil
		if src.count != m.Count || src.sum != m.Digest {
			err = fmt.Errorf("%w: %s reports %d nodes, %d here", ErrDigest, from, m.Count, src.count)
		}
	}
	if src.count > MaxPerSource {
		err = fmt.Errorf("%w: from %s", ErrTooMany, from)
	}
	t.unlockAndEmit()
	return err
}

// ignoreLocked counts a record of src that stays out of the table.
func (t *Table) ignoreLocked(src *source, name string, n *transport.NodeState) {
	t.unignoreLocked(src, name)
	if src.ignored == nil {
		src.ignored = map[string]uint64{}
	}
	h := transport.NodeDigest(n)
	src.ignored[name] = h
	src.sum += h
	src.count++
}

// unignoreLocked forgets an ignored record of src, if any.
func (t *Table) unignoreLocked(src *source, name string) {
	if h, ok := src.ignored[name]; ok {
		delete(src.ignored, name)
		src.sum -= h
		src.count--
	}
}

// putLocked sets the record of node name from source from.
func (t *Table) putLocked(name, from string, n *transport.NodeState) {
	src := t.sourceLocked(from)
	e := t.nodes[name]
	if e == nil {
		e = &entry{bySource: map[string]*transport.NodeState{}, first: t.cfg.Now(), since: map[revKey]time.Time{}}
		t.nodes[name] = e
		if from != restored {
			t.eventLocked(Event{Kind: KindFirstSeen, Node: name, Detail: "via " + from})
		}
	}
	if old := e.bySource[from]; old != nil && from != name {
		src.sum -= transport.NodeDigest(old)
		src.count--
	}
	e.bySource[from] = n
	src.nodes[name] = struct{}{}
	if from != name {
		src.sum += transport.NodeDigest(n)
		src.count++
	}
	if from != restored {
		if _, ok := e.bySource[restored]; ok {
			// What was known before a restart yields to a live report.
			delete(e.bySource, restored)
			delete(t.sources[restored].nodes, name)
		}
	}
	t.refreshLocked(name)
}

// dropLocked removes source from's record of node name.
func (t *Table) dropLocked(name, from string) {
	e := t.nodes[name]
	src := t.sources[from]
	if e == nil || src == nil {
		return
	}
	if old := e.bySource[from]; old != nil {
		if from != name {
			src.sum -= transport.NodeDigest(old)
			src.count--
		}
		delete(e.bySource, from)
	}
	delete(src.nodes, name)
	t.refreshLocked(name)
}

// refreshLocked recomputes node name's state from its records; a change
// is numbered, and a node with no record left is dropped.
func (t *Table) refreshLocked(name string) {
	e := t.nodes[name]
	if e == nil {
		return
	}
	if len(e.bySource) == 0 {
		delete(t.nodes, name)
		t.digest -= e.hash
		t.seq++
		t.gone[name] = t.seq
		t.pruneGoneLocked()
		t.signalLocked()
		return
	}
	var best transport.NodeState
	var bestFrom string
	found := false
	for from, rec := range e.bySource {
		c := *rec
		if src := t.sources[from]; src != nil && !src.up && from != c.Name {
			// Reported through a child that is gone: out of touch since
			// then, at the latest.
			down := src.downSince.UnixMilli()
			if c.Connected {
				c.Connected, c.LastSeen = false, down
			} else if c.LastSeen > down {
				c.LastSeen = down
			}
		}
		if !found || better(&c, from, &best, bestFrom) {
			best, bestFrom, found = c, from, true
		}
	}
	h := transport.NodeDigest(&best)
	if e.seq != 0 && h == e.hash {
		return
	}
	old := e.eff
	t.digest += h - e.hash
	e.eff, e.hash = best, h
	t.seq++
	e.seq = t.seq
	delete(t.gone, name)
	if best.Connected {
		e.stale = false
	}
	t.diffLocked(name, e, &old)
	t.signalLocked()
}

// better reports whether record a (from source af) describes the node
// better than b: connected, then seen later, then by source name so the
// choice does not depend on map order.
func better(a *transport.NodeState, af string, b *transport.NodeState, bf string) bool {
	if a.Connected != b.Connected {
		return a.Connected
	}
	if a.LastSeen != b.LastSeen {
		return a.LastSeen > b.LastSeen
	}
	return af < bf
}

// diffLocked records the events of a node's change and when each of its
// revisions reached its state.
func (t *Table) diffLocked(name string, e *entry, old *transport.NodeState) {
	if t.restoring {
		return
	}
	now := t.cfg.Now()
	before := map[revKey]*transport.RevisionState{}
	for i := range old.Revisions {
		r := &old.Revisions[i]
		before[revKey{r.Name, r.Revision}] = r
	}
	seen := make(map[revKey]bool, len(e.eff.Revisions))
	for i := range e.eff.Revisions {
		r := &e.eff.Revisions[i]
		k := revKey{r.Name, r.Revision}
		seen[k] = true
		if b := before[k]; b != nil && b.State == r.State && b.Reason == r.Reason && b.Error == r.Error {
			continue
		}
		if b := before[k]; b == nil || b.State != r.State {
			e.since[k] = now
		}
		if kind, ok := stateEvents[r.State]; ok {
			detail := r.Reason
			if r.Error != "" {
				detail = r.Error
			}
			t.eventLocked(Event{Kind: kind, Node: name, Dist: r.Name, Revision: r.Revision, Version: r.Version, Detail: detail})
		}
	}
	for k := range e.since {
		if !seen[k] {
			delete(e.since, k)
		}
	}
}

// stateEvents are the revision states that make an event.
var stateEvents = map[string]Kind{
	"received":    KindReceived,
	"extracted":   KindExtracted,
	"blocked":     KindBlocked,
	"failed":      KindFailed,
	"rolled_back": KindRolledBack,
}

func (t *Table) signalLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

func (t *Table) pruneGoneLocked() {
	if len(t.gone) <= tombstones {
		return
	}
	// Forget the older half.
	seqs := make([]uint64, 0, len(t.gone))
	for _, s := range t.gone {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	cut := seqs[len(seqs)/2]
	for name, s := range t.gone {
		if s <= cut {
			delete(t.gone, name)
		}
	}
	t.floor = max(t.floor, cut)
}

// eventLocked queues an event for cfg.Events.
func (t *Table) eventLocked(ev Event) {
	if t.cfg.Events == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = t.cfg.Now()
	}
	t.pending = append(t.pending, ev)
}

// unlockAndEmit unlocks t and gives the events queued to cfg.Events, in
// order, one caller at a time.
func (t *Table) unlockAndEmit() {
	if t.emitting || len(t.pending) == 0 {
		t.mu.Unlock()
		return
	}
	t.emitting = true
	for len(t.pending) > 0 {
		evs := t.pending
		t.pending = nil
		t.mu.Unlock()
		t.cfg.Events(evs)
		t.mu.Lock()
	}
	t.emitting = false
	t.mu.Unlock()
}

// Changes returns what changed after seq: the nodes whose state changed
// and the nodes gone, or every node (full) when seq is 0 or too far
// behind. at is the number to ask from next time; count and digest
// describe the whole table at that number.
func (t *Table) Changes(seq uint64) (nodes []transport.NodeState, gone []string, full bool, at uint64, count int, digest uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	full = seq == 0 || seq < t.floor
	for _, e := range t.nodes {
		if full || e.seq > seq {
			nodes = append(nodes, e.eff)
		}
	}
	if !full {
		for name, s := range t.gone {
			if s > seq {
				gone = append(gone, name)
			}
		}
	}
	slices.SortFunc(nodes, func(a, b transport.NodeState) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(gone)
	return nodes, gone, full, t.seq, len(t.nodes), t.digest
}

// Sweep marks the nodes out of touch for StaleAfter as stale (an event
// each, and Changed is signalled) and drops those out of touch for
// ForgetAfter, and the sources gone that long; call it every few seconds.
func (t *Table) Sweep() {
	now := t.cfg.Now()
	t.mu.Lock()
	newlyStale := false
	for name, e := range t.nodes {
		if e.eff.Connected {
			continue
		}
		last := time.UnixMilli(e.eff.LastSeen)
		if !e.stale && now.Sub(last) >= t.cfg.StaleAfter {
			e.stale = true
			t.eventLocked(Event{Kind: KindStale, Node: name, Detail: "last seen " + last.UTC().Format(time.RFC3339)})
			newlyStale = true
		}
		if now.Sub(last) >= t.cfg.ForgetAfter {
			// Only what this table is the judge of: its own children's
			// records and those of sources gone; a live child reports
			// its own subtree's and forgets them itself.
			for from := range e.bySource {
				if src := t.sources[from]; from == name || from == restored || src != nil && !src.up {
					t.dropLocked(name, from)
				}
			}
		}
	}
	for from, src := range t.sources {
		if !src.up && len(src.nodes) == 0 {
			delete(t.sources, from)
		}
	}
	if newlyStale {
		// Nothing travels up (a parent works staleness out itself), but
		// watchers of the view (the console) should look again.
		t.signalLocked()
	}
	t.unlockAndEmit()
}

// SavedNode is a node as Save gives it and Restore takes it back.
type SavedNode struct {
	transport.NodeState
	FirstSeen time.Time `json:"first_seen,omitzero"`
	Stale     bool      `json:"stale,omitempty"`
}

// Save returns every node with what Restore needs.
func (t *Table) Save() []SavedNode {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]SavedNode, 0, len(t.nodes))
	for _, e := range t.nodes {
		out = append(out, SavedNode{NodeState: e.eff, FirstSeen: e.first, Stale: e.stale})
	}
	return out
}

// Restore loads nodes known before a restart (Save): each stays in the
// view, out of touch since at, until a live report replaces it. Their
// events were recorded before: none is made again, not even stale.
func (t *Table) Restore(nodes []SavedNode, at time.Time) {
	t.mu.Lock()
	src := t.sourceLocked(restored)
	src.up, src.downSince = false, at
	t.restoring = true
	for i := range nodes {
		n := nodes[i].NodeState
		if n.Name == "" || n.Name == t.cfg.Self || t.nodes[n.Name] != nil {
			continue
		}
		transport.ClipNodeState(&n)
		t.putLocked(n.Name, restored, &n)
		if e := t.nodes[n.Name]; e != nil {
			if !nodes[i].FirstSeen.IsZero() {
				e.first = nodes[i].FirstSeen
			}
			e.stale = nodes[i].Stale
		}
	}
	t.restoring = false
	t.unlockAndEmit()
}
