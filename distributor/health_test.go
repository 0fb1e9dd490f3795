package distributor_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"ted/transport"
)

// waitHealth polls the distributor's health until ok says it is the one
// wanted, failing the test after waitLimit.
func waitHealth(t *testing.T, n *node, what string, ok func(error) bool) error {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		err := n.d.Health()
		if ok(err) {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; health %v", what, waitLimit, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHealthLowerTierRefusedByParent: a lower tier that its parent refuses
// is unhealthy with the parent's words, and its status says them; a first
// tier is healthy with no parent at all.
func TestHealthLowerTierRefusedByParent(t *testing.T) {
	refusal := "not authorised: distributor dist-1 is not a child of any channel of dist-0"
	dial := func(_ context.Context, addr string) (transport.Session, error) {
		return nil, fmt.Errorf("dial %s (dist-0): %w", addr, &transport.RefusedError{Message: refusal})
	}
	cfg := testConfig()
	cfg.Parents.Addrs = []string{"parent"}
	cfg.Parents.RetryMin, cfg.Parents.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	cfg.Parents.Watch = transport.NewParentWatch()
	n := startDistributor(t, cfg, dial)
	want := "parent dist-0 (parent) refuses this node: " + refusal
	err := waitHealth(t, n, "health failing", func(err error) bool { return err != nil })
	if err.Error() != want {
		t.Fatalf("health %q, want %q", err, want)
	}
	if st := n.d.Status(); st.ParentError != want {
		t.Fatalf("status parent_error %q, want %q", st.ParentError, want)
	}

	top := startDistributor(t, testConfig(), nil)
	if err := top.d.Health(); err != nil {
		t.Fatalf("first tier health %v, want nil", err)
	}
}

// TestHealthDiskFloor: below min_free_disk the distributor is unhealthy,
// and its disk gauges show the free space and the floor.
func TestHealthDiskFloor(t *testing.T) {
	cfg := testConfig()
	cfg.DataDir = t.TempDir()
	cfg.MinFreeDisk = 1 << 62 // more than any disk has
	n := startDistributor(t, cfg, nil)
	if err := n.d.Health(); err == nil || !strings.Contains(err.Error(), "short of disk") {
		t.Fatalf("health %v, want short of disk", err)
	}
	n.d.Registry().MustRegister(n.d.DiskGauges()...)
	families, err := n.d.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		if strings.HasPrefix(mf.GetName(), "ted_disk_") {
			got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if got["ted_disk_floor_bytes"] != 1<<62 || got["ted_disk_free_bytes"] <= 0 {
		t.Fatalf("disk gauges %v, want free > 0 and the floor 2^62", got)
	}
}
