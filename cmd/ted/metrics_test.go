package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"ted/subscriber"
)

// TestBuildInfo: every daemon's /metrics has ted_build_info 1, labelled
// with the version ted version prints and the Go version, beside the
// daemon's own series.
func TestBuildInfo(t *testing.T) {
	own := prometheus.NewRegistry()
	own.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_test_total", Help: "A daemon's own series."}))
	for _, a := range []daemonAdmin{{registry: own}, {metrics: own}, {}} {
		families, err := a.gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := map[string]bool{}
		for _, mf := range families {
			found[mf.GetName()] = true
			if mf.GetName() != "ted_build_info" {
				continue
			}
			m := mf.GetMetric()[0]
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if m.GetGauge().GetValue() != 1 || labels["version"] != buildVersion().Version || labels["goversion"] != runtime.Version() || len(labels) != 2 {
				t.Errorf("ted_build_info %v = %v, want 1 with version %q and goversion %q", labels, m.GetGauge().GetValue(), buildVersion().Version, runtime.Version())
			}
		}
		if !found["ted_build_info"] {
			t.Errorf("no ted_build_info in %v", found)
		}
		if (a.registry != nil || a.metrics != nil) != found["ted_test_total"] {
			t.Errorf("the daemon's own series: found %v, want %v", found["ted_test_total"], a.registry != nil || a.metrics != nil)
		}
	}
}

// TestSubscriberStatusShowsParentError: the text of ted subscriber status
// says why no parent is connected.
func TestSubscriberStatusShowsParentError(t *testing.T) {
	var out bytes.Buffer
	printSubscriberStatus(&printer{w: &out}, subscriber.Status{Node: "web-01", Role: "single", ActiveNode: "web-01",
		ParentError: "parent dist-1 (10.0.0.10:7400) refuses this node: not authorised: subscriber web-01 is not a child of any channel of dist-1"})
	lines := strings.Split(out.String(), "\n")
	if !strings.Contains(lines[0], "parent (none reachable)") ||
		lines[1] != "parent error: parent dist-1 (10.0.0.10:7400) refuses this node: not authorised: subscriber web-01 is not a child of any channel of dist-1" {
		t.Fatalf("status text:\n%s", out.String())
	}
}
