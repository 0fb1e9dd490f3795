package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"ted/transport"
)

// Grant is a lease authority's answer.
type Grant struct {
	Granted bool
	Holder  string
	Epoch   uint64
	// TTL is how long a grant lasts from when the authority received the
	// request; RetryIn, when refused, how long before it may be granted.
	TTL, RetryIn time.Duration
}

// Authority grants the cluster's lease: the parent distributor
// (LeaseClient), or a table in tests.
type Authority interface {
	Acquire(ctx context.Context) (Grant, error)
	Release(ctx context.Context) error
}

// Membership is the gossip as a node sees it.
type Membership interface {
	// Members returns the live members, this node included.
	Members() []Member
	// SetMeta changes what this node gossips about itself.
	SetMeta(Meta)
	// Changed is closed when the members or their meta change.
	Changed() <-chan struct{}
}

// Config tunes a Node.
type Config struct {
	Node     string
	Priority int
	// Agent, if set, says the ted version this node runs, whether it is
	// on probation and which newer one failed here, gossiped (Meta.Agent,
	// Meta.Probation, Meta.AgentFailed).
	Agent func() (version string, probation bool, failed string)
	// Drift bounds how much faster or slower this node's clock may run
	// than the authority's (0.01: 1 %).
	Drift float64
	// Margin is how long before its lease could end a node stops acting:
	// the time to stop what it does.
	Margin time.Duration
	// Unhealthy is how long a node that could not reach the authority
	// says it is unhealthy, so that another is elected.
	Unhealthy time.Duration
	// Health, if set, reports whether this node could act now (the shared
	// directory is reachable); nil is healthy.
	Health func() error
	// Authority names the lease authority this node asks (its first
	// parent's address). Every node of a cluster must ask the same one:
	// two authorities could each grant the lease. A node that sees a
	// member naming another stays standby and says why.
	Authority string
	// NoFence is for tests only: act is not stopped when the lease ends,
	// to show what the fencing prevents.
	NoFence bool
	// Now is the node's monotonic clock; nil: time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// DefaultConfig returns the defaults for node.
func DefaultConfig(node string) Config {
	return Config{
		Node: node,
		// 1 %: far more than NTP-disciplined or free-running clocks
		// drift over a lease's few seconds.
		Drift: 0.01,
		// One second to stop: cancel the extraction at its next file,
		// close the store (badger flushes its memtable).
		Margin: time.Second,
		// Long enough for the gossip to elect another node that may
		// reach the authority; short, as with the authority down for
		// every node (a parent restart) none can, and this one should
		// ask again soon.
		Unhealthy: 3 * time.Second,
	}
}

// Role is what a node is now.
type Role string

// Roles, as `ted subscriber status` shows them.
const (
	RoleActive  Role = "active"
	RoleStandby Role = "standby"
)

// Node runs one node's part of the election: it asks for the lease when the
// gossip elects it, renews it, and acts (Run's act) only while it holds it.
type Node struct {
	cfg  Config
	ms   Membership
	auth Authority
	log  *slog.Logger

	mu sync.Mutex
	// lease: held under epoch until (local clock), renewed from renewAt.
	epoch          uint64
	until, renewAt time.Time
	retryAt        time.Time // a refused request is not repeated before
	unhealthyUntil time.Time
	problem        string // why this node cannot be active, for status
	// leaseProblem is why the last lease request failed; it stays until
	// one succeeds, so status does not flicker between requests.
	leaseProblem string
	handover     Meta // the handover asked on this node
	meta         Meta // last gossiped
	metaSet      bool
	// pendingRelease: the node stood down; the lease is given back once
	// act has stopped (finishRelease), never before.
	pendingRelease bool
	// leaseEnd is when the lease ends by the local clock, less the drift
	// bound but not the margin: changes to the shared directory are
	// allowed until then (LeaseValid), act is stopped Margin before.
	// standingDown is the epoch of a lease given up by an election
	// (its act stopping), valid for the fence until released.
	leaseEnd     time.Time
	standingDown uint64
	// acting is the run of act now, if any (Interrupt).
	acting *actor

	// The health check in flight, if any, and the last one's result.
	healthMu    sync.Mutex
	healthDone  chan struct{}
	healthStart time.Time
	healthErr   error
	// ready is the epoch under which act said it can act (SetReady);
	// waiting says what it waits for until then.
	ready   uint64
	waiting string
	wake    chan struct{}
}

// NewNode returns a node of a cluster.
func NewNode(cfg Config, ms Membership, auth Authority) *Node {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Node{cfg: cfg, ms: ms, auth: auth, log: cfg.Log, wake: make(chan struct{}, 1)}
}

// holding reports whether the lease is valid now by the local clock; mu
// is held.
func (n *Node) holding(now time.Time) bool {
	return n.epoch != 0 && now.Before(n.until)
}

// Acting reports whether the node holds the lease now, and under which
// epoch.
func (n *Node) Acting() (bool, uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.holding(n.cfg.Now()) {
		return true, n.epoch
	}
	return false, 0
}

// SetReady says whether act, running under epoch, can act now (its store
// is open); if not, waiting says what it waits for. Until act says it is
// ready the node is standby in Status, with waiting as its problem.
func (n *Node) SetReady(epoch uint64, ready bool, waiting string) {
	n.mu.Lock()
	if ready {
		n.ready, n.waiting = epoch, ""
	} else {
		n.ready, n.waiting = 0, waiting
	}
	n.mu.Unlock()
	n.poke() // gossip it
}

// Interrupt stops the run of act under epoch, as the watchdog would: the
// node is not marked unhealthy, and act starts again if the lease still
// holds. act calls it when a change it was about to make was refused by
// its fence: its work is then in an unknown state, which the next run
// recovers from the journal.
func (n *Node) Interrupt(epoch uint64) {
	n.mu.Lock()
	a := n.acting
	n.mu.Unlock()
	if a != nil && a.epoch == epoch {
		a.cancel()
	}
	n.poke()
}

// LeaseValid reports whether this node still holds the lease of epoch by
// its own clock, also while it stands down and until it releases it: the
// fence of the shared directory asks it before every change, and act stops
// Margin before it ends.
func (n *Node) LeaseValid(epoch uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return epoch != 0 && (n.epoch == epoch || n.standingDown == epoch) && n.cfg.Now().Before(n.leaseEnd)
}

// Status says what this node is and which node the gossip says is active:
// active only while it holds the lease and act said it can act.
func (n *Node) Status() (role Role, active, problem string) {
	acting, epoch := n.Acting()
	n.mu.Lock()
	problem = n.problem
	if problem == "" {
		problem = n.leaseProblem
	}
	ready, waiting := n.ready == epoch, n.waiting
	n.mu.Unlock()
	if acting && ready {
		return RoleActive, n.cfg.Node, problem
	}
	if acting {
		if waiting == "" {
			waiting = "starting"
		}
		return RoleStandby, activeOf(n.ms.Members()), fmt.Sprintf("holds the lease (epoch %d) but cannot act yet: %s", epoch, waiting)
	}
	return RoleStandby, activeOf(n.ms.Members()), problem
}

// Handover asks that node to be active: it wins the election while it is
// healthy, until another handover. The active node then releases the
// lease and node takes it.
func (n *Node) Handover(node string) error {
	if !slices.ContainsFunc(n.ms.Members(), func(m Member) bool { return m.Name == node }) {
		return fmt.Errorf("handover to %s: no such live member of the cluster", node)
	}
	// Later than any request the members know, whatever the clocks say:
	// the latest request wins.
	seq := time.Now().UnixNano()
	for _, m := range n.ms.Members() {
		seq = max(seq, m.Meta.HandoverSeq+1)
	}
	n.mu.Lock()
	n.handover = Meta{HandoverTo: node, HandoverSeq: seq}
	n.mu.Unlock()
	n.poke()
	return nil
}

func (n *Node) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// step runs one round of the election: it gossips this node's state, asks
// for or renews the lease if elected, gives it up if not, and returns how
// long until the next round is due.
func (n *Node) step(ctx context.Context) time.Duration {
	now := n.cfg.Now()
	members := n.ms.Members()
	n.mu.Lock()
	// Every node carries the latest handover it has seen, so the request
	// outlives the node it was asked on.
	for _, m := range members {
		if m.Meta.HandoverTo != "" && m.Meta.HandoverSeq > n.handover.HandoverSeq {
			n.handover = Meta{HandoverTo: m.Meta.HandoverTo, HandoverSeq: m.Meta.HandoverSeq}
		}
	}
	n.mu.Unlock()
	// Health may hang (a shared directory on a lost network mount): never
	// under n.mu, which every change's fence check takes.
	healthErr := n.health()
	n.mu.Lock()
	healthy := now.After(n.unhealthyUntil) || now.Equal(n.unhealthyUntil)
	if healthErr != nil {
		healthy = false
		n.problem = healthErr.Error()
	} else if healthy {
		n.problem = ""
	}
	if other := otherAuthority(members, n.cfg.Node, n.cfg.Authority); other != "" {
		// The holder asks another authority: this node stays out of it.
		// A holder itself keeps acting and says so: standing down would
		// leave the cluster with no active node for a config mistake.
		n.problem = other
		if !n.holding(now) {
			healthy = false
		}
	}
	meta := Meta{Priority: n.cfg.Priority, Healthy: healthy, HandoverTo: n.handover.HandoverTo, HandoverSeq: n.handover.HandoverSeq,
		Auth: n.cfg.Authority}
	if n.cfg.Agent != nil {
		meta.Agent, meta.Probation, meta.AgentFailed = n.cfg.Agent()
	}
	if n.holding(now) {
		meta.Active, meta.Epoch, meta.Ready, meta.Until = true, n.epoch, n.ready == n.epoch, n.until.UnixMilli()
	}
	changed := !n.metaSet || meta != n.meta
	n.meta, n.metaSet = meta, true
	n.mu.Unlock()
	if changed {
		n.ms.SetMeta(meta)
	}

	elected := Elect(n.ms.Members(), now) == n.cfg.Node && healthy
	n.mu.Lock()
	holding := n.holding(now)
	due := !holding || !now.Before(n.renewAt)
	n.mu.Unlock()
	switch {
	case elected && due && !now.Before(n.retryAt):
		n.acquire(ctx)
	case !elected && holding:
		// Stand down: stop acting now; the lease goes back to the parent
		// only once act has stopped (finishRelease).
		n.mu.Lock()
		n.log.Info("no longer elected: standing down", "epoch", n.epoch)
		n.standingDown, n.epoch, n.pendingRelease = n.epoch, 0, true
		n.mu.Unlock()
	}
	return n.next()
}

// healthTimeout is how long a health check may take before the node counts
// itself unhealthy (it goes on in the background).
const healthTimeout = 2 * time.Second

// health runs cfg.Health, at most one at a time, waiting for it at most
// healthTimeout: a check that hangs makes the node unhealthy, not stuck.
func (n *Node) health() error {
	if n.cfg.Health == nil {
		return nil
	}
	n.healthMu.Lock()
	if n.healthDone == nil {
		done := make(chan struct{})
		n.healthDone, n.healthStart = done, time.Now()
		go func() {
			err := n.cfg.Health()
			n.healthMu.Lock()
			n.healthErr, n.healthDone = err, nil
			n.healthMu.Unlock()
			close(done)
		}()
	}
	done, start := n.healthDone, n.healthStart
	n.healthMu.Unlock()
	select {
	case <-done:
		n.healthMu.Lock()
		defer n.healthMu.Unlock()
		return n.healthErr
	case <-time.After(healthTimeout - time.Since(start)):
		return fmt.Errorf("the health check (shared_dir) has not answered for %v", time.Since(start).Round(time.Second))
	}
}

// otherAuthority says, if the member holding the lease asks another lease
// authority than mine, which and what to do; "" if none does. Only the
// holder counts: a standby with a mistyped parent must not stop the
// cluster.
func otherAuthority(members []Member, self, mine string) string {
	for _, m := range members {
		if m.Name != self && m.Meta.Active && m.Meta.Auth != "" && mine != "" && m.Meta.Auth != mine {
			return fmt.Sprintf("node %s asks %s for the cluster's lease and this node asks %s: two parents could each grant it; "+
				"give every node of the cluster the same first parent (this node stays standby until then)", m.Name, m.Meta.Auth, mine)
		}
	}
	return ""
}

// finishRelease gives the lease back after a stand-down, once act has
// stopped: the next node need not wait for it to expire.
func (n *Node) finishRelease(ctx context.Context) {
	n.mu.Lock()
	pending := n.pendingRelease
	n.pendingRelease = false
	n.mu.Unlock()
	if pending {
		n.release(ctx)
	}
}

// acquire asks for the lease or renews it.
func (n *Node) acquire(ctx context.Context) {
	sent := n.cfg.Now()
	g, err := n.auth.Acquire(ctx)
	now := n.cfg.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return
		}
		n.retryAt = now.Add(time.Second)
		if !n.holding(now) {
			// Cut from the authority: let the gossip elect another.
			n.unhealthyUntil = now.Add(n.cfg.Unhealthy)
			n.leaseProblem = leaseFailure(err)
			n.log.Warn("lease request failed; standing down", "err", err)
		} else {
			n.log.Warn("lease renewal failed; will retry while the lease lasts", "err", err)
		}
	case g.Granted:
		if n.epoch != g.Epoch {
			n.log.Info("lease granted: active", "epoch", g.Epoch, "ttl", g.TTL)
		}
		// Counted from before the request left, shortened by the drift
		// bound and the margin: the authority counts from receipt.
		valid := time.Duration(float64(g.TTL) * (1 - n.cfg.Drift))
		n.epoch, n.until, n.renewAt = g.Epoch, sent.Add(valid-n.cfg.Margin), sent.Add(g.TTL/3)
		n.leaseEnd, n.standingDown = sent.Add(valid), 0
		n.retryAt, n.problem, n.leaseProblem = time.Time{}, "", ""
	default:
		// The authority says when the holder's lease ends, but a holder
		// may give it up before (a handover, an upgrade): an elected node
		// asks again within leaseRetryMax rather than waiting it out.
		n.retryAt = now.Add(min(max(g.RetryIn, 500*time.Millisecond), leaseRetryMax))
		if n.holding(now) {
			// Someone else holds it: our lease is gone at the authority.
			n.log.Warn("lease lost to another node", "holder", g.Holder)
			n.epoch, n.standingDown = 0, 0
		}
	}
}

// leaseRetryMax bounds how long a node elected but refused the lease waits
// before it asks again.
const leaseRetryMax = time.Second

// leaseFailure says why a lease request failed, for status: refused by the
// parent (this node's certificate or cluster is not allowed: it waits for
// a config change), or the parent could not be reached.
func leaseFailure(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, transport.ErrUnauthorized.Error()); errors.Is(err, transport.ErrUnauthorized) || i >= 0 {
		if i >= 0 {
			msg = msg[i:] // the parent's own words, without the transport's wrapping
		}
		return "the lease authority refused this node: " + msg
	}
	return "cannot reach the lease authority: " + msg
}

// release gives the lease up; act has stopped.
func (n *Node) release(ctx context.Context) {
	n.mu.Lock()
	n.epoch, n.standingDown, n.leaseEnd = 0, 0, time.Time{}
	n.mu.Unlock()
	err := n.auth.Release(ctx)
	if err != nil && ctx.Err() == nil {
		// Once more, on a new session: the old one may have ended with
		// the work that just stopped.
		err = n.auth.Release(ctx)
	}
	if err != nil && ctx.Err() == nil {
		n.log.Warn("lease release failed; it expires instead", "err", err)
	}
}

// next is how long until the next round is due.
func (n *Node) next() time.Duration {
	now := n.cfg.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	wait := 500 * time.Millisecond
	for _, t := range []time.Time{n.until, n.renewAt, n.retryAt} {
		if d := t.Sub(now); d > 0 && d < wait {
			wait = d
		}
	}
	return wait
}

// actor is one run of act, under one lease.
type actor struct {
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	epoch  uint64
}

// Run runs the node until ctx ends: act runs, under a context that ends
// before the lease can, while this node holds the lease; it is started
// again at the next lease. An act that returns by itself (an error) makes
// the node stand down for a while. Run returns once act has returned.
func (n *Node) Run(ctx context.Context, act func(ctx context.Context, epoch uint64) error) error {
	var cur *actor
	stop := func() {
		if cur != nil {
			cur.cancel()
			<-cur.done
			cur = nil
		}
	}
	defer stop()
	for {
		wait := n.step(ctx)
		acting, epoch := n.Acting()
		if cur != nil {
			select {
			case <-cur.done:
				stopped := cur.ctx.Err() != nil // by the watchdog: the lease ended
				cur.cancel()
				cur = nil
				if !stopped {
					// act gave up by itself: stand down, so another can
					// try. A node stopped because its lease ended (after
					// a pause, say) has nothing wrong with it, and is not
					// marked: that would move the role away and back.
					n.mu.Lock()
					n.unhealthyUntil = n.cfg.Now().Add(n.cfg.Unhealthy)
					n.mu.Unlock()
					if acting {
						n.release(ctx)
					}
					acting = false
				}
			default:
			}
		}
		if cur != nil && (!acting || epoch != cur.epoch) && !n.cfg.NoFence {
			n.log.Info("stopping: the lease is ending", "epoch", cur.epoch)
			stop()
		}
		if cur == nil {
			n.finishRelease(ctx) // act has stopped
		}
		if acting && cur == nil {
			actCtx, cancel := context.WithCancel(ctx)
			cur = &actor{ctx: actCtx, cancel: cancel, done: make(chan struct{}), epoch: epoch}
			n.mu.Lock()
			n.acting = cur
			n.mu.Unlock()
			n.SetReady(epoch, false, "starting")
			go n.watchdog(actCtx, cur)
			go func(a *actor) {
				defer close(a.done)
				if err := act(actCtx, a.epoch); err != nil && actCtx.Err() == nil {
					n.log.Error("acting failed", "err", err)
					n.mu.Lock()
					n.problem = err.Error()
					n.mu.Unlock()
				}
			}(cur)
		}
		var finished <-chan struct{}
		if cur != nil {
			finished = cur.done
		}
		t := time.NewTimer(wait)
		select {
		case <-finished:
		case <-ctx.Done():
			t.Stop()
			stop()
			if acting {
				n.release(context.WithoutCancel(ctx))
			}
			return nil
		case <-t.C:
		case <-n.ms.Changed():
		case <-n.wake:
		}
		t.Stop()
	}
}

// watchdog cancels a's context when its lease ends by the local clock, or
// is lost, whatever the Run loop is doing (a lease request may hang for
// seconds): act never outlives the lease.
func (n *Node) watchdog(ctx context.Context, a *actor) {
	if n.cfg.NoFence {
		return
	}
	for {
		n.mu.Lock()
		until, epoch := n.until, n.epoch
		n.mu.Unlock()
		left := until.Sub(n.cfg.Now())
		if epoch != a.epoch || left <= 0 {
			a.cancel()
			return
		}
		t := time.NewTimer(min(left, 100*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// ErrStandby is returned for what only the active node does.
var ErrStandby = errors.New("this node is standby")
