//go:build linux

package integration

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ted/fleet"
)

// The whole tree's state at the top: two tiers with subscribers under
// each; `ted status --json` at the first tier lists every subscriber,
// grandchildren included, with its states; a blocked reason and a failed
// error show there, grouped in the rollout; a killed subscriber turns
// stale; `ted report` lists the revision's history.
func TestFleetViewAtTheTop(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	// Short bounds, so a dead subscriber is noticed and turns stale within
	// seconds: a 4 s idle timeout (keepalives every 2 s) and a 5 s stale
	// bound.
	link := map[string]string{"idle_timeout": "4s"}
	fleetKeys := map[string]any{"stale_after": "5s"}
	dist1 := nw.distributor("dist-1", distributorSpec{
		channels: map[string]channel{
			"web": {publishers: []string{"pub-1"}, children: []string{"dist-2", "web-01"}},
			"rt":  {publishers: []string{"pub-1"}, children: []string{"dist-2", "web-01"}},
		},
		extra: map[string]any{"fleet": fleetKeys, "link": link},
	})
	dist2 := nw.distributor("dist-2", distributorSpec{
		parents: []string{dist1.addr},
		channels: map[string]channel{
			"web": {children: []string{"web-*"}},
			"rt":  {children: []string{"web-02"}},
		},
		extra: map[string]any{"fleet": fleetKeys, "link": link},
	})
	// web-01 under the top, the rest one tier down. web-03 does not take
	// the runtime's channel, so app waits for it there (blocked); web-04
	// trusts another key, so app fails there.
	other := filepath.Join(nw.dir, "pki", "other.key")
	mustTed(t, "pki", "signing-key", "--out", other)
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr}, channels: []string{"web", "rt"}, link: link})
	web2 := nw.subscriber("web-02", subscriberSpec{parents: []string{dist2.addr}, channels: []string{"web", "rt"}, link: link})
	web3 := nw.subscriber("web-03", subscriberSpec{parents: []string{dist2.addr}, link: link})
	web4 := nw.subscriber("web-04", subscriberSpec{parents: []string{dist2.addr}, trust: []string{other + ".pub"}, link: link})

	mustTed(t, "dist", "build", "--store", nw.store, "--name", "runtime", "--from", nw.src, "--version", "2.1.0", "--channel", "rt", "--sign-key", nw.signKey)
	nw.publish("runtime", dist1)
	nw.build("1.0.0", "--requires", "runtime >=2.0")
	nw.publish("app", dist1)

	// Each subscriber's own state first, then how long the top takes.
	web1.waitDistState("app", 1, "extracted")
	web2.waitDistState("app", 1, "extracted")
	web3.waitDistState("app", 1, "blocked")
	web4.waitDistState("app", 1, "failed")
	settled := time.Now()
	var v fleet.View
	waitFor(t, "the top's view shows every subscriber's state", func() (bool, string) {
		v = fleetView(t, dist1)
		got := map[string]string{}
		for _, n := range v.Nodes {
			for _, d := range n.Distributions {
				if d.Name == "app" && d.Revision == 1 {
					got[n.Name+"<"+n.Parent] = d.State
				}
			}
		}
		want := map[string]string{"web-01<dist-1": "extracted", "web-02<dist-2": "extracted", "web-03<dist-2": "blocked", "web-04<dist-2": "failed"}
		for k, s := range want {
			if got[k] != s {
				return false, fmt.Sprintf("app@1 by node<parent: %v", got)
			}
		}
		return true, ""
	})
	t.Logf("the top showed every subscriber's state %v after the last one reached it", time.Since(settled).Round(time.Millisecond))

	// The rollout groups the blocked reason and the failed error.
	var app *fleet.Rollout
	for i := range v.Rollouts {
		if v.Rollouts[i].Name == "app" && v.Rollouts[i].Revision == 1 {
			app = &v.Rollouts[i]
		}
	}
	if app == nil {
		t.Fatalf("no rollout of app@1 at the top: %+v", v.Rollouts)
	}
	if app.Counts["extracted"] != 2 || app.Counts["blocked"] != 1 || app.Counts["failed"] != 1 || app.Subscribers != 4 {
		t.Errorf("app@1 counts %v over %d subscribers; want 2 extracted, 1 blocked, 1 failed of 4", app.Counts, app.Subscribers)
	}
	if !hasKeyContaining(app.Blocked, "runtime") {
		t.Errorf("blocked reasons %v: want one naming runtime", app.Blocked)
	}
	if !hasKeyContaining(app.Failed, "key") {
		t.Errorf("failed errors %v: want the untrusted key", app.Failed)
	}
	// The filters, and the text views.
	failed := ted(t, "status", "--config", dist1.config, "--state", "failed", "--dist", "app@1", "--json")
	if failed.code != 0 || !strings.Contains(failed.stdout, `"web-04"`) || strings.Contains(failed.stdout, `"web-02"`) {
		t.Errorf("--state failed --dist app@1: %s", failed)
	}
	tree := mustTed(t, "status", "--config", dist1.config, "--tree")
	for _, want := range []string{"├─ dist-2", "│  ├─ web-02", "untrusted key", "└─ web-01"} {
		if !strings.Contains(tree.stdout, want) {
			t.Errorf("--tree lacks %q:\n%s", want, tree.stdout)
		}
	}
	rollout := mustTed(t, "status", "--config", dist1.config)
	if !strings.Contains(rollout.stdout, "app@1 1.0.0") || !strings.Contains(rollout.stdout, "blocked") {
		t.Errorf("the rollout view:\n%s", rollout.stdout)
	}
	// A middle tier sees its own subtree only.
	mid := ted(t, "status", "--config", dist2.config, "--json")
	if mid.code != 0 || strings.Contains(mid.stdout, `"web-01"`) || !strings.Contains(mid.stdout, `"web-03"`) {
		t.Errorf("dist-2's view: %s", mid)
	}

	// A killed subscriber turns stale at the top.
	web2.kill()
	waitFor(t, "web-02 stale at the top", func() (bool, string) {
		for _, n := range fleetView(t, dist1).Nodes {
			if n.Name == "web-02" {
				return n.Stale && !n.StaleSince.IsZero(), fmt.Sprintf("%+v", n)
			}
		}
		return false, "web-02 not in the view"
	})
	stale := mustTed(t, "status", "--config", dist1.config, "--state", "stale", "--tree")
	if !strings.Contains(stale.stdout, "web-02") || !strings.Contains(stale.stdout, "STALE") || strings.Contains(stale.stdout, "web-03") {
		t.Errorf("--state stale --tree:\n%s", stale.stdout)
	}

	// The report: what each node has, and the revision's history.
	var report fleet.Report
	out := mustTed(t, "report", "--config", dist1.config, "--format", "json")
	if err := json.Unmarshal([]byte(out.stdout), &report); err != nil {
		t.Fatalf("report --format json: %v\n%s", err, out.stdout)
	}
	kinds := map[string][]string{}
	for _, r := range report.Revisions {
		if r.Name == "app" && r.Revision == 1 {
			for _, ev := range r.Events {
				kinds[string(ev.Kind)] = append(kinds[string(ev.Kind)], ev.Node)
			}
		}
	}
	if !slices.Contains(kinds["published"], "dist-1") || !slices.Contains(kinds["extracted"], "web-02") ||
		!slices.Contains(kinds["blocked"], "web-03") || !slices.Contains(kinds["failed"], "web-04") {
		t.Errorf("app@1's history at the top: %v", kinds)
	}
	csv := mustTed(t, "report", "--config", dist1.config, "--format", "csv")
	if !strings.Contains(csv.stdout, "web-03,subscriber,dist-2,") {
		t.Errorf("csv report:\n%s", csv.stdout)
	}
	_ = web3
}

// fleetView is `ted status --json` at n.
func fleetView(t *testing.T, n *node) fleet.View {
	t.Helper()
	var v fleet.View
	tedJSON(t, &v, "status", "--config", n.config)
	return v
}

func hasKeyContaining(m map[string]int, s string) bool {
	for k := range m {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}
