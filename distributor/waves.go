package distributor

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"ted/fleet"
	"ted/store"
)

// Waves is a channel's rollout in waves: a new revision goes first to the
// first wave of this distributor's subscribers, and to the rest only once
// every subscriber of the first wave connected has extracted it and
// stayed so for Soak; StopAfter failures in the first wave stop the
// rollout of that revision (the rest never receive it; a newer revision
// starts again). Distributor children always receive at once: each
// distributor rolls out to its own subscribers.
type Waves struct {
	// First is the first wave: a share of the subscribers ("10%"), by a
	// hash of their names, or a name pattern ("web-0*").
	First     string
	Soak      time.Duration
	StopAfter int
}

// ParseWavesFirst checks a first wave: N% (0 < N <= 100) or a name
// pattern.
func ParseWavesFirst(first string) error {
	if pct, ok := strings.CutSuffix(first, "%"); ok {
		n, err := strconv.ParseFloat(pct, 64)
		if err != nil || math.IsNaN(n) || n <= 0 || n > 100 {
			return fmt.Errorf("%q: want a share from 0%% to 100%%, or a name pattern", first)
		}
		return nil
	}
	if first == "" {
		return errors.New("empty: want a share (10%) or a name pattern (web-0*)")
	}
	if _, err := path.Match(first, ""); err != nil {
		return fmt.Errorf("%q: %v", first, err)
	}
	return nil
}

// inFirst reports whether subscriber name is in the first wave.
func (w *Waves) inFirst(name string) bool {
	if pct, ok := strings.CutSuffix(w.First, "%"); ok {
		n, _ := strconv.ParseFloat(pct, 64)
		return float64(nameHash(name)%10000) < n*100
	}
	ok, _ := path.Match(w.First, name)
	return ok
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
// rollout not open.
func (d *Distributor) held(key revKey, channels []string, c *child) bool {
	w := d.members().wavesOf(channels)
	if w == nil || c.role != "subscriber" {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.waves[key]
	if st != nil && !st.Opened.IsZero() {
		return false
	}
	if st != nil && st.Stopped != "" {
		return true
	}
	return !w.inFirst(c.name) && (st == nil || st.Chosen != c.name)
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

// wavesSnapshotLocked is WavesFile's content; d.mu is held.
func (d *Distributor) wavesSnapshotLocked() map[string]*waveState {
	saved := map[string]*waveState{}
	for k, st := range d.waves {
		if !st.Opened.IsZero() || st.Stopped != "" || st.Chosen != "" {
			c := *st
			saved[fmt.Sprintf("%s@%d", k.name, k.rev)] = &c
		}
	}
	return saved
}

// saveWaves writes WavesFile.
func (d *Distributor) saveWaves(saved map[string]*waveState) error {
	if d.cfg.DataDir == "" {
		return nil
	}
	b, err := json.Marshal(saved)
	if err != nil {
		return err
	}
	name := filepath.Join(d.cfg.DataDir, WavesFile)
	if err := os.WriteFile(name+".tmp", b, 0o640); err != nil {
		return err
	}
	return os.Rename(name+".tmp", name)
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

// verdictOf is what cs says of revision r: extracted (or a newer one
// extracted or superseded by its own newer one), failed, or not yet.
func verdictOf(cs *ChildStatus, name string, rev uint64) (verdict, string) {
	v, why := pending, ""
	for _, rs := range cs.Revisions {
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
	var opened, changed bool
	var events []fleet.Event
	for _, name := range names {
		revs, err := d.store.Revisions(name)
		if err != nil || len(revs) == 0 {
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
		w := mb.wavesOf(r.Channels)
		if w == nil {
			continue
		}
		key := revKey{r.Name, r.Revision}
		now := d.cfg.Clock.Now()
		d.mu.Lock()
		st := d.waves[key]
		if st == nil {
			st = &waveState{}
			d.waves[key] = st
		}
		if !st.Opened.IsZero() || st.Stopped != "" {
			d.mu.Unlock()
			continue
		}
		// The first wave: subscribers of the revision's channels,
		// connected, chosen by the waves (or the one chosen before).
		members := map[string]*ChildStatus{}
		lowest, lowestName := uint32(0), ""
		for cname, cs := range d.seen {
			if cs.Role != "subscriber" || !sharesChannel(cs.Channels, r.Channels) {
				continue
			}
			if _, connected := d.children[cname]; !connected {
				continue
			}
			if w.inFirst(cname) || st.Chosen == cname {
				members[cname] = cs
			}
			if h := nameHash(cname); lowestName == "" || h < lowest {
				lowest, lowestName = h, cname
			}
		}
		if len(members) == 0 && lowestName != "" && strings.HasSuffix(w.First, "%") && st.Chosen == "" {
			// Too few subscribers for the share to choose one: the first
			// wave is one of them, so that the revision is tried somewhere.
			st.Chosen, changed = lowestName, true
			members[lowestName] = d.seen[lowestName]
			d.log.Info("waves: the share chose no subscriber; the first wave is one", "dist", r.Name, "rev", r.Revision, "subscriber", lowestName)
		}
		extracted, failed, firstErr := 0, 0, ""
		for cname, cs := range members {
			switch v, why := verdictOf(cs, r.Name, r.Revision); v {
			case done:
				extracted++
			case failing:
				failed++
				if firstErr == "" {
					firstErr = cname + ": " + why
				}
			}
		}
		// One of the wave counted healthy gone (crashed, disconnected):
		// the soak starts again once it is back.
		for cname := range st.counted {
			if members[cname] == nil {
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
				st.Stopped, changed = fmt.Sprintf("%d failed in the first wave (%s)", failed, firstErr), true
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
				st.Opened, opened, changed = now, true, true
				d.log.Info("rollout opens to every subscriber: the first wave is healthy", "dist", r.Name, "rev", r.Revision, "first_wave", len(members), "soak", w.Soak)
			}
		default:
			st.healthy, st.counted, st.failing = time.Time{}, nil, time.Time{}
		}
		d.mu.Unlock()
	}
	d.mu.Lock()
	for k := range d.waves {
		if !held[k] {
			delete(d.waves, k) // pruned from the store
			changed = true
		}
	}
	var saved map[string]*waveState
	if changed {
		saved = d.wavesSnapshotLocked()
	}
	d.mu.Unlock()
	if saved != nil {
		if err := d.saveWaves(saved); err != nil {
			d.log.Warn("waves: rollouts not saved", "err", err)
		}
	}
	for _, ev := range events {
		d.recordEvent(ev)
	}
	if opened {
		d.kickAll()
	}
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
	if w == nil {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.waves[revKey{name, rev}]
	switch {
	case st == nil:
		return fmt.Sprintf("first wave (%s) only, then the rest once it is healthy for %s", w.First, w.Soak)
	case st.Stopped != "":
		return "stopped: " + st.Stopped
	case !st.Opened.IsZero():
		return "open to every subscriber since " + st.Opened.UTC().Format(time.RFC3339)
	case !st.healthy.IsZero():
		return fmt.Sprintf("first wave (%s) healthy; the rest at %s", w.First, st.healthy.Add(w.Soak).UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("first wave (%s) only, then the rest once it is healthy for %s", w.First, w.Soak)
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
		d.mu.Lock()
		st := d.waves[key]
		d.mu.Unlock()
		if st != nil && st.Stopped != "" {
			continue
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
