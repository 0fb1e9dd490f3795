package cluster

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"ted/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// oneMember is the gossip of a cluster of one.
type oneMember struct {
	mu   sync.Mutex
	name string
	meta Meta
}

func (o *oneMember) Members() []Member {
	o.mu.Lock()
	defer o.mu.Unlock()
	return []Member{{Name: o.name, Meta: o.meta}}
}
func (o *oneMember) SetMeta(m Meta)           { o.mu.Lock(); o.meta = m; o.mu.Unlock() }
func (o *oneMember) Changed() <-chan struct{} { return nil }

// tableAuthority is the parent's lease table in real time, with a switch
// that cuts the link.
type tableAuthority struct {
	table *transport.Leases
	node  string
	cut   atomic.Bool
}

func (a *tableAuthority) Acquire(context.Context) (Grant, error) {
	if a.cut.Load() {
		return Grant{}, errors.New("cut")
	}
	ans := a.table.Acquire("web", a.node)
	return Grant{Granted: ans.Granted, Holder: ans.Holder, Epoch: ans.Epoch, TTL: a.table.TTL(), RetryIn: time.Until(ans.Until)}, nil
}

func (a *tableAuthority) Release(context.Context) error {
	if a.cut.Load() {
		return errors.New("cut")
	}
	a.table.Release("web", a.node)
	return nil
}

// TestRunStopsActingBeforeTheLeaseEnds: act runs while the node holds the
// lease, and is stopped, once the parent is cut off, while the parent
// still counts the lease as this node's: no other node could have it yet.
func TestRunStopsActingBeforeTheLeaseEnds(t *testing.T) {
	auth := &tableAuthority{table: transport.NewLeases(time.Second, nil), node: "a"}
	cfg := DefaultConfig("a")
	cfg.Margin = 200 * time.Millisecond
	n := NewNode(cfg, &oneMember{name: "a"}, auth)
	started := make(chan uint64, 1)
	stoppedValid := make(chan bool, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- n.Run(ctx, func(ctx context.Context, epoch uint64) error {
			if role, _, problem := n.Status(); role != RoleStandby || !strings.Contains(problem, "cannot act yet") {
				t.Errorf("before act is ready: Status = %s, %q; want standby, saying why", role, problem)
			}
			n.SetReady(epoch, true, "")
			started <- epoch
			<-ctx.Done()
			ok, _, _ := auth.table.Valid("web", "a", epoch)
			stoppedValid <- ok
			return nil
		})
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("act never started")
	}
	if role, active, _ := n.Status(); role != RoleActive || active != "a" {
		t.Errorf("Status = %s, %s", role, active)
	}
	auth.cut.Store(true)
	select {
	case ok := <-stoppedValid:
		if !ok {
			t.Error("act was still running when the parent's lease had ended")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("act never stopped")
	}
	if acting, _ := n.Acting(); acting {
		t.Error("still acting after the lease ran out")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
