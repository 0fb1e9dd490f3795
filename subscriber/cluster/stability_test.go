package cluster

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestElectKeepsTheHolder(t *testing.T) {
	tests := []struct {
		name    string
		members []Member
		want    string
	}{
		{"no holder: lowest priority", []Member{
			{"a", Meta{Priority: 10, Healthy: true}}, {"b", Meta{Priority: 20, Healthy: true}}}, "a"},
		{"a healthy holder stays, whatever the priorities", []Member{
			{"a", Meta{Priority: 10, Healthy: true}}, {"b", Meta{Priority: 20, Healthy: true, Active: true, Epoch: 3, Until: 2000}}}, "b"},
		{"of two claiming holders, the latest epoch", []Member{
			{"a", Meta{Priority: 10, Healthy: true, Active: true, Epoch: 2, Until: 2000}}, {"b", Meta{Priority: 20, Healthy: true, Active: true, Epoch: 3, Until: 2000}}}, "b"},
		{"a holder whose gossiped lease has ended does not (it hangs)", []Member{
			{"a", Meta{Priority: 10, Healthy: true}}, {"b", Meta{Priority: 20, Healthy: true, Active: true, Epoch: 3, Until: 900}}}, "a"},
		{"an unhealthy holder does not", []Member{
			{"a", Meta{Priority: 10, Healthy: true}}, {"b", Meta{Priority: 20, Active: true, Epoch: 3, Until: 2000}}}, "a"},
		{"a handover wins over the holder", []Member{
			{"a", Meta{Priority: 10, Healthy: true, HandoverTo: "c", HandoverSeq: 1}}, {"b", Meta{Priority: 20, Healthy: true, Active: true, Epoch: 3, Until: 2000}},
			{"c", Meta{Priority: 30, Healthy: true}}}, "c"},
	}
	for _, tt := range tests {
		if got := Elect(tt.members, time.UnixMilli(1000)); got != tt.want {
			t.Errorf("%s: Elect = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// gatedAuthority holds every request while its gate is shut.
type gatedAuthority struct {
	*tableAuthority
	mu   sync.Mutex
	gate chan struct{} // nil: open
}

func (g *gatedAuthority) Acquire(ctx context.Context) (Grant, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return g.tableAuthority.Acquire(ctx)
}

// A node whose lease ended by its own clock while nothing was wrong with
// it (a pause) is stopped, but not marked unhealthy: it may be elected
// again at once, and the role does not move away and back.
func TestLeaseEndByPauseIsNotUnhealthy(t *testing.T) {
	auth := &gatedAuthority{tableAuthority: &tableAuthority{table: readyTable(6 * time.Second), node: "a"}}
	var offset atomic.Int64
	cfg := DefaultConfig("a")
	cfg.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	members := &oneMember{name: "a"}
	n := NewNode(cfg, members, auth)
	started, stopped := make(chan uint64, 4), make(chan struct{}, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- n.Run(ctx, func(ctx context.Context, epoch uint64) error {
			n.SetReady(epoch, true, "")
			started <- epoch
			<-ctx.Done()
			stopped <- struct{}{}
			return nil
		})
	}()
	first := <-started
	// The node's clock jumps past its lease, as after a SIGSTOP, while
	// its next request is held: the watchdog stops act. Then the request
	// goes (the parent still counts the lease as the node's: a renewal).
	gate := make(chan struct{})
	auth.mu.Lock()
	auth.gate = gate
	auth.mu.Unlock()
	offset.Store(int64(10 * time.Second))
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("act was not stopped when the lease ended by the node's clock")
	}
	auth.mu.Lock()
	auth.gate = nil
	auth.mu.Unlock()
	close(gate)
	select {
	case again := <-started:
		if again != first {
			t.Errorf("epoch %d after the pause, want %d (a renewal)", again, first)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("act never started again after the pause")
	}
	members.mu.Lock()
	healthy := members.meta.Healthy
	members.mu.Unlock()
	if !healthy {
		t.Error("the node marked itself unhealthy after its lease ended by a pause")
	}
	cancel()
	<-done
}

// A node that sees the holder ask another lease authority (two parents
// could each grant the lease) stays standby, saying why.
func TestOtherAuthorityStaysStandby(t *testing.T) {
	ms := &twoMembers{b: Meta{Priority: 20, Healthy: true, Auth: "10.0.0.2:7400", Active: true, Epoch: 3,
		Until: time.Now().Add(time.Hour).UnixMilli()}, changed: make(chan struct{})}
	cfg := DefaultConfig("a")
	cfg.Priority, cfg.Authority = 10, "10.0.0.1:7400"
	auth := &tableAuthority{table: readyTable(6 * time.Second), node: "a"}
	n := NewNode(cfg, ms, auth)
	for range 3 {
		n.step(context.Background())
	}
	role, _, problem := n.Status()
	if role != RoleStandby || !strings.Contains(problem, "10.0.0.2:7400") || !strings.Contains(problem, "same first parent") {
		t.Errorf("Status = %s, %q; want standby naming the other authority", role, problem)
	}
	if acting, _ := n.Acting(); acting || auth.table.Holder("web") != "" {
		t.Error("a node that sees another authority asked for the lease")
	}
}
