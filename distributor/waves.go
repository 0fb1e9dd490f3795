package distributor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"ted/fleet"
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
		if err != nil || n <= 0 || n > 100 {
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
		h := fnv.New32a()
		h.Write([]byte(name))
		return float64(h.Sum32()%10000) < n*100
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
	// healthy is since when the first wave is done and healthy (not
	// kept: a restart soaks again).
	healthy time.Time
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

// held reports whether revision key, on channels, waits for its wave for
// child c: a subscriber not in the first wave of a rollout not open.
func (d *Distributor) held(key revKey, channels []string, c *child) bool {
	w := d.members().wavesOf(channels)
	if w == nil || c.role != "subscriber" || w.inFirst(c.name) {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.waves[key]
	return st == nil || st.Opened.IsZero()
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

// saveWavesLocked writes WavesFile; d.mu is held.
func (d *Distributor) saveWavesLocked() error {
	if d.cfg.DataDir == "" {
		return nil
	}
	saved := map[string]*waveState{}
	for k, st := range d.waves {
		if !st.Opened.IsZero() || st.Stopped != "" {
			saved[fmt.Sprintf("%s@%d", k.name, k.rev)] = st
		}
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
		}
	}
}

// decideWaves looks at the latest revision of every distribution on a
// channel with waves: its first wave failed (stop), or done and healthy
// for the soak (open to all).
func (d *Distributor) decideWaves() {
	mb := d.members()
	names, err := d.store.Distributions()
	if err != nil {
		return
	}
	opened := false
	for _, name := range names {
		r, err := d.store.Latest(name)
		if err != nil {
			continue
		}
		w := mb.wavesOf(r.Channels)
		if w == nil {
			continue
		}
		key := revKey{r.Name, r.Revision}
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
		members, extracted, failed, firstErr := 0, 0, 0, ""
		for cname, cs := range d.seen {
			if cs.Role != "subscriber" || !w.inFirst(cname) || !sharesChannel(cs.Channels, r.Channels) {
				continue
			}
			if _, connected := d.children[cname]; !connected {
				continue
			}
			members++
			for _, rs := range cs.Revisions {
				if rs.Name != r.Name {
					continue
				}
				switch {
				case rs.Revision == r.Revision && rs.State == "failed":
					failed++
					if firstErr == "" {
						firstErr = cname + ": " + rs.Error
					}
				case rs.Revision > r.Revision, rs.Revision == r.Revision && rs.State == "extracted":
					extracted++
				}
			}
		}
		now := d.cfg.Clock.Now()
		switch {
		case failed >= max(w.StopAfter, 1):
			st.Stopped = fmt.Sprintf("%d failed in the first wave (%s)", failed, firstErr)
			d.log.Warn("rollout stopped: the first wave failed; the rest do not receive it", "dist", r.Name, "rev", r.Revision, "why", st.Stopped)
			d.recordEvent(fleet.Event{Kind: fleet.KindStopped, Node: d.cfg.Name, Dist: r.Name, Revision: r.Revision, Version: r.Version, Detail: st.Stopped})
		case extracted >= members:
			if st.healthy.IsZero() {
				st.healthy = now
			}
			if now.Sub(st.healthy) >= w.Soak {
				st.Opened = now
				opened = true
				d.log.Info("rollout opens to every subscriber: the first wave is healthy", "dist", r.Name, "rev", r.Revision, "first_wave", members, "soak", w.Soak)
			}
		default:
			st.healthy = time.Time{}
		}
		if err := d.saveWavesLocked(); err != nil {
			d.log.Warn("waves: rollouts not saved", "err", err)
		}
		d.mu.Unlock()
	}
	if opened {
		d.kickAll()
	}
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
