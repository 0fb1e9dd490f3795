package subscriber

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"ted/dependency"
	"ted/distribution"
	"ted/install"
	"ted/schedule"
	"ted/store"
	"ted/transport"
)

// Revision states, as `ted subscriber status` shows them.
const (
	StateReceiving  = "receiving"
	StateReceived   = "received"
	StateExtracted  = "extracted"
	StateBlocked    = "blocked"
	StateFailed     = "failed"
	StateRolledBack = "rolled_back"
	StateSuperseded = "superseded"
)

// Subscriber is the subscriber daemon: it keeps a session with a parent,
// receives the revisions of its channels, verifies, stores and extracts
// them. Create it with New and run it with Run.
type Subscriber struct {
	cfg     Config
	store   store.Store
	inst    *install.Installer
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	states  map[string]map[uint64]*transport.RevisionState
	parent  string
	changed chan struct{} // a state changed: report it
	started time.Time

	// live holds the channels and trusted keys, which a reload swaps.
	live atomic.Pointer[liveConfig]
	// upstream is the session with the parent now, nil while none: a
	// reload that changes the channels closes it, so the next one says
	// the new channels in its hello.
	upstream transport.Session
	// parentAgent is the ted version of that parent.
	parentAgent string

	// runCtx is Run's context: extraction runs under it, not under a parent
	// session's, so a dropped link never abandons one half done.
	runCtx context.Context

	// extractMu makes extraction runs one at a time (offers, start-up and
	// `ted subscriber extract`).
	extractMu sync.Mutex
	// failedRevs holds, by distribution, the revision whose extraction
	// failed here last; extractMu is held. An offer does not try it again
	// (the same bytes fail the same way, and a failing post-action would
	// run at every offer); a start, a window opening, a rollback and
	// `ted subscriber extract` do.
	failedRevs map[string]uint64
}

// extractRun says which runs may do what.
type extractRun int

const (
	// runOnOffer follows an arrival: inside the window, and not the
	// revisions that failed here.
	runOnOffer extractRun = iota
	// runRetry follows a start, a window opening or a rollback: inside
	// the window, failed revisions included.
	runRetry
	// runNow is `ted subscriber extract`: whatever the window says.
	runNow
)

// New creates a subscriber over an open store and installer.
func New(cfg Config, st store.Store, inst *install.Installer, log *slog.Logger) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("subscriber config: %w", err)
	}
	s := &Subscriber{
		cfg: cfg, store: st, inst: inst, log: log.With("node", cfg.Name),
		states:  map[string]map[uint64]*transport.RevisionState{},
		changed: make(chan struct{}, 1),
		started: time.Now(),
	}
	if s.cfg.Parents.Watch == nil {
		s.cfg.Parents.Watch = transport.NewParentWatch()
	}
	s.metrics = newMetrics(cfg.Self)
	s.registerGauges()
	s.live.Store(&liveConfig{channels: cfg.Channels, trust: cfg.Trust})
	return s, nil
}

// Run recovers any interrupted extraction, extracts what was received and
// not yet extracted, then keeps a session with a parent until ctx ends.
func (s *Subscriber) Run(ctx context.Context, dial transport.DialFunc) error {
	s.runCtx = ctx
	if err := s.inst.Recover(ctx, s.afterRecovered, s.resumeInstallation); err != nil {
		// The journal stays; status shows the failure and the next
		// extraction of that distribution completes or replaces it.
		if stopped(ctx, err) {
			s.log.Info("recovery of an interrupted extraction stopped; the next start goes on", "err", err)
		} else {
			s.log.Error("recover interrupted extraction", "err", err)
		}
	}
	if err := s.loadStates(); err != nil {
		return err
	}
	s.extractAll(ctx, runRetry)
	windows := make(chan struct{})
	go func() {
		defer close(windows)
		s.windowLoop(ctx)
	}()
	defer func() { <-windows }()
	pc := s.cfg.Parents
	pc.Logger = s.log
	transport.RunParents(ctx, pc, dial, s.runParent, func(addr string) {
		s.mu.Lock()
		s.parent = addr
		s.mu.Unlock()
	})
	return nil
}

// manifest loads a stored revision's manifest; the store's copy was
// verified when it was added.
func (s *Subscriber) manifest(name string, rev uint64) (*distribution.Manifest, error) {
	signed, err := s.store.Signed(name, rev)
	if err != nil {
		return nil, err
	}
	return signed.Manifest()
}

// afterRecovered runs the after-step of an installation that a crash
// interrupted after its commit.
func (s *Subscriber) afterRecovered(ctx context.Context, name string, rev uint64) error {
	m, err := s.manifest(name, rev)
	if err != nil {
		return fmt.Errorf("manifest of %s@%d for its post-action: %w", name, rev, err)
	}
	s.log.Info("running the after-step again after a restart", "dist", name, "rev", rev)
	if m.Kind == distribution.KindPackage {
		rec, ok, err := s.inst.InstalledRevision(name)
		if err != nil || !ok || rec.Revision != rev {
			return fmt.Errorf("installed record of %s@%d: %v", name, rev, err)
		}
		return s.verifyParts(ctx, m, rec.Parts)
	}
	if err := s.after(ctx, m); err != nil {
		return err
	}
	// The extraction was finished here, after an interruption (a crash,
	// or another node of a cluster that stopped acting).
	s.log.Info("extracted and verified", "dist", name, "rev", rev, "target", m.Target, "after", "an interruption")
	return nil
}

// fence asks cfg.Fence, if set, whether the next change may be made.
func (s *Subscriber) fence() error {
	if s.cfg.Fence == nil {
		return nil
	}
	if err := s.cfg.Fence(); err != nil {
		return fmt.Errorf("%w: %w", install.ErrFenced, err)
	}
	return nil
}

// stopped reports whether err only means that the work must stop: ctx
// ended, or a change was fenced off (this node may no longer write; the
// next run, here or on another node, goes on from the journal). Such work
// is not marked failed.
func stopped(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, install.ErrFenced) || errors.Is(err, store.ErrFenced)
}

// resumeInstallation gives recovery the installation of name@rev again, so
// that an interrupted extraction goes on from its checkpoint.
func (s *Subscriber) resumeInstallation(name string, rev uint64) (*install.Installation, error) {
	m, err := s.manifest(name, rev)
	if err != nil {
		return nil, err
	}
	if m.Kind == distribution.KindPackage || len(m.Pre) > 0 {
		return nil, fmt.Errorf("%s@%d has commands: it is extracted again from the start", name, rev)
	}
	return filesInstallation(m), nil
}

// filesInstallation is the installation of a distribution of files: one
// part, which can be carried on after an interruption unless a pre-action
// ran before it (on this node, or on the node that was active then).
func filesInstallation(m *distribution.Manifest) *install.Installation {
	return &install.Installation{Name: m.Name, Revision: m.Revision, Version: m.Version, Kind: distribution.KindFiles,
		Requires: m.Requires, Parts: []install.Part{{M: m}}, Resumable: len(m.Pre) == 0}
}

// after is what follows the commit of an installation: the tree is checked
// file by file, then the post-action runs. If either fails, the installer
// rolls the revision back.
func (s *Subscriber) after(ctx context.Context, m *distribution.Manifest) error {
	target := filepath.Join(s.cfg.Root, filepath.FromSlash(m.Target))
	if err := install.VerifyTree(ctx, m, target); err != nil {
		return err
	}
	if len(m.Post) == 0 {
		return nil
	}
	return runActions(ctx, "post", m.Post, m, target, target, s.cfg.ActionTimeout, s.log, s.fence)
}

// loadStates rebuilds the revision states from the store and the installed
// records: what a restart knows.
func (s *Subscriber) loadStates() error {
	names, err := s.store.Distributions()
	if err != nil {
		return err
	}
	pending, err := s.inst.Pending()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range names {
		revs, err := s.store.Revisions(name)
		if err != nil {
			return err
		}
		inst, ok, err := s.inst.InstalledRevision(name)
		if err != nil {
			return err
		}
		held, err := s.inst.Held(name)
		if err != nil {
			return err
		}
		for _, r := range revs {
			st := &transport.RevisionState{Name: r.Name, Revision: r.Revision, Version: r.Version, State: StateReceived, Chunks: r.Chunks, HaveChunks: r.Chunks}
			switch {
			case ok && r.Revision == inst.Revision:
				st.State, st.Reason = StateExtracted, partialReason(inst.Skipped)
			case ok && r.Revision < inst.Revision:
				st.State = StateSuperseded
			case r.Revision <= held:
				st.State, st.Reason = StateRolledBack, heldReason
			}
			for _, j := range pending {
				if j.Name == name && j.To == r.Revision {
					st.State, st.Error = StateFailed, fmt.Sprintf("extraction interrupted at step %s and not recovered", j.Step)
				}
			}
			s.setLocked(st)
		}
	}
	return nil
}

// maxStatusText bounds a reason or error as reported: the parent refuses
// status text over 4 KiB, and an action's command line alone may be longer.
const maxStatusText = 2048

// clip cuts s to maxStatusText bytes of valid UTF-8.
func clip(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxStatusText {
		return s
	}
	return strings.ToValidUTF8(s[:maxStatusText], "") + "…"
}

// setLocked records a revision's state; s.mu is held.
func (s *Subscriber) setLocked(st *transport.RevisionState) {
	st.Reason, st.Error = clip(st.Reason), clip(st.Error)
	revs := s.states[st.Name]
	if revs == nil {
		revs = map[uint64]*transport.RevisionState{}
		s.states[st.Name] = revs
	}
	revs[st.Revision] = st
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// stateOf is a revision's state now ("" if none).
func (s *Subscriber) stateOf(name string, rev uint64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.states[name][rev]; st != nil {
		return st.State
	}
	return ""
}

// update changes a revision's state under the lock.
func (s *Subscriber) update(m *distribution.Manifest, fn func(st *transport.RevisionState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.states[m.Name][m.Revision]
	if st == nil {
		st = &transport.RevisionState{Name: m.Name, Revision: m.Revision, Version: m.Version}
	}
	fn(st)
	s.setLocked(st)
}

// runParent runs one session with a parent.
func (s *Subscriber) runParent(ctx context.Context, sess transport.Session) error {
	if err := transport.RevokedError(s.revocations(), sess.Peer()); err != nil {
		return err // a list from the previous parent revokes this one
	}
	s.mu.Lock()
	s.upstream = sess
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.upstream = nil
		s.mu.Unlock()
	}()
	// The number of our revocation list, so that the parent sends its list
	// only if it is newer; a ted/1 parent would refuse the field.
	var held string
	if s.cfg.Revocations != nil && transport.CarriesRevocations(sess) {
		held = s.cfg.Revocations.HeldNumber()
	}
	control, welcome, err := transport.ClientHello(ctx, sess, &transport.Hello{Name: s.cfg.Name, Agent: s.cfg.Agent, Channels: s.live.Load().channels,
		Cluster: s.cfg.Cluster, Node: s.cfg.Node, Instance: s.cfg.Instance, Epoch: s.cfg.Epoch, CRLNumber: held})
	if err != nil {
		return err
	}
	s.cfg.Parents.Watch.Welcomed()
	s.mu.Lock()
	s.parentAgent = welcome.Agent
	s.mu.Unlock()
	defer control.Close()
	stop := context.AfterFunc(ctx, func() { control.Close() })
	defer stop()
	peer := sess.Peer().Name
	log := s.log.With("peer", peer)
	queue := transport.NewOfferQueue()
	g, ctx := errgroup.WithContext(ctx)
	defer queue.Wait()
	g.Go(func() error {
		defer sess.Close(nil)
		for signed := queue.Next(ctx); signed != nil; signed = queue.Next(ctx) {
			name, err := s.receive(ctx, sess, signed, log)
			if err == nil || ctx.Err() != nil || errors.Is(err, errRefused) {
				queue.Succeeded(name)
				continue
			}
			// A closed send window pauses the transfer until it opens
			// (only the chunks still missing are asked for then); any
			// other failure (the parent could not serve a chunk yet, a
			// chunk stayed corrupt, the disk is short) is tried again
			// with backoff. A newer offer meanwhile wins.
			wait, paused := queue.RetryLater(ctx, name, signed, err, s.cfg.Clock.Now(), s.cfg.RetryMin, s.cfg.RetryMax)
			if paused {
				log.Info("transfer paused until the send window opens", "dist", name, "opens", s.cfg.Clock.Now().Add(wait).UTC().Format(time.RFC3339))
				continue
			}
			log.Warn("transfer failed; will try again", "dist", name, "retry_in", wait, "err", err)
		}
		return nil
	})
	g.Go(func() error {
		defer sess.Close(nil)
		return s.reportLoop(ctx, control, transport.CarriesSubtree(sess))
	})
	g.Go(func() error {
		defer sess.Close(nil)
		var revocations func(*transport.Revocations) error
		if s.cfg.Revocations != nil {
			revocations = s.parentRevocations(peer)
		}
		return transport.ReadParent(control, queue, log, revocations, nil)
	})
	if s.cfg.Revocations != nil {
		g.Go(func() error { return s.leaveRevoked(ctx, sess, log) })
	}
	return g.Wait()
}

// errRefused marks offers refused for good (bad signature, rollback): not
// worth trying again until a new offer.
var errRefused = errors.New("refused")

// reportLoop sends this node's status to the parent at once, then on every
// change, at most every StatusEvery. With problems (a ted/1.2 parent), the
// status also says why this node cannot do its job, looked at again every
// problemEvery: a disk that fills changes no revision's state.
func (s *Subscriber) reportLoop(ctx context.Context, control *transport.Conn, problems bool) error {
	var sent string
	for {
		r := s.report(problems)
		if err := control.Send(r); err != nil {
			return err
		}
		sent = r.Problem
		t := time.NewTimer(s.cfg.StatusEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	wait:
		for {
			look := time.NewTimer(problemEvery)
			select {
			case <-ctx.Done():
				look.Stop()
				return nil
			case <-s.changed:
				look.Stop()
				break wait
			case <-look.C:
				if problems && s.problem() != sent {
					break wait
				}
			}
		}
	}
}

// problemEvery is how often a node looks whether its problem changed.
const problemEvery = 30 * time.Second

// report is the status message for the parent; with problems, it says
// what the node's health check says.
func (s *Subscriber) report(problems bool) *transport.Status {
	st := s.Status()
	out := &transport.Status{Role: st.Role, ActiveNode: st.ActiveNode}
	for _, d := range st.Distributions {
		out.Revisions = append(out.Revisions, d.Revisions...)
	}
	if problems {
		out.Problem = s.problem()
	}
	return out
}

// problem is what the health check says, "" when healthy.
func (s *Subscriber) problem() string {
	if err := s.Health(); err != nil {
		return clip(err.Error())
	}
	return ""
}

// receive handles one offer: verify, check, fetch what is missing, store,
// extract. It returns the distribution name and an error wrapping errRefused
// for an offer refused for good.
func (s *Subscriber) receive(ctx context.Context, sess transport.Session, signed *distribution.Signed, log *slog.Logger) (string, error) {
	peer := sess.Peer().Name
	m, err := s.live.Load().trust.Verify(signed)
	if err != nil {
		// Named from the unverified manifest, for status only.
		um, derr := signed.Manifest()
		if derr != nil {
			return "", fmt.Errorf("%w: offer from %s: %v", errRefused, peer, derr)
		}
		err = fmt.Errorf("revision from %s refused: %w", peer, err)
		log.Error("offer refused", "dist", um.Name, "rev", um.Revision, "err", err)
		s.metrics.refused.WithLabelValues("signature").Inc()
		// A forged offer must not change what status says of a revision
		// held here: only one not held is shown as failed.
		if _, herr := s.store.Signed(um.Name, um.Revision); herr != nil {
			s.update(um, func(st *transport.RevisionState) { st.State, st.Error = StateFailed, err.Error() })
		}
		return um.Name, fmt.Errorf("%w: %v", errRefused, err)
	}
	log = log.With("dist", m.Name, "rev", m.Revision)
	if m.Kind == distribution.KindAgent && m.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		// A build of ted for another platform: not for this node.
		log.Debug("agent for another platform ignored", "platform", m.Platform)
		return m.Name, nil
	}
	channels := s.live.Load().channels
	if !slices.ContainsFunc(m.Channels, func(c string) bool { return slices.Contains(channels, c) }) {
		log.Warn("offer for a channel not subscribed to; ignored", "channels", m.Channels)
		return m.Name, fmt.Errorf("%w: not subscribed", errRefused)
	}
	if newest := s.newest(m.Name); newest > m.Revision {
		err := fmt.Errorf("%w: %s@%d offered by %s is older than %s@%d held here (only rollback goes back)", transport.ErrRollback, m.Name, m.Revision, peer, m.Name, newest)
		log.Error("offer refused", "err", err)
		s.metrics.refused.WithLabelValues("rollback").Inc()
		s.update(m, func(st *transport.RevisionState) { st.State, st.Error = StateFailed, err.Error() })
		return m.Name, fmt.Errorf("%w: %v", errRefused, err)
	}
	if _, err := s.store.Signed(m.Name, m.Revision); err == nil {
		if m.Kind == distribution.KindAgent {
			s.agentStored(ctx, m, log)
			return m.Name, nil
		}
		s.extractAll(s.runCtx, runOnOffer)
		return m.Name, nil
	}
	ids := m.ChunkIDs()
	missing, err := s.store.MissingChunks(ids)
	if err != nil {
		return m.Name, err
	}
	if err := checkDisk(s.cfg.DataDir, s.cfg.MinFreeDisk, m, len(missing), len(ids)); err != nil {
		log.Warn("not receiving", "err", err)
		s.update(m, func(st *transport.RevisionState) { st.State, st.Error = StateFailed, err.Error() })
		return m.Name, err
	}
	log.Info("receiving", "chunks", len(ids), "missing", len(missing))
	var have atomic.Int64
	have.Store(int64(len(ids) - len(missing)))
	var corrupt atomic.Int64
	s.update(m, func(st *transport.RevisionState) {
		st.State, st.Error, st.Reason = StateReceiving, "", ""
		st.Chunks, st.HaveChunks = len(ids), int(have.Load())
	})
	if err := s.fetch(ctx, sess, m, missing, &have, &corrupt, log); err != nil {
		if stopped(ctx, err) {
			return m.Name, err
		}
		if _, paused := transport.RetryAt(err); paused {
			s.update(m, func(st *transport.RevisionState) {
				st.State, st.Reason, st.HaveChunks = StateReceiving, "paused: "+err.Error(), int(have.Load())
			})
			return m.Name, err
		}
		s.update(m, func(st *transport.RevisionState) {
			st.State, st.Error, st.HaveChunks = StateFailed, err.Error(), int(have.Load())
		})
		return m.Name, err
	}
	if _, err := s.store.AddRevision(signed, m); err != nil && !errors.Is(err, store.ErrExists) {
		if stopped(ctx, err) {
			return m.Name, err
		}
		s.update(m, func(st *transport.RevisionState) { st.State, st.Error = StateFailed, err.Error() })
		return m.Name, err
	}
	s.metrics.received.Inc()
	log.Info("revision received", "fetched_chunks", len(missing), "corrupt_refetched", corrupt.Load())
	_, waiting := s.extractWindow()
	s.update(m, func(st *transport.RevisionState) {
		// Received and, outside the extract window, why it waits: in one
		// change, so no one sees it received without its reason.
		st.State, st.HaveChunks, st.Error, st.Reason = StateReceived, len(ids), "", waiting
		if n := corrupt.Load(); n > 0 {
			st.Reason = strings.TrimPrefix(st.Reason+"; ", "; ") + fmt.Sprintf("%d corrupt chunks from %s detected and fetched again", n, peer)
		}
	})
	if m.Kind == distribution.KindAgent {
		s.agentStored(ctx, m, log)
		return m.Name, nil
	}
	s.extractAll(s.runCtx, runOnOffer)
	return m.Name, nil
}

// prune keeps KeepRevisions revisions of name in the store, and forgets
// the states of those removed.
func (s *Subscriber) prune(name string, log *slog.Logger) {
	if pr, err := s.store.Prune(name, s.cfg.KeepRevisions); err != nil {
		log.Error("prune", "err", err)
	} else if len(pr.RemovedRevisions) > 0 {
		s.mu.Lock()
		for _, rev := range pr.RemovedRevisions {
			delete(s.states[name], rev)
		}
		s.mu.Unlock()
	}
}

// agentStored hands a stored agent revision to OnAgent, and shows what
// became of it. Builds are pruned like extracted revisions (the one that
// runs lives in the agent directory, not in the store).
func (s *Subscriber) agentStored(ctx context.Context, m *distribution.Manifest, log *slog.Logger) {
	defer func() {
		s.extractMu.Lock() // as extraction prunes
		s.prune(m.Name, log)
		s.extractMu.Unlock()
	}()
	if s.cfg.OnAgent == nil {
		s.update(m, func(st *transport.RevisionState) {
			st.State, st.Reason, st.Error = StateReceived, "a build of ted, held: this node has no agent block", ""
		})
		return
	}
	state, reason := s.cfg.OnAgent(ctx, m, s.ParentAgent())
	log.Info("agent revision", "version", m.Version, "state", state, "reason", reason)
	s.SetAgentState(m, state, reason)
}

// ParentAgent is the ted version of the parent connected now ("" while
// none is).
func (s *Subscriber) ParentAgent() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.parentAgent
}

// SetAgentState shows the state of agent revision m (the upgrader's
// view after a restart: running, failed, on probation).
func (s *Subscriber) SetAgentState(m *distribution.Manifest, state, reason string) {
	s.update(m, func(st *transport.RevisionState) {
		st.State, st.Reason, st.Error = state, "", ""
		if state == StateFailed {
			st.Error = reason
		} else {
			st.Reason = reason
		}
	})
}

// fetch gets the missing chunks, checkpointing the store as it goes.
func (s *Subscriber) fetch(ctx context.Context, sess transport.Session, m *distribution.Manifest, missing []distribution.ChunkID, have, corrupt *atomic.Int64, log *slog.Logger) error {
	opts := s.cfg.Fetch
	opts.Stored = func(_ distribution.ChunkID, n int) {
		have.Add(1)
		s.metrics.chunks.Inc()
		s.metrics.bytes.Add(float64(n))
	}
	opts.Corrupt = func(id distribution.ChunkID, err error) {
		corrupt.Add(1)
		s.metrics.corrupt.Inc()
		log.Warn("corrupt chunk received; fetching it again", "peer", sess.Peer().Name, "chunk", id.Short(), "err", err)
	}
	opts.CheckpointBytes = s.cfg.CheckpointBytes
	opts.Checkpoint = func() error {
		err := s.store.Sync()
		s.update(m, func(st *transport.RevisionState) { st.HaveChunks = int(have.Load()) })
		return err
	}
	return transport.Fetch(ctx, sess, missing, s.store, opts)
}

// newest returns the newest revision of name held or known here: stored or
// installed.
func (s *Subscriber) newest(name string) uint64 {
	var newest uint64
	if info, err := s.store.Latest(name); err == nil {
		newest = info.Revision
	}
	if inst, ok, err := s.inst.InstalledRevision(name); err == nil && ok {
		newest = max(newest, inst.Revision)
	}
	return newest
}

// extractAll extracts, for every distribution, its newest received revision
// if it is newer than the installed one.
func (s *Subscriber) extractAll(ctx context.Context, run extractRun) {
	s.extractMu.Lock()
	defer s.extractMu.Unlock()
	s.extractAllLocked(ctx, run)
}

// extractAllLocked is extractAll with s.extractMu held.
func (s *Subscriber) extractAllLocked(ctx context.Context, run extractRun) {
	// Each pass plans the waiting revisions in dependency order and
	// extracts the first ready one; the next pass sees it installed, so a
	// dependency arriving in the same run unblocks its dependants in it. A
	// revision that fails is left out of later passes of this run, and of
	// the runs that follow offers until one that retries.
	if s.failedRevs == nil || run != runOnOffer {
		s.failedRevs = map[string]uint64{}
	}
	failed := map[string]bool{}
	// Manifests decoded once per run, not once per pass.
	decoded := map[string]*distribution.Manifest{}
	for ctx.Err() == nil {
		candidates, manifests, installed := s.waiting(failed, s.failedRevs, decoded)
		if len(candidates) == 0 {
			return
		}
		plan := dependency.PlanExtractionReceiving(installed, candidates, s.receivingNames())
		for name, reason := range plan.Blocked {
			m := manifests[name]
			s.update(m, func(st *transport.RevisionState) {
				if st.State != StateFailed {
					st.State, st.Reason = StateBlocked, reason
				}
			})
		}
		if len(plan.Order) == 0 {
			return
		}
		if open, why := s.extractWindow(); !open && run != runNow {
			for _, c := range plan.Order {
				s.update(manifests[c.Name], func(st *transport.RevisionState) {
					if st.State != StateFailed {
						st.State, st.Reason = StateReceived, why
					}
				})
			}
			return
		}
		next := plan.Order[0]
		if !s.extractOne(ctx, manifests[next.Name]) {
			failed[next.Name] = true
			if s.stateOf(next.Name, next.Revision) == StateFailed {
				s.failedRevs[next.Name] = next.Revision
			}
		}
	}
}

// receivingNames are the distributions being received now.
func (s *Subscriber) receivingNames() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := map[string]bool{}
	for name, revs := range s.states {
		for _, st := range revs {
			if st.State == StateReceiving {
				names[name] = true
			}
		}
	}
	return names
}

// waiting returns the newest stored revision of every distribution that
// is newer than the installed one (and neither in skip nor the revision
// failedRevs names), as dependency
// candidates, with their manifests and the installed versions. decoded
// keeps the manifests read, by NAME@REV, for the next call.
func (s *Subscriber) waiting(skip map[string]bool, failedRevs map[string]uint64, decoded map[string]*distribution.Manifest) ([]dependency.Candidate, map[string]*distribution.Manifest, map[string]string) {
	installed := map[string]string{}
	list, err := s.inst.Installed()
	if err != nil {
		s.log.Error("installed records", "err", err)
		return nil, nil, nil
	}
	revs := map[string]uint64{}
	for _, in := range list {
		installed[in.Name], revs[in.Name] = in.Version, in.Revision
	}
	names, err := s.store.Distributions()
	if err != nil {
		s.log.Error("list distributions", "err", err)
		return nil, nil, nil
	}
	var candidates []dependency.Candidate
	manifests := map[string]*distribution.Manifest{}
	for _, name := range names {
		latest, err := s.store.Latest(name)
		if err != nil || skip[name] || latest.Revision <= revs[name] || failedRevs[name] == latest.Revision {
			continue
		}
		if latest.Kind == distribution.KindAgent {
			continue // a build of ted: the upgrader's (OnAgent), never extracted
		}
		if held, err := s.inst.Held(name); err != nil || latest.Revision <= held {
			if err != nil {
				s.log.Error("held revisions", "dist", name, "err", err)
			}
			continue // rolled back by an operator: it waits for a newer one
		}
		ref := fmt.Sprintf("%s@%d", name, latest.Revision)
		m := decoded[ref]
		if m == nil {
			if m, err = s.manifest(name, latest.Revision); err != nil {
				s.log.Error("load manifest", "dist", name, "rev", latest.Revision, "err", err)
				continue
			}
			decoded[ref] = m
		}
		reqs, err := dependency.ParseRequirements(m.Requires)
		if err != nil {
			s.update(m, func(st *transport.RevisionState) { st.State, st.Reason = StateBlocked, err.Error() })
			continue
		}
		manifests[name] = m
		candidates = append(candidates, dependency.Candidate{Name: name, Revision: m.Revision, Version: m.Version, Requires: reqs})
	}
	return candidates, manifests, installed
}

// extractWindow says whether the extract schedule is open now; if not, the
// reason a waiting revision shows.
func (s *Subscriber) extractWindow() (bool, string) {
	sch := s.cfg.Schedules.Lookup(s.cfg.Extract)
	now := s.cfg.Clock.Now()
	if sch.OpenAt(now) {
		return true, ""
	}
	if w, ok := sch.Next(now); ok {
		return false, fmt.Sprintf("waiting for the extract window (%s) opening at %s", s.cfg.Extract, w.Start.UTC().Format(time.RFC3339))
	}
	return false, fmt.Sprintf("the extract schedule %q never opens; ted subscriber extract extracts now", s.cfg.Extract)
}

// windowLoop extracts what waits when an extract window opens, and looks
// again when the schedule file is reloaded.
func (s *Subscriber) windowLoop(ctx context.Context) {
	for {
		changed := s.cfg.Schedules.Changed()
		var opens <-chan time.Time
		var timer schedule.Timer
		sch := s.cfg.Schedules.Lookup(s.cfg.Extract)
		now := s.cfg.Clock.Now()
		// The next opening, also while a window is open: a revision
		// blocked now (a package's prerequisite) is tried again then.
		if w, ok := sch.Next(now); ok && w.Start.After(now) {
			timer = s.cfg.Clock.NewTimer(w.Start.Sub(now))
			opens = timer.C()
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-changed:
		case <-opens:
		}
		if timer != nil {
			timer.Stop()
		}
		s.extractAll(ctx, runRetry)
	}
}

// extractOne installs m, verifies the tree, marks older revisions
// superseded and prunes the store; s.extractMu is held. It reports whether
// m is now extracted.
func (s *Subscriber) extractOne(ctx context.Context, m *distribution.Manifest) bool {
	name := m.Name
	log := s.log.With("dist", name, "rev", m.Revision)
	start := time.Now()
	target := filepath.Join(s.cfg.Root, filepath.FromSlash(m.Target))
	if len(m.Pre) > 0 {
		// A failing pre-action aborts: nothing of the revision is written.
		dir := target
		if _, err := os.Stat(dir); err != nil {
			dir = s.cfg.Root
		}
		if err := runActions(ctx, "pre", m.Pre, m, dir, target, s.cfg.ActionTimeout, s.log, s.fence); err != nil {
			if ctx.Err() == nil && !errors.Is(err, install.ErrFenced) {
				s.metrics.failed.Inc()
				s.update(m, func(st *transport.RevisionState) { st.State, st.Error = StateFailed, err.Error() })
			}
			return false
		}
	}
	var err error
	var skipped []install.SkippedPart
	if m.Kind == distribution.KindPackage {
		var inst *install.Installation
		var blocked string
		inst, blocked, err = s.packageInstallation(ctx, m)
		if blocked != "" {
			// Checked again in the next extract run.
			log.Info("package blocked", "reason", blocked)
			s.update(m, func(st *transport.RevisionState) { st.State, st.Reason, st.Error = StateBlocked, blocked, "" })
			return false
		}
		if err == nil {
			skipped = inst.Skipped
			err = s.inst.InstallParts(ctx, inst, func(ctx context.Context, _ string, _ uint64) error {
				var parts []install.InstalledPart
				for _, p := range inst.Parts {
					parts = append(parts, install.InstalledPart{Component: p.Component, Target: p.M.Target})
				}
				return s.verifyParts(ctx, m, parts)
			})
		}
	} else {
		err = s.inst.InstallParts(ctx, filesInstallation(m), func(ctx context.Context, _ string, _ uint64) error { return s.after(ctx, m) })
	}
	if err != nil {
		if stopped(ctx, err) {
			// Stopping, or no longer allowed to write (a cluster node
			// whose lease ended): the journal carries it on at the next
			// start, here or on the node active then.
			log.Info("extraction stopped; it goes on from the journal", "err", err)
			return false
		}
		log.Error("extraction failed", "err", err)
		s.metrics.failed.Inc()
		s.update(m, func(st *transport.RevisionState) { st.State, st.Error = StateFailed, err.Error() })
		return false
	}
	s.metrics.extracted.Inc()
	files, bytes, _ := m.Totals()
	distinct := len(m.ChunkIDs())
	log.Info("extracted and verified", "target", m.Target, "files", files, "bytes", bytes, "took", time.Since(start).Round(time.Millisecond))
	s.mu.Lock()
	for rev, st := range s.states[name] {
		if rev < m.Revision && (st.State == StateExtracted || st.State == StateReceived || st.State == StateBlocked || st.State == StateRolledBack) {
			st.State, st.Reason = StateSuperseded, ""
		}
	}
	s.mu.Unlock()
	s.update(m, func(st *transport.RevisionState) {
		st.State, st.Error, st.Reason, st.HaveChunks, st.Chunks = StateExtracted, "", partialReason(skipped), distinct, distinct
	})
	s.prune(name, log)
	return true
}

// heldReason is the reason a revision rolled back by an operator shows.
const heldReason = "rolled back by an operator; held until a newer revision arrives"

// Rollback undoes the most recent installation of a distribution (of any,
// without a name; `ted subscriber rollback`). The revisions of it held here
// up to the newest are then rolled_back and not extracted again until a
// newer one arrives. Revisions that wait on others are planned again.
func (s *Subscriber) Rollback(ctx context.Context, name string, force bool) (install.RolledBack, error) {
	s.extractMu.Lock()
	defer s.extractMu.Unlock()
	opts := install.RollbackOptions{Name: name, Force: force}
	if name != "" {
		opts.Hold = s.newest(name)
	} else if hist, err := s.inst.History(); err == nil && len(hist) > 0 {
		opts.Name, opts.Hold = hist[0].Name, s.newest(hist[0].Name)
	}
	res, err := s.inst.Rollback(ctx, opts)
	if err != nil {
		return res, err
	}
	s.metrics.rolledBack.Inc()
	var reason string
	if back, ok, err := s.inst.InstalledRevision(res.Name); err == nil && ok {
		reason = partialReason(back.Skipped)
	}
	s.mu.Lock()
	for rev, st := range s.states[res.Name] {
		switch {
		case rev == res.To:
			st.State, st.Reason, st.Error = StateExtracted, reason, ""
		case rev > res.To && rev <= opts.Hold:
			st.State, st.Reason, st.Error = StateRolledBack, heldReason, ""
		}
		s.setLocked(st)
	}
	s.mu.Unlock()
	s.extractAllLocked(ctx, runRetry)
	return res, nil
}

// ExtractNow extracts every received revision that is newer than the
// installed one, now (`ted subscriber extract`).
func (s *Subscriber) ExtractNow(ctx context.Context) error {
	s.extractAll(ctx, runNow)
	return ctx.Err()
}

// checkDisk refuses to receive when the free space, less what the missing
// chunks will take (estimated from the revision's plain size), would fall
// below the floor: a node never fills its disk.
func checkDisk(dir string, floor int64, m *distribution.Manifest, missing, total int) error {
	if err := store.CheckFree(dir, floor, estimate(m, missing, total)); err != nil {
		return fmt.Errorf("%w: %s@%d: %v; waiting for space", transport.ErrUnavailable, m.Name, m.Revision, err)
	}
	return nil
}

// estimate is the plain size of missing of the total chunks of m.
func estimate(m *distribution.Manifest, missing, total int) int64 {
	if total == 0 {
		return 0
	}
	_, bytes, _ := m.Totals()
	return bytes / int64(total) * int64(missing)
}
