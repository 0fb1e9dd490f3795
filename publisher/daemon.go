package publisher

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"ted/distribution"
	"ted/schedule"
	"ted/store"
	"ted/transport"
)

// Distribution is one distribution the daemon builds on a schedule.
type Distribution struct {
	// Name is the distribution's name.
	Name string
	// From is the directory whose content each build reads.
	From string
	// Version is the semantic version of the revisions built, strict
	// (distribution.ParseVersion).
	Version string
	// Channels are the channels the revisions are published into.
	Channels []string
	// Target is where the content lands under a subscriber's root; empty
	// means Name.
	Target string
	// Requires are dependency constraints ("runtime >=2.0").
	Requires []string
	// Build names the schedule in whose windows the distribution is
	// rebuilt and pushed.
	Build string
}

// Config configures a Daemon.
type Config struct {
	// Name is the publisher's name, the one its certificate gives; it
	// says hello to the distributor with it.
	Name string
	// Agent is the software version told to the distributor.
	Agent string
	// Distributor is the address (HOST:PORT) of the distributor that
	// every revision is pushed to.
	Distributor string
	// Distributions are built and pushed, each on its own build schedule.
	Distributions []Distribution
	// Schedules holds the build schedules named by Distributions; the
	// daemon looks again when it reports Changed.
	Schedules *schedule.Source
	// Clock is the daemon's only source of time.
	Clock schedule.Clock
	// KeepRevisions is how many revisions of each distribution the store
	// keeps.
	KeepRevisions int
	// RetryMin is the wait before a failed build or push is tried again
	// while its window is open; each further failure doubles it, up to
	// RetryMax.
	RetryMin time.Duration
	// RetryMax caps the wait between retries.
	RetryMax time.Duration
	// Self tells this node's own certificate as it is now, for metrics;
	// nil: not shown.
	Self func() transport.Identity
}

// DefaultConfig returns a Config without names, distributions or schedules.
func DefaultConfig() Config {
	return Config{
		// Real time.
		Clock: schedule.SystemClock(),
		// As the other daemons and dist build: a rollback target or two,
		// bounded disk.
		KeepRevisions: 3,
		// A distributor restarting or a file being written usually clears
		// within seconds; trying again soon keeps the window's use high.
		RetryMin: 5 * time.Second,
		// A distributor that stays away is asked every few minutes, not
		// hammered, and a long window still gets many tries.
		RetryMax: 5 * time.Minute,
	}
}

// Validate reports the first field that is wrong.
func (c Config) Validate() error {
	if c.Name == "" {
		return errors.New("publisher config: name: missing")
	}
	if _, _, err := net.SplitHostPort(c.Distributor); err != nil {
		return fmt.Errorf("publisher config: distributor %q: not HOST:PORT", c.Distributor)
	}
	if len(c.Distributions) == 0 {
		return errors.New("publisher config: distributions: none")
	}
	seen := map[string]bool{}
	for i, d := range c.Distributions {
		if err := distribution.ValidName(fmt.Sprintf("publisher config: distributions[%d]: name", i), d.Name); err != nil {
			return err
		}
		if seen[d.Name] {
			return fmt.Errorf("publisher config: distributions: %q twice", d.Name)
		}
		seen[d.Name] = true
		if d.From == "" {
			return fmt.Errorf("publisher config: distributions.%s.from: missing", d.Name)
		}
		if d.Build == "" {
			return fmt.Errorf("publisher config: distributions.%s.build: missing", d.Name)
		}
		if _, err := distribution.ParseVersion(d.Version); err != nil {
			return fmt.Errorf("publisher config: distributions.%s.version: %w", d.Name, err)
		}
		b := d.manifest(time.Time{})
		b.Revision = 1 // Build assigns it
		if err := b.Validate(); err != nil {
			return fmt.Errorf("publisher config: distributions.%s: %w", d.Name, err)
		}
	}
	switch {
	case c.Schedules == nil:
		return errors.New("publisher config: schedules: none")
	case c.Clock == nil:
		return errors.New("publisher config: clock: none")
	case c.KeepRevisions < 1:
		return fmt.Errorf("publisher config: keep_revisions %d: keep at least 1", c.KeepRevisions)
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("publisher config: retry %v..%v: want 0 < min <= max", c.RetryMin, c.RetryMax)
	}
	return nil
}

// manifest returns the metadata of a revision of d built at created.
func (d Distribution) manifest(created time.Time) distribution.BuildOptions {
	return distribution.BuildOptions{
		Name: d.Name, Version: d.Version, Channels: d.Channels,
		Target: d.Target, Requires: d.Requires, Created: created,
	}
}

// DialFunc dials the distributor at addr.
type DialFunc func(ctx context.Context, addr string) (transport.Session, error)

// Daemon rebuilds each distribution when its build window opens and pushes
// every revision the distributor does not hold yet.
type Daemon struct {
	cfg   Config
	store store.Store
	key   ed25519.PrivateKey
	dial  DialFunc
	log   *slog.Logger
	// metrics are the daemon's series, for /metrics (Registry).
	metrics *metrics

	mu      sync.Mutex
	started time.Time
	states  map[string]*DistributionStatus
}

// New returns a Daemon that builds into st, signs with key and pushes over
// sessions from dial.
func New(cfg Config, st store.Store, key ed25519.PrivateKey, dial DialFunc, log *slog.Logger) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, store: st, key: key, dial: dial, log: log, states: map[string]*DistributionStatus{}, metrics: newMetrics(cfg.Self)}
	for _, dist := range cfg.Distributions {
		d.states[dist.Name] = &DistributionStatus{Name: dist.Name, Build: dist.Build}
	}
	return d, nil
}

// Run builds and pushes until ctx ends, one goroutine per distribution.
// Failures are logged and retried; Run returns nil when ctx ends.
func (d *Daemon) Run(ctx context.Context) error {
	d.mu.Lock()
	d.started = d.cfg.Clock.Now()
	d.mu.Unlock()
	d.log.Info("publisher running", "node", d.cfg.Name, "distributor", d.cfg.Distributor, "distributions", len(d.cfg.Distributions))
	g, gctx := errgroup.WithContext(ctx)
	for _, dist := range d.cfg.Distributions {
		g.Go(func() error {
			d.loop(gctx, dist)
			return nil
		})
	}
	return g.Wait()
}

// loop builds dist at start if its schedule is open, then at each opening
// and each schedule reload that finds it open; after a failure it tries
// again, backing off, while the window stays open.
func (d *Daemon) loop(ctx context.Context, dist Distribution) {
	// pushed is the newest revision the distributor is known to hold;
	// 0 at start, so the first window pushes the latest revision unless
	// the distributor already holds it.
	var pushed uint64
	var backoff time.Duration
	failed := false
	for {
		changed := d.cfg.Schedules.Changed()
		sch := d.cfg.Schedules.Lookup(dist.Build)
		now := d.cfg.Clock.Now()
		if sch.OpenAt(now) {
			err := d.cycle(ctx, dist, &pushed)
			if ctx.Err() != nil {
				return
			}
			failed = err != nil
			if failed {
				backoff = min(max(2*backoff, d.cfg.RetryMin), d.cfg.RetryMax)
			} else {
				backoff = 0
			}
		}

		now = d.cfg.Clock.Now()
		retryNow := failed && sch.OpenAt(now)
		// The status first: a test that sees the timers set sees it too.
		d.update(dist.Name, func(s *DistributionStatus) {
			s.NextRetry = time.Time{}
			if retryNow {
				s.NextRetry = now.Add(backoff)
			}
		})
		var opens, retries <-chan time.Time
		var opening, retry schedule.Timer
		// Next gives always its endless window, open now: no opening to
		// wait for.
		if w, ok := sch.Next(now); ok && w.Start.After(now) {
			opening = d.cfg.Clock.NewTimer(w.Start.Sub(now))
			opens = opening.C()
		}
		if retryNow {
			retry = d.cfg.Clock.NewTimer(backoff)
			retries = retry.C()
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-opens:
		case <-retries:
		}
		for _, t := range []schedule.Timer{opening, retry} {
			if t != nil {
				t.Stop()
			}
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// cycle builds dist and pushes its latest revision unless the distributor
// is known to hold it.
func (d *Daemon) cycle(ctx context.Context, dist Distribution, pushed *uint64) error {
	log := d.log.With("dist", dist.Name)
	now := d.cfg.Clock.Now()
	res, err := Build(ctx, d.store, BuildOptions{From: dist.From, Manifest: dist.manifest(now), Keep: d.cfg.KeepRevisions}, d.key)
	d.update(dist.Name, func(s *DistributionStatus) {
		s.LastBuild = now
		s.BuildError = ""
		if err != nil {
			s.BuildError = err.Error()
			return
		}
		s.Revision, s.Unchanged = res.Revision, res.Unchanged
	})
	if err != nil {
		if ctx.Err() == nil {
			d.metrics.builds.WithLabelValues("failed").Inc()
			log.Error("build failed", "err", err)
		}
		return err
	}
	d.metrics.lastBuild.Set(float64(d.cfg.Clock.Now().Unix()))
	if res.Unchanged {
		d.metrics.builds.WithLabelValues("unchanged").Inc()
		log.Info("rebuilt: unchanged", "rev", res.Revision)
	} else {
		d.metrics.builds.WithLabelValues("new").Inc()
		log.Info("built", "rev", res.Revision, "version", res.Version, "files", res.Stats.Files,
			"bytes", res.Stats.Bytes, "new_chunks", res.Stats.NewChunks, "pruned", res.Pruned)
	}
	if *pushed == res.Revision {
		return nil
	}
	pres, err := d.push(ctx, res.Signed)
	// The series first, then the status: what waits for the status sees
	// them too.
	d.countPush(ctx, res.Signed, pres, err)
	d.update(dist.Name, func(s *DistributionStatus) {
		s.LastPush = d.cfg.Clock.Now()
		s.PushError = ""
		if err != nil {
			s.PushError = err.Error()
			return
		}
		s.Pushed = pres.Revision
		s.PushResult = &pres
	})
	if err != nil {
		if ctx.Err() == nil {
			log.Error("push failed", "rev", res.Revision, "err", err)
		}
		return err
	}
	*pushed = res.Revision
	log.Info("pushed", "rev", res.Revision, "peer", pres.Distributor, "already_stored", pres.AlreadyStored,
		"sent_chunks", pres.SentChunks, "sent_bytes", pres.SentBytes)
	return nil
}

// countPush counts a push that ended with pres or err in the metrics.
func (d *Daemon) countPush(ctx context.Context, signed *distribution.Signed, pres PushResult, err error) {
	if err != nil {
		if ctx.Err() == nil {
			d.metrics.pushes.WithLabelValues("failed").Inc()
		}
		return
	}
	d.metrics.pushes.WithLabelValues("succeeded").Inc()
	d.metrics.lastPush.Set(float64(d.cfg.Clock.Now().Unix()))
	if m, err := signed.Manifest(); err == nil {
		_, bytes, _ := m.Totals()
		d.metrics.offered.Add(float64(bytes))
	}
	d.metrics.sent.Add(float64(pres.SentBytes))
	d.metrics.sentChunks.Add(float64(pres.SentChunks))
	if !pres.AlreadyStored {
		d.metrics.published.Inc()
	}
}

// push dials the distributor, pushes signed and hangs up.
func (d *Daemon) push(ctx context.Context, signed *distribution.Signed) (PushResult, error) {
	sess, err := d.dial(ctx, d.cfg.Distributor)
	if ctx.Err() == nil {
		d.metrics.reach.set(err == nil)
	}
	if err != nil {
		if strings.Contains(err.Error(), d.cfg.Distributor) {
			return PushResult{}, err // transport's errors name the address
		}
		return PushResult{}, fmt.Errorf("dial %s: %w", d.cfg.Distributor, err)
	}
	defer sess.Close(nil)
	return Push(ctx, sess, d.cfg.Name, d.cfg.Agent, d.store, signed, nil, d.log)
}

func (d *Daemon) update(name string, f func(*DistributionStatus)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d.states[name])
}

// Status is what /api/status shows of a publisher daemon.
type Status struct {
	Node        string    `json:"node"`
	Distributor string    `json:"distributor"`
	Started     time.Time `json:"started"`
	// Distributions are sorted by name.
	Distributions []DistributionStatus `json:"distributions"`
}

// DistributionStatus is the state of one distribution.
type DistributionStatus struct {
	Name string `json:"name"`
	// Build is the build schedule's name.
	Build string `json:"build"`
	// Open: the build window is open now.
	Open bool `json:"open"`
	// NextWindow is the window open now, else the next one; nil if none
	// opens.
	NextWindow *schedule.Window `json:"next_window,omitempty"`
	// LastBuild is when the last build started; zero before the first.
	LastBuild time.Time `json:"last_build,omitzero"`
	// Revision is the latest revision the last successful build left.
	Revision uint64 `json:"revision"`
	// Unchanged: the last successful build made no new revision.
	Unchanged bool `json:"unchanged"`
	// BuildError is why the last build failed; empty if it did not.
	BuildError string `json:"build_error,omitempty"`
	// LastPush is when the last push ended; zero before the first.
	LastPush time.Time `json:"last_push,omitzero"`
	// Pushed is the newest revision the distributor took from this run.
	Pushed uint64 `json:"pushed"`
	// PushResult is the last successful push's result.
	PushResult *PushResult `json:"push_result,omitempty"`
	// PushError is why the last push failed; empty if it did not.
	PushError string `json:"push_error,omitempty"`
	// NextRetry is when a failed build or push is tried again in the
	// window open now; zero when none is due.
	NextRetry time.Time `json:"next_retry,omitzero"`
}

// Status reports every distribution's builds, pushes and windows.
func (d *Daemon) Status() Status {
	now := d.cfg.Clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	st := Status{Node: d.cfg.Name, Distributor: d.cfg.Distributor, Started: d.started, Distributions: []DistributionStatus{}}
	for _, s := range d.states {
		ds := *s
		if ds.PushResult != nil {
			r := *ds.PushResult
			ds.PushResult = &r
		}
		sch := d.cfg.Schedules.Lookup(ds.Build)
		w, ok := sch.WindowAt(now)
		ds.Open = ok
		if !ok {
			w, ok = sch.Next(now)
		}
		if ok {
			ds.NextWindow = &w
		}
		st.Distributions = append(st.Distributions, ds)
	}
	slices.SortFunc(st.Distributions, func(a, b DistributionStatus) int { return cmp.Compare(a.Name, b.Name) })
	return st
}

// Registry is the daemon's Prometheus registry, for /metrics.
func (d *Daemon) Registry() *prometheus.Registry { return d.metrics.registry }
