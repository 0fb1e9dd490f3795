package cluster

import (
	"context"
	"testing"
	"time"
)

// A standby that joins naming another first parent (a typo in its config)
// does not make the node that holds the lease stand down: only the holder's
// authority counts, and the holder says what is wrong.
func TestMisconfiguredStandbyDoesNotStopTheHolder(t *testing.T) {
	ms := &twoMembers{b: Meta{Priority: 20, Healthy: true, Auth: "parent:7400"}, changed: make(chan struct{})}
	cfg := DefaultConfig("a")
	cfg.Priority, cfg.Authority = 10, "parent:7400"
	auth := &tableAuthority{table: readyTable(6 * time.Second), node: "a"}
	n := NewNode(cfg, ms, auth)
	for range 3 {
		n.step(context.Background())
	}
	if acting, _ := n.Acting(); !acting {
		t.Fatal("a did not get the lease")
	}
	ms.setB(Meta{Priority: 20, Healthy: true, Auth: "10.0.0.1:7400"})
	for range 3 {
		n.step(context.Background())
	}
	if acting, _ := n.Acting(); !acting {
		_, _, problem := n.Status()
		t.Errorf("the active node stood down because a standby names another parent: %s", problem)
	}
}

// A health check that hangs (shared_dir on a lost network mount) neither
// blocks the fence's lease check nor the election round: the round comes
// back unhealthy within the health timeout.
func TestHangingHealthCheck(t *testing.T) {
	ms := &oneMember{name: "a"}
	cfg := DefaultConfig("a")
	unhang := make(chan struct{})
	defer close(unhang)
	cfg.Health = func() error {
		<-unhang
		return nil
	}
	n := NewNode(cfg, ms, &tableAuthority{table: readyTable(6 * time.Second), node: "a"})
	stepped := make(chan struct{})
	go func() {
		n.step(context.Background())
		close(stepped)
	}()
	valid := make(chan bool)
	go func() { valid <- n.LeaseValid(1) }()
	select {
	case <-valid:
	case <-time.After(healthTimeout / 2):
		t.Error("LeaseValid (the fence's check) waits for a hanging health check")
	}
	select {
	case <-stepped:
	case <-time.After(2 * healthTimeout):
		t.Fatal("the election round waits for a hanging health check")
	}
	ms.mu.Lock()
	meta := ms.meta
	ms.mu.Unlock()
	if meta.Healthy {
		t.Error("a node whose health check hangs says it is healthy")
	}
	if _, _, problem := n.Status(); problem == "" {
		t.Error("status does not say why")
	}
}
