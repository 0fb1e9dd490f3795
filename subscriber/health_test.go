package subscriber

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	tedseries "ted/series"
	"ted/transport"
)

// series gathers reg: series.Values, failing the test on an error.
func series(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	out, err := tedseries.Values(reg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestHealthParentRefused: a parent that refuses this node at admission
// makes the health check fail with its name, address and words once the
// round of dials is over, status says the same in parent_error and the
// parent gauge is 0; once the parent lists the node, all is well again.
func TestHealthParentRefused(t *testing.T) {
	p := newFakeParent(t)
	var refuse atomic.Bool
	refuse.Store(true)
	refusal := "not authorised: subscriber web-01 is not a child of any channel of dist-1"
	dial := func(ctx context.Context, addr string) (transport.Session, error) {
		if refuse.Load() {
			return nil, fmt.Errorf("dial %s (dist-1): %w", addr, &transport.RefusedError{Message: refusal})
		}
		return p.dial(ctx, addr)
	}
	d := newDaemon(t)
	s := d.start(dial)

	want := "parent dist-1 (parent) refuses this node: " + refusal
	waitUntil(t, "health failing", func() bool { return s.Health() != nil })
	if err := s.Health(); err.Error() != want {
		t.Fatalf("health %q, want %q", err, want)
	}
	if st := s.Status(); st.Parent != "" || st.ParentError != want {
		t.Fatalf("status parent %q, parent_error %q; want none and %q", st.Parent, st.ParentError, want)
	}
	if got := series(t, s.Registry())["ted_subscriber_parent_connected"]; got != 0 {
		t.Fatalf("ted_subscriber_parent_connected %v while refused, want 0", got)
	}

	refuse.Store(false)
	waitUntil(t, "health passing", func() bool { return s.Health() == nil })
	if st := s.Status(); st.Parent != "parent" || st.ParentError != "" {
		t.Fatalf("status parent %q, parent_error %q; want parent and no error", st.Parent, st.ParentError)
	}
	if got := series(t, s.Registry())["ted_subscriber_parent_connected"]; got != 1 {
		t.Fatalf("ted_subscriber_parent_connected %v while connected, want 1", got)
	}
}

// TestHealthNoParentGrace: a node whose parents do not answer is healthy
// during its first round of dials, then not, and says why.
func TestHealthNoParentGrace(t *testing.T) {
	release := make(chan struct{})
	dialled := make(chan struct{}, 1)
	dial := func(ctx context.Context, addr string) (transport.Session, error) {
		select {
		case dialled <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("dial %s: no answer (is the node up and its UDP port open?)", addr)
	}
	d := newDaemon(t)
	s := d.start(dial)
	<-dialled
	// The first dial is under way: not yet a fault.
	if err := s.Health(); err != nil {
		t.Fatalf("health during the first round of dials: %v, want nil", err)
	}
	close(release)
	waitUntil(t, "health failing", func() bool { return s.Health() != nil })
	if err := s.Health(); !strings.Contains(err.Error(), "parent unreachable: dial parent: no answer") {
		t.Fatalf("health %q, want the parent unreachable and why", err)
	}
}

// TestHealthDiskFloor: below min_free_disk the node is unhealthy, and the
// disk gauges show the free space and the floor.
func TestHealthDiskFloor(t *testing.T) {
	p := newFakeParent(t)
	d := newDaemon(t)
	d.cfg.DataDir = t.TempDir()
	d.cfg.MinFreeDisk = 1 << 62 // more than any disk has
	s := d.start(p.dial)
	waitUntil(t, "connected", func() bool { return s.Status().Parent != "" })
	err := s.Health()
	if err == nil || !strings.Contains(err.Error(), "short of disk") || !strings.Contains(err.Error(), fmt.Sprint(int64(1<<62))) {
		t.Fatalf("health %v, want short of disk below the floor", err)
	}
	got := series(t, s.Registry())
	if got["ted_disk_floor_bytes"] != 1<<62 || got["ted_disk_free_bytes"] <= 0 {
		t.Fatalf("disk gauges free %v floor %v, want > 0 and 2^62", got["ted_disk_free_bytes"], got["ted_disk_floor_bytes"])
	}
}

// TestMetricsRevisionStates: ted_subscriber_revisions counts the
// revisions by state, every state present.
func TestMetricsRevisionStates(t *testing.T) {
	p := newFakeParent(t)
	s1, _ := p.publish(daemonKey(), appRev1(), 1)
	p.setGreet(s1)
	d := newDaemon(t)
	s := d.start(p.dial)
	waitState(t, s.Subscriber, "app", 1, StateExtracted)
	s2, _ := p.publish(daemonKey(), appRev2(), 2)
	p.offer(s2)
	waitState(t, s.Subscriber, "app", 2, StateExtracted)
	got := series(t, s.Registry())
	for state, want := range map[string]float64{StateExtracted: 1, StateSuperseded: 1, StateFailed: 0, StateBlocked: 0, StateReceiving: 0} {
		key := `ted_subscriber_revisions{state=` + state + `}`
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	if err := s.Health(); err != nil {
		t.Errorf("health %v, want nil", err)
	}
}
