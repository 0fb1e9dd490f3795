package publisher

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	tedseries "ted/series"
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

// TestDaemonMetrics: the builds and pushes are counted by result, the
// distributor's reachability follows the last dial, and a successful push
// sets its time and counts what was offered and sent.
func TestDaemonMetrics(t *testing.T) {
	r := startDaemon(t)
	r.dist.fail("dial", "refuse")
	r.settle(1)
	got := series(t, r.daemon.Registry())
	if _, ok := got["ted_publisher_distributor_connected"]; ok {
		t.Errorf("ted_publisher_distributor_connected before any dial: %v, want absent", got)
	}
	for _, key := range []string{`ted_publisher_builds_total{result=failed}`, `ted_publisher_pushes_total{result=failed}`,
		`ted_publisher_pushes_total{result=succeeded}`, "ted_publisher_last_push_success_timestamp_seconds"} {
		if v, ok := got[key]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v) before any build, want 0", key, v, ok)
		}
	}

	r.clock.Set(r.opening)
	r.settle(2) // the failed dial
	got = series(t, r.daemon.Registry())
	want := map[string]float64{
		`ted_publisher_builds_total{result=new}`:             1,
		`ted_publisher_pushes_total{result=failed}`:          1,
		`ted_publisher_pushes_total{result=succeeded}`:       0,
		"ted_publisher_distributor_connected":                0,
		"ted_publisher_last_build_success_timestamp_seconds": float64(r.opening.Unix()),
	}
	for key, v := range want {
		if got[key] != v {
			t.Errorf("after a failed dial: %s = %v, want %v", key, got[key], v)
		}
	}

	r.clock.Advance(time.Minute) // refused: the dial worked
	r.settle(2)
	if got = series(t, r.daemon.Registry()); got["ted_publisher_distributor_connected"] != 1 || got[`ted_publisher_pushes_total{result=failed}`] != 2 {
		t.Errorf("after a refused push: connected %v, failed pushes %v; want 1 and 2",
			got["ted_publisher_distributor_connected"], got[`ted_publisher_pushes_total{result=failed}`])
	}

	r.clock.Advance(2 * time.Minute)
	r.dist.nextPush(t)
	r.waitFor(t, func(s DistributionStatus) bool { return s.Pushed == 1 })
	got = series(t, r.daemon.Registry())
	_, bytes, _ := r.manifest(t, 1).Totals()
	if got[`ted_publisher_pushes_total{result=succeeded}`] != 1 || got["ted_publisher_published_revisions_total"] != 1 ||
		got["ted_publisher_offered_bytes_total"] != float64(bytes) || got["ted_publisher_sent_bytes_total"] <= 0 ||
		got["ted_publisher_sent_chunks_total"] <= 0 || got[`ted_publisher_builds_total{result=unchanged}`] != 2 ||
		got["ted_publisher_last_push_success_timestamp_seconds"] != float64(r.opening.Add(3*time.Minute).Unix()) {
		t.Errorf("after the push: %v", got)
	}
}
