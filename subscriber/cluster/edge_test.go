// Split-brain and liveness cases found by a second reading, each a test
// that failed before its fix.

package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ted/transport"
)

// twoMembers: this node "a" and a peer "b" whose meta the test sets.
type twoMembers struct {
	mu      sync.Mutex
	a, b    Meta
	changed chan struct{}
}

func (m *twoMembers) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return []Member{{Name: "a", Meta: m.a}, {Name: "b", Meta: m.b}}
}
func (m *twoMembers) SetMeta(x Meta) { m.mu.Lock(); m.a = x; m.mu.Unlock() }
func (m *twoMembers) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}
func (m *twoMembers) setB(x Meta) {
	m.mu.Lock()
	m.b = x
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
}

// releaseProbe is the table; on Release it records whether act was still
// running, and whether b could then get the lease.
type releaseProbe struct {
	tableAuthority
	actRunning *atomic.Bool
	bot        chan [2]bool
}

func (r *releaseProbe) Release(ctx context.Context) error {
	err := r.tableAuthority.Release(ctx)
	running := r.actRunning.Load()
	g := r.table.Acquire("web", "b")
	r.bot <- [2]bool{running, g.Granted}
	return err
}

// A node that is no longer elected must stop act before it gives the
// lease up; Node.step releases first and Run stops act afterwards.
func TestReleaseOnlyAfterActStops(t *testing.T) {
	table := readyTable(time.Second)
	var running atomic.Bool
	auth := &releaseProbe{tableAuthority: tableAuthority{table: table, node: "a"}, actRunning: &running, bot: make(chan [2]bool, 4)}
	ms := &twoMembers{b: Meta{Priority: 20, Healthy: true}, changed: make(chan struct{})}
	cfg := DefaultConfig("a")
	cfg.Priority, cfg.Margin = 10, 200*time.Millisecond // of a 1 s lease
	n := NewNode(cfg, ms, auth)
	started := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error)
	go func() {
		done <- n.Run(ctx, func(ctx context.Context, _ uint64) error {
			running.Store(true)
			started <- struct{}{}
			<-ctx.Done()
			time.Sleep(100 * time.Millisecond) // finishing a write, closing the store
			running.Store(false)
			return nil
		})
	}()
	<-started
	ms.setB(Meta{Priority: 20, Healthy: true, HandoverTo: "b", HandoverSeq: 1}) // b is now elected
	r := <-auth.bot
	if r[0] && r[1] {
		t.Errorf("a released the lease (and b was granted it) while a's act was still running")
	}
	cancel()
	<-done
}

// A renewal that hangs (dial into a black hole: LeaseClient waits up to
// leaseTimeout) keeps Run inside step past the local lease end, so act
// is not stopped until after the parent's lease has expired.
type hangingAuthority struct {
	tableAuthority
	calls atomic.Int32
}

func (h *hangingAuthority) Acquire(ctx context.Context) (Grant, error) {
	switch h.calls.Add(1) {
	case 1:
		return h.tableAuthority.Acquire(ctx)
	case 2:
		time.Sleep(500 * time.Millisecond) // a quick failure
		return Grant{}, errors.New("connection refused")
	default:
		time.Sleep(leaseTimeout) // the redial hangs until the timeout
		return Grant{}, context.DeadlineExceeded
	}
}

func TestHangingRenewalDoesNotOverrunTheLease(t *testing.T) {
	table := readyTable(6 * time.Second)
	auth := &hangingAuthority{tableAuthority: tableAuthority{table: table, node: "a"}}
	n := NewNode(DefaultConfig("a"), &oneMember{name: "a"}, auth)
	validAtStop := make(chan bool, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- n.Run(ctx, func(ctx context.Context, epoch uint64) error {
			<-ctx.Done()
			ok, _, _ := table.Valid("web", "a", epoch)
			validAtStop <- ok
			return nil
		})
	}()
	if !<-validAtStop {
		t.Error("act was still running after the parent's lease had expired (another node could hold it)")
	}
	cancel()
	<-done
}

// The handover is remembered only by the node it was asked on: when that
// node goes (the usual reason for a handover), the election falls back to
// priorities and the target loses the role again.
func TestHandoverOutlivesTheNodeItWasAskedOn(t *testing.T) {
	s := newSim(t, map[string]int{"a": 10, "b": 30, "c": 20}, drifting)
	s.waitActive("a", 20*time.Second)
	if err := s.nodes["a"].node.Handover("b"); err != nil {
		t.Fatal(err)
	}
	s.waitActive("b", 20*time.Second)
	s.kill("a") // maintenance on a, the reason for the handover
	s.run(30 * time.Second)
	if got := s.active(); got != "b" {
		t.Errorf("after the handover to b and a's shutdown, %q is active", got)
	}
}

// Two processes with the same node name (a copied config) that do not
// gossip with each other: the parent holds the lease by node and process
// instance, so only one gets it.
func TestSameNodeNameTwoProcesses(t *testing.T) {
	table := readyTable(time.Second)
	// As the parent sees them: node and process instance (LeaseClient).
	cfg := DefaultConfig("a")
	cfg.Margin = 200 * time.Millisecond // of a 1 s lease
	n1 := NewNode(cfg, &oneMember{name: "a"}, &tableAuthority{table: table, node: "a#" + NewInstance()})
	n2 := NewNode(cfg, &oneMember{name: "a"}, &tableAuthority{table: table, node: "a#" + NewInstance()})
	n1.step(context.Background())
	n2.step(context.Background())
	a1, _ := n1.Acting()
	a2, _ := n2.Acting()
	if a1 && a2 {
		t.Error("two processes named a both act")
	}
}

// readyTable is a lease table whose grace period after a start is over.
func readyTable(ttl time.Duration) *transport.Leases {
	var offset atomic.Int64
	table := transport.NewLeases(ttl, func() time.Time { return time.Now().Add(time.Duration(offset.Load())) })
	offset.Store(int64(ttl + time.Millisecond))
	return table
}
