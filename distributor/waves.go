package distributor

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"ted/distribution"
	"ted/fleet"
	"ted/store"
	"ted/transport"
)

// Waves is a channel's rollout in waves, decided for the whole subtree of
// the distributor where it is configured: a new revision goes first to
// the first wave (Canary) of the subscribers of the subtree, and to the
// rest only once every subscriber of the first wave connected has
// extracted it and stayed so for Soak; StopAfter failures in the first
// wave stop the rollout of that revision (the rest never receive it; a
// newer revision starts again).
//
// The distributor that decides passes each rollout down to its child
// distributors (transport.Waves, ted/1.3), which hold the revision back
// from their own subscribers outside the first wave, and from their own
// upgrade (a build of ted), until it opens; their own waves, if any,
// decide only what no parent decides. Distributor children always
// receive at once: they relay to the first wave below them. The first
// wave's health is read from the subtree's table (package fleet), which
// every child distributor reports up.
type Waves struct {
	// Canary is the first wave: a share of the subscribers ("10%"), by a
	// hash of their names, or a name pattern ("web-0*").
	Canary    string
	Soak      time.Duration
	StopAfter int
}

// ParseCanary checks a first wave: N% (0 < N <= 100) or a name pattern.
func ParseCanary(canary string) error {
	if pct, ok := strings.CutSuffix(canary, "%"); ok {
		n, err := strconv.ParseFloat(pct, 64)
		if err != nil || math.IsNaN(n) || n <= 0 || n > 100 {
			return fmt.Errorf("%q: want a share from 0%% to 100%%, or a name pattern", canary)
		}
		return nil
	}
	if canary == "" {
		return errors.New("empty: want a share (10%) or a name pattern (web-0*)")
	}
	if len(canary) > maxCanary {
		return fmt.Errorf("%d characters: at most %d", len(canary), maxCanary)
	}
	if _, err := path.Match(canary, ""); err != nil {
		return fmt.Errorf("%q: %v", canary, err)
	}
	return nil
}

// maxCanary bounds a first wave's pattern; maxStopped the reason of a
// stop passed down (transport limits text to 4 KiB).
const (
	maxCanary  = 256
	maxStopped = 1024
)

// inCanary reports whether subscriber name is in the first wave canary.
func inCanary(canary, name string) bool {
	if pct, ok := strings.CutSuffix(canary, "%"); ok {
		n, _ := strconv.ParseFloat(pct, 64)
		return float64(nameHash(name)%10000) < n*100
	}
	ok, _ := path.Match(canary, name)
	return ok
}

// heldBy reports whether rollout r holds its revision back from
// subscriber name: outside the first wave until it opens, and from
// everyone once it stopped.
func heldBy(r transport.Rollout, name string) bool {
	switch {
	case r.Open:
		return false
	case r.Stopped != "":
		return true
	}
	return !inCanary(r.Canary, name) && r.Chosen != name
}

// WavesFile keeps, in DataDir, which revisions' rollouts opened to all or
// stopped, so a restart does not start them again.
const WavesFile = "waves.json"

// waveState is one revision's rollout here.
type waveState struct {
	Opened  time.Time `json:"opened,omitzero"`
	Stopped string    `json:"stopped,omitempty"`
	// Chosen is the first wave's one subscriber when a share chose none
	// (too few subscribers): the lowest hash among those connected.
	Chosen string `json:"chosen,omitempty"`
	// Canary is the first wave of this distributor's own waves, passed
	// down with the decisions.
	Canary string `json:"canary,omitempty"`
	// Channels are the revision's, to pass the rollout down only to the
	// children that take one of them.
	Channels []string `json:"channels,omitempty"`
	// Parent is the rollout the parent decides and passed down: it rules
	// here, over this distributor's own waves, until the parent opens it;
	// one the parent no longer sends is kept as it was (the parent may
	// not know it: a second parent, a restart), until the revision leaves
	// this distributor's store.
	Parent *transport.Rollout `json:"parent,omitempty"`
	// healthy is since when the first wave is done and healthy, and
	// counted who it was then: one of them gone (a crash) starts the soak
	// again. failing is since when stop_after of them have failed. Not
	// kept: a restart soaks again.
	healthy time.Time
	counted map[string]bool
	failing time.Time
}

// wavesOf returns the waves of the first of channels that has them.
func (mb *membership) wavesOf(channels []string) *Waves {
	for _, ch := range channels {
		if w := mb.channels[ch].Waves; w != nil {
			return w
		}
	}
	return nil
}

// held reports whether revision key, on channels (the revision's), waits
// for its wave for child c: a subscriber not in the first wave of a
// rollout not open, the parent's or this distributor's own.
func (d *Distributor) held(key revKey, channels []string, c *child) bool {
	if c.role != "subscriber" {
		return false
	}
	r, ok := d.rolloutOf(key, channels)
	return ok && heldBy(r, c.name)
}

// rolloutOf is the rollout that rules revision key (on channels) here:
// the parent's, else this distributor's own waves; ok false if none.
func (d *Distributor) rolloutOf(key revKey, channels []string) (r transport.Rollout, ok bool) {
	w := d.members().wavesOf(channels)
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.waves[key]
	if st != nil && st.Parent != nil {
		return *st.Parent, true
	}
	if w == nil {
		return r, false
	}
	r = transport.Rollout{Name: key.name, Revision: key.rev, Canary: w.Canary}
	if st != nil {
		r.Open, r.Stopped, r.Chosen = !st.Opened.IsZero(), st.Stopped, st.Chosen
	}
	return r, true
}

// waveHolds says whether this distributor's own upgrade to agent
// revision key (of version, on channels) waits for its wave: a
// distributor is never in a first wave, and upgrades once the rollout
// opens (or never, if it stopped). A build it runs already is not held.
func (d *Distributor) waveHolds(key revKey, version string, channels []string) (held bool, why string) {
	if version == d.cfg.Agent {
		return false, ""
	}
	r, ok := d.rolloutOf(key, channels)
	switch {
	case !ok || r.Open:
		return false, ""
	case r.Stopped != "":
		return true, "the rollout in waves stopped: " + r.Stopped
	}
	return true, fmt.Sprintf("waiting for the rollout in waves to open: the first wave (%s) runs it first", r.Canary)
}

// rollouts is what this distributor passes down to a child distributor
// taking channels: every rollout in waves it knows on those channels, its
// own and its parent's, those not open first, at most
// transport.MaxRollouts; sent says which. ok is false until the first
// decision since the start.
func (d *Distributor) rollouts(channels []string) (m *transport.Waves, sent map[revKey]bool, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.wavesDecided {
		return nil, nil, false
	}
	m = &transport.Waves{}
	for k, st := range d.waves {
		switch {
		case st.Parent != nil:
			if len(st.Parent.Channels) == 0 || sharesChannel(st.Parent.Channels, channels) {
				m.Rollouts = append(m.Rollouts, *st.Parent)
			}
		case st.Canary != "" && sharesChannel(st.Channels, channels):
			m.Rollouts = append(m.Rollouts, transport.Rollout{Name: k.name, Revision: k.rev, Canary: st.Canary, Chosen: st.Chosen,
				Open: !st.Opened.IsZero(), Stopped: st.Stopped, Channels: st.Channels})
		}
	}
	slices.SortFunc(m.Rollouts, func(a, b transport.Rollout) int {
		open := func(r transport.Rollout) int {
			if r.Open {
				return 1
			}
			return 0
		}
		return cmp.Or(cmp.Compare(open(a), open(b)), cmp.Compare(a.Name, b.Name), cmp.Compare(b.Revision, a.Revision))
	})
	m.Rollouts = m.Rollouts[:min(len(m.Rollouts), transport.MaxRollouts)]
	sent = map[revKey]bool{}
	for _, r := range m.Rollouts {
		sent[revKey{r.Name, r.Revision}] = true
	}
	return m, sent, true
}

// ensureRollout makes sure revision key, on channels with waves here, has
// a rollout to pass down, before the first decision on it: a child
// distributor learns of the rollout before it receives the revision.
func (d *Distributor) ensureRollout(key revKey, channels []string) {
	w := d.members().wavesOf(channels)
	if w == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch st := d.waves[key]; {
	case st == nil:
		d.waves[key] = &waveState{Canary: w.Canary, Channels: channels}
	case st.Canary == "":
		st.Canary, st.Channels = w.Canary, channels
	}
}

// parentWaves takes the rollouts the parent passed down: each rules its
// revision here until the parent opens it. One the parent does not send
// is kept as it was: the parent may not know it (a second parent, one
// restarted), and only an opening from above lets a revision go; it is
// forgotten once the revision leaves this distributor's store.
func (d *Distributor) parentWaves(m *transport.Waves) {
	var opened []revKey
	changed := false
	d.mu.Lock()
	for _, r := range m.Rollouts {
		k := revKey{r.Name, r.Revision}
		st := d.waves[k]
		if st == nil {
			st = &waveState{}
			d.waves[k] = st
		}
		if st.Parent != nil && rolloutEqual(*st.Parent, r) {
			continue
		}
		if r.Open && (st.Parent == nil || !st.Parent.Open) {
			opened = append(opened, k)
		}
		st.Parent, changed = &r, true
		d.log.Info("rollout in waves from the parent", "dist", r.Name, "rev", r.Revision, "canary", r.Canary, "open", r.Open, "stopped", r.Stopped)
	}
	d.mu.Unlock()
	if !changed {
		return
	}
	d.saveWaves()
	d.kickAll()
	for _, k := range opened {
		d.reofferAgent(k)
	}
}

// rolloutEqual reports whether two rollouts say the same.
func rolloutEqual(a, b transport.Rollout) bool {
	return a.Name == b.Name && a.Revision == b.Revision && a.Canary == b.Canary && a.Chosen == b.Chosen &&
		a.Open == b.Open && a.Stopped == b.Stopped && slices.Equal(a.Channels, b.Channels)
}

// reofferAgent gives revision k to OnAgent again if it is a build of ted
// (its rollout opened: this node may upgrade now).
func (d *Distributor) reofferAgent(k revKey) {
	if d.cfg.OnAgent == nil {
		return
	}
	s, err := d.store.Signed(k.name, k.rev)
	if err != nil {
		return
	}
	if m, err := s.Manifest(); err == nil {
		d.agentStored(m)
	}
}

// loadWaves reads WavesFile.
func (d *Distributor) loadWaves() {
	d.waves = map[revKey]*waveState{}
	if d.cfg.DataDir == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(d.cfg.DataDir, WavesFile))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			d.log.Warn("waves: the saved rollouts are not read", "err", err)
		}
		return
	}
	var saved map[string]*waveState
	if err := json.Unmarshal(b, &saved); err != nil {
		d.log.Warn("waves: the saved rollouts are damaged", "err", err)
		return
	}
	for k, st := range saved {
		name, rev, ok := strings.Cut(k, "@")
		n, err := strconv.ParseUint(rev, 10, 64)
		if ok && err == nil {
			d.waves[revKey{name, n}] = st
		}
	}
}

// wavesSnapshotLocked is WavesFile's content; d.mu is held. A rollout
// under way is kept too: it is passed down.
func (d *Distributor) wavesSnapshotLocked() map[string]*waveState {
	saved := map[string]*waveState{}
	for k, st := range d.waves {
		if !st.Opened.IsZero() || st.Stopped != "" || st.Chosen != "" || st.Canary != "" || st.Parent != nil {
			c := *st
			saved[fmt.Sprintf("%s@%d", k.name, k.rev)] = &c
		}
	}
	return saved
}

// saveWaves writes WavesFile: the rollouts as they are when it writes,
// one writer at a time, so the newest state is the one on disk.
func (d *Distributor) saveWaves() {
	if d.cfg.DataDir == "" {
		return
	}
	d.wavesSave.Lock()
	defer d.wavesSave.Unlock()
	d.mu.Lock()
	saved := d.wavesSnapshotLocked()
	d.mu.Unlock()
	b, err := json.Marshal(saved)
	if err == nil {
		_, err = distribution.WriteFileAtomic(filepath.Join(d.cfg.DataDir, WavesFile), 0o640, func(w io.Writer) error {
			_, err := w.Write(b)
			return err
		})
	}
	if err != nil {
		d.log.Warn("waves: rollouts not saved", "err", err)
	}
}

// wavesLoop decides the rollouts in waves: every 2 s, and as the subtree
// changes.
func (d *Distributor) wavesLoop(ctx context.Context) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		changed := d.fleet.Changed()
		d.decideWaves()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-changed:
			// At most one pass a second, however busy the subtree.
			pause := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
				pause.Stop()
				return
			case <-pause.C:
			}
		}
	}
}

// verdict is one first-wave subscriber's state of a revision.
type verdict int

const (
	pending verdict = iota
	done            // extracted, or a newer revision extracted
	failing         // failed to extract or install it
)

// verdictOf is what a node's revision states say of revision rev of
// name: extracted (or a newer one extracted), failed, or not yet.
func verdictOf(states []transport.RevisionState, name string, rev uint64) (verdict, string) {
	v, why := pending, ""
	for _, rs := range states {
		if rs.Name != name {
			continue
		}
		switch {
		case rs.Revision >= rev && rs.State == "extracted":
			return done, ""
		case rs.Revision == rev && rs.State == "failed":
			v, why = failing, rs.Error
		}
	}
	return v, why
}

// decideWaves looks at the latest revision of every distribution on a
// channel with waves: its first wave failing for the soak (stop), or done
// and healthy for the soak with nobody of it gone (open to all).
func (d *Distributor) decideWaves() {
	mb := d.members()
	names, err := d.store.Distributions()
	if err != nil {
		return
	}
	held := map[revKey]bool{}
	newest := map[string]uint64{} // the newest stored revision of each
	readAll := true
	var opened []revKey
	var changed bool
	var events []fleet.Event
	for _, name := range names {
		revs, err := d.store.Revisions(name)
		if err != nil {
			readAll = false // nothing is taken for pruned on a failed read
			continue
		}
		if len(revs) == 0 {
			continue
		}
		for _, r := range revs {
			held[revKey{r.Name, r.Revision}] = true
		}
		r := revs[len(revs)-1]
		for _, x := range revs {
			if x.Revision > r.Revision {
				r = x
			}
		}
		newest[r.Name] = r.Revision
		w := mb.wavesOf(r.Channels)
		if w == nil {
			continue // released below if it had waves
		}
		key := revKey{r.Name, r.Revision}
		now := d.cfg.Clock.Now()
		d.mu.Lock()
		st := d.waves[key]
		if st == nil {
			st = &waveState{}
			d.waves[key] = st
		}
		if st.Parent != nil {
			d.mu.Unlock()
			continue // the parent decides
		}
		if st.Canary != w.Canary || !slices.Equal(st.Channels, r.Channels) {
			st.Canary, st.Channels, changed = w.Canary, r.Channels, true
		}
		chosen := st.Chosen
		if !st.Opened.IsZero() || st.Stopped != "" {
			d.mu.Unlock()
			continue
		}
		d.mu.Unlock()
		// The first wave: subscribers of the subtree that take the
		// revision's channels, connected, chosen by the waves (or the one
		// chosen before). The table is read without d.mu, which every
		// session takes.
		members := map[string]verdictAt{}
		lowest, lowestName := uint32(0), ""
		d.fleet.Each(func(n *transport.NodeState) {
			if n.Role != "subscriber" || !n.Connected || !sharesChannel(n.Channels, r.Channels) {
				return
			}
			if inCanary(w.Canary, n.Name) || chosen == n.Name {
				v, why := verdictOf(n.Revisions, r.Name, r.Revision)
				members[n.Name] = verdictAt{v, why}
			}
			if h := nameHash(n.Name); lowestName == "" || h < lowest {
				lowest, lowestName = h, n.Name
			}
		})
		d.mu.Lock()
		if st != d.waves[key] || st.Parent != nil {
			d.mu.Unlock()
			continue // changed meanwhile: the next pass decides
		}
		if len(members) == 0 && lowestName != "" && strings.HasSuffix(w.Canary, "%") && st.Chosen == "" {
			// Too few subscribers for the share to choose one: the first
			// wave is one of them, so that the revision is tried somewhere.
			st.Chosen, changed = lowestName, true
			members[lowestName] = verdictAt{pending, ""}
			d.log.Info("waves: the share chose no subscriber; the first wave is one", "dist", r.Name, "rev", r.Revision, "subscriber", lowestName)
		}
		extracted, failed, firstErr := 0, 0, ""
		for cname, v := range members {
			switch v.v {
			case done:
				extracted++
			case failing:
				failed++
				if firstErr == "" {
					firstErr = cname + ": " + v.why
				}
			}
		}
		// One of the wave counted healthy gone (crashed, disconnected):
		// the soak starts again once it is back.
		for cname := range st.counted {
			if _, ok := members[cname]; !ok {
				st.healthy, st.counted = time.Time{}, nil
				break
			}
		}
		switch {
		case failed >= max(w.StopAfter, 1):
			// Failures that last the soak stop it (a failed transfer is
			// tried again, and clears).
			if st.failing.IsZero() {
				st.failing = now
			}
			st.healthy, st.counted = time.Time{}, nil
			if now.Sub(st.failing) >= w.Soak {
				st.Stopped, changed = transport.Truncate(fmt.Sprintf("%d failed in the first wave (%s)", failed, firstErr), maxStopped), true
				d.log.Warn("rollout stopped: the first wave failed; the rest do not receive it", "dist", r.Name, "rev", r.Revision, "why", st.Stopped)
				events = append(events, fleet.Event{Kind: fleet.KindStopped, Node: d.cfg.Name, Dist: r.Name, Revision: r.Revision, Version: r.Version, Detail: st.Stopped})
			}
		case len(members) > 0 && extracted == len(members):
			st.failing = time.Time{}
			if st.healthy.IsZero() {
				st.healthy, st.counted = now, map[string]bool{}
				for cname := range members {
					st.counted[cname] = true
				}
			}
			if now.Sub(st.healthy) >= w.Soak {
				st.Opened, changed = now, true
				opened = append(opened, key)
				d.log.Info("rollout opens to every subscriber: the first wave is healthy", "dist", r.Name, "rev", r.Revision, "first_wave", len(members), "soak", w.Soak)
			}
		default:
			st.healthy, st.counted, st.failing = time.Time{}, nil, time.Time{}
		}
		d.mu.Unlock()
	}
	d.mu.Lock()
	for k, st := range d.waves {
		_, incoming := d.incoming[k.name]
		switch {
		case held[k] || incoming || !readAll:
			if st.Parent == nil && st.Canary != "" && st.Opened.IsZero() && st.Stopped == "" && mb.wavesOf(st.Channels) == nil {
				// Its channel has no waves any more (a reload): released,
				// and the release passed down.
				st.Opened, changed = d.cfg.Clock.Now(), true
				opened = append(opened, k)
			}
		case st.Parent == nil:
			// Pruned from the store (or never stored).
			delete(d.waves, k)
			changed = true
		case k.rev < newest[k.name]:
			// The parent's rollout of a revision this store held and
			// pruned; one newer than anything here may yet arrive.
			delete(d.waves, k)
			changed = true
		}
	}
	first := !d.wavesDecided
	d.wavesDecided = true
	d.mu.Unlock()
	if changed {
		d.saveWaves()
	}
	for _, ev := range events {
		d.recordEvent(ev)
	}
	if len(opened) > 0 || changed || first {
		d.kickAll() // the subscribers whose wave opened, the child distributors
	}
	for _, k := range opened {
		d.reofferAgent(k)
	}
}

// verdictAt is one first-wave subscriber's verdict, and why it failed.
type verdictAt struct {
	v   verdict
	why string
}

// nameHash places a subscriber in a share of the first wave.
func nameHash(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32()
}

// waveText says where a revision's rollout in waves is, for the rollout
// view ("" for a revision without waves).
func (d *Distributor) waveText(name string, rev uint64, channels []string) string {
	w := d.members().wavesOf(channels)
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.waves[revKey{name, rev}]
	if st != nil && st.Parent != nil {
		p := st.Parent
		switch {
		case p.Stopped != "":
			return "stopped (decided above): " + p.Stopped
		case p.Open:
			return "open to every subscriber (decided above)"
		}
		return fmt.Sprintf("first wave (%s) only, decided above", p.Canary)
	}
	if w == nil {
		return ""
	}
	switch {
	case st == nil:
		return fmt.Sprintf("first wave (%s) only, then the rest once it is healthy for %s", w.Canary, w.Soak)
	case st.Stopped != "":
		return "stopped: " + st.Stopped
	case !st.Opened.IsZero():
		return "open to every subscriber since " + st.Opened.UTC().Format(time.RFC3339)
	case !st.healthy.IsZero():
		return fmt.Sprintf("first wave (%s) healthy; the rest at %s", w.Canary, st.healthy.Add(w.Soak).UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("first wave (%s) only, then the rest once it is healthy for %s", w.Canary, w.Soak)
}

// beforeHeld is the offer of the newest stored revision before or's
// whose rollout did not stop, for child c, which or is held back from;
// nil if none.
func (d *Distributor) beforeHeld(or *offerRev, c *child) *offerRev {
	revs, err := d.store.Revisions(or.key.name)
	if err != nil {
		return nil
	}
	slices.SortFunc(revs, func(a, b store.RevisionInfo) int { return cmp.Compare(b.Revision, a.Revision) })
	for _, r := range revs {
		key := revKey{r.Name, r.Revision}
		if r.Revision >= or.key.rev {
			continue
		}
		// Any older revision but one whose rollout stopped: one that was
		// still in its first wave when a newer one came is older than
		// the one held back, and was not found failing.
		if r, ok := d.rolloutOf(key, r.Channels); ok && r.Stopped != "" {
			continue // stopped, here or above
		}
		s, err := d.store.Signed(r.Name, r.Revision)
		if err != nil {
			return nil
		}
		m, err := s.Manifest()
		if err != nil {
			return nil
		}
		older, err := d.offerRevision(key, s, m)
		if err != nil {
			return nil
		}
		return older
	}
	return nil
}
