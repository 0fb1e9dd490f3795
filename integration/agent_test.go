//go:build linux

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ted/fleet"
)

// buildTed builds ted at version, with extra link-time settings (a broken
// agent), into dir.
func buildTed(t *testing.T, dir, version string, ldflags ...string) string {
	t.Helper()
	out := filepath.Join(dir, "ted-"+version)
	flags := strings.Join(append([]string{"-X main.version=" + version}, ldflags...), " ")
	build := exec.Command("go", "build", "-ldflags", flags, "-o", out, "../cmd/ted")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build ted %s: %v\n%s", version, err, b)
	}
	return out
}

// agentNetwork is a distributor carrying web and agents to web-01, a
// subscriber with an agent block of this probation.
func agentNetwork(t *testing.T, probation string) (nw *network, dist1, web1 *node) {
	t.Helper()
	nw = newNetwork(t)
	dist1 = nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web":    {publishers: []string{"pub-1"}, children: []string{"web-01"}},
		"agents": {publishers: []string{"pub-1"}, children: []string{"web-01"}},
	}})
	web1 = nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr},
		extra: map[string]any{"agent": map[string]any{"channel": "agents", "probation": probation}}})
	return nw, dist1, web1
}

// publishAgent builds the ted at bin as an agent on channel agents and
// publishes it to dist; it returns the agent's distribution name.
func publishAgent(t *testing.T, nw *network, dist *node, bin string) string {
	t.Helper()
	mustTed(t, "dist", "build", "--store", nw.store, "--agent", bin, "--channel", "agents", "--sign-key", nw.signKey)
	name := "ted-" + strings.ReplaceAll(goPlatform(t, bin), "/", "-")
	nw.publish(name, dist)
	return name
}

// agentsAt returns, from the view at n, each node's agent version; none
// while n does not answer (it restarts on a new version).
func agentsAt(t *testing.T, n *node) (map[string]string, fleet.View) {
	t.Helper()
	var v fleet.View
	out := map[string]string{}
	r := ted(t, "status", "--config", n.config, "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil {
		return out, v
	}
	for _, node := range v.Nodes {
		out[node.Name] = node.Agent
	}
	return out, v
}

// Agents upgrade themselves: a lower-tier distributor and subscribers
// under both tiers, running the old ted with agent blocks, take a new
// build published on the agents channel, run it on probation, commit it,
// and the top sees the new version everywhere; they still deliver. A
// broken build (exits at start) is rolled back on every node, shown failed
// with the reason at the top, and not tried again.
func TestAgentUpgrade(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	agentBlock := map[string]any{"agent": map[string]any{"channel": "agents", "probation": "40s"}}
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web":    {publishers: []string{"pub-1"}, children: []string{"dist-2", "web-01"}},
		"agents": {publishers: []string{"pub-1"}, children: []string{"dist-2", "web-01"}},
	}})
	dist2 := nw.distributor("dist-2", distributorSpec{parents: []string{dist1.addr}, channels: map[string]channel{
		"web":    {children: []string{"web-02"}},
		"agents": {children: []string{"web-02"}},
	}, extra: agentBlock})
	// web-01 keeps one revision of each distribution: builds are pruned
	// from its store like any revision.
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr},
		extra: map[string]any{"agent": agentBlock["agent"], "keep_revisions": 1}})
	web2 := nw.subscriber("web-02", subscriberSpec{parents: []string{dist2.addr}, extra: agentBlock})

	bins := t.TempDir()
	good := buildTed(t, bins, "1.5.0")
	platform := publishAgent(t, nw, dist1, good)

	waitFor(t, "dist-2, web-01 and web-02 running 1.5.0, as the top sees them", func() (bool, string) {
		agents, _ := agentsAt(t, dist1)
		return agents["dist-2"] == "1.5.0" && agents["web-01"] == "1.5.0" && agents["web-02"] == "1.5.0", fmt.Sprint(agents)
	})
	// Committed, and shown so: the build's revision runs on each.
	waitFor(t, "the agent revision shown running at the top", func() (bool, string) {
		_, v := agentsAt(t, dist1)
		for _, n := range v.Nodes {
			if n.Name == "dist-1" {
				continue // no agent block: it holds the build, relays it, runs the old one
			}
			found := false
			for _, d := range n.Distributions {
				if d.Name == platform && d.Revision == 1 && d.State == "extracted" {
					found = true
				}
			}
			if !found {
				return false, fmt.Sprintf("%s: %+v", n.Name, n.Distributions)
			}
		}
		return true, ""
	})
	// They still deliver.
	nw.build("1.0.0")
	nw.publish("app", dist1)
	web1.waitState(1, "extracted")
	web2.waitState(1, "extracted")

	// A broken build: exits as soon as it starts. Rolled back on every
	// node, failed at the top with the reason.
	broken := buildTed(t, bins, "1.6.0", "-X main.agentFault=exit")
	publishAgent(t, nw, dist1, broken)
	waitFor(t, "1.6.0 failed on dist-2, web-01 and web-02 at the top, 1.5.0 still running", func() (bool, string) {
		agents, v := agentsAt(t, dist1)
		failed := 0
		for _, n := range v.Nodes {
			for _, d := range n.Distributions {
				if d.Name == platform && d.Revision == 2 && d.State == "failed" && strings.Contains(d.Error, "exited during its probation") {
					failed++
				}
			}
		}
		return failed == 3 && agents["web-01"] == "1.5.0" && agents["web-02"] == "1.5.0" && agents["dist-2"] == "1.5.0", fmt.Sprintf("%d failed, agents %v", failed, agents)
	})
	// Not tried again: a restart offers it again, and it stays failed.
	web1.stop()
	web1.start()
	web1.waitDistState(platform, 2, "failed")
	if n := strings.Count(web1.log(), "agent: upgrading"); n != 2 {
		t.Errorf("web-01 started %d upgrades, want 2 (1.5.0, then 1.6.0 once)", n)
	}
	if st, err := web1.subscriberStatus(); err != nil {
		t.Fatal(err)
	} else if r, ok := st.distState(platform, 1); ok {
		t.Errorf("web-01 keeps one revision, yet still holds %s@1: %+v", platform, r)
	}
}

// goPlatform is the GOOS/GOARCH of the binary at path.
func goPlatform(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("go", "version", "-m", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	var goos, goarch string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "build" {
			if v, ok := strings.CutPrefix(f[1], "GOOS="); ok {
				goos = v
			}
			if v, ok := strings.CutPrefix(f[1], "GOARCH="); ok {
				goarch = v
			}
		}
	}
	return goos + "/" + goarch
}

// A build that starts but never connects is stopped when its probation
// ends and rolled back: the node runs the old version again, and the top
// shows the build failed with the reason.
func TestAgentUpgradeRollsBackAStall(t *testing.T) {
	t.Parallel()
	nw, dist1, web1 := agentNetwork(t, "5s")
	stall := buildTed(t, t.TempDir(), "1.5.0", "-X main.agentFault=stall")
	platform := publishAgent(t, nw, dist1, stall)
	web1.waitLog("agent: upgrading")
	waitFor(t, "the stalled build failed at the top, the old version running", func() (bool, string) {
		agents, v := agentsAt(t, dist1)
		for _, n := range v.Nodes {
			for _, d := range n.Distributions {
				if n.Name == "web-01" && d.Name == platform && d.State == "failed" {
					return strings.Contains(d.Error, "not healthy within its probation") && agents["web-01"] != "1.5.0", d.Error + " / " + agents["web-01"]
				}
			}
		}
		return false, fmt.Sprint(agents)
	})
	// It delivers on the old version.
	nw.build("1.0.0")
	nw.publish("app", dist1)
	web1.waitState(1, "extracted")
}

// kill -9 at every step of an upgrade: after the write of the new binary,
// once it is in place, once its probation is recorded, as the launcher
// starts it, and right after it commits. Started again, the node runs, and
// the upgrade ends done: the new version runs, committed, as the top sees
// it.
func TestAgentUpgradeCrashAtEveryStep(t *testing.T) {
	t.Parallel()
	good := buildTed(t, t.TempDir(), "1.5.0")
	for _, step := range []string{"written", "installed", "begun", "launching", "committed"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			nw, dist1, web1 := agentNetwork(t, "40s")
			web1.stop()
			web1.env = []string{"TED_TEST_AGENT_KILL_AT=" + step}
			web1.start()
			platform := publishAgent(t, nw, dist1, good)
			web1.waitEnded()
			web1.env = nil
			web1.start()
			waitFor(t, "web-01 running 1.5.0, committed, as the top sees it", func() (bool, string) {
				agents, v := agentsAt(t, dist1)
				for _, n := range v.Nodes {
					for _, d := range n.Distributions {
						if n.Name == "web-01" && d.Name == platform {
							return agents["web-01"] == "1.5.0" && d.State == "extracted", fmt.Sprintf("%s %s %s", agents["web-01"], d.State, d.Reason+d.Error)
						}
					}
				}
				return false, fmt.Sprint(agents)
			})
			st, err := os.ReadFile(filepath.Join(web1.dataDir, "agent", "state.json"))
			if err != nil || !strings.Contains(string(st), `"current": "1.5.0"`) || strings.Contains(string(st), "probation") {
				t.Errorf("agent state after the crash at %s: %v\n%s", step, err, st)
			}
		})
	}
}

// follow_parent: a lower tier takes a build only once its parent runs it.
// The top upgrades, and its child, which held the build waiting, follows
// when it meets its parent again on the new version.
func TestAgentUpgradeFollowsParent(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web":    {publishers: []string{"pub-1"}, children: []string{"dist-2"}},
		"agents": {publishers: []string{"pub-1"}, children: []string{"dist-2"}},
	}, extra: map[string]any{"agent": map[string]any{"channel": "agents", "probation": "40s"}}})
	dist2 := nw.distributor("dist-2", distributorSpec{parents: []string{dist1.addr}, channels: map[string]channel{
		"web":    {children: []string{"web-01"}},
		"agents": {children: []string{"web-01"}},
	}, extra: map[string]any{"agent": map[string]any{"channel": "agents", "probation": "40s", "follow_parent": true}}})
	good := buildTed(t, t.TempDir(), "1.5.0")
	publishAgent(t, nw, dist1, good)
	dist2.waitLog("waiting for the parent to run 1.5.0 first")
	waitFor(t, "dist-1 and then dist-2 running 1.5.0", func() (bool, string) {
		agents, _ := agentsAt(t, dist1)
		return agents["dist-1"] == "1.5.0" && agents["dist-2"] == "1.5.0", fmt.Sprint(agents)
	})
}

// upgrade: SCHEDULE: a build that arrives outside the upgrade window
// waits for it, and the upgrade begins inside it. The window is the first
// half of every minute; the build is published in the second half.
func TestAgentUpgradeWaitsForItsWindow(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	nw.writeSchedules("upgrades.yaml", "schedules:\n  first-half:\n    windows:\n      - cron: \"* * * * *\"\n        duration: 30s\n")
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web":    {publishers: []string{"pub-1"}, children: []string{"web-01"}},
		"agents": {publishers: []string{"pub-1"}, children: []string{"web-01"}},
	}})
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr}, schedules: "upgrades.yaml",
		extra: map[string]any{"agent": map[string]any{"channel": "agents", "upgrade": "first-half", "probation": "40s"}}})
	good := buildTed(t, t.TempDir(), "1.5.0")
	waitForWithin(t, 70*time.Second, "the second half of a minute (the window closed)", func() (bool, string) {
		s := time.Now().Second()
		return s >= 31 && s <= 40, fmt.Sprint(s)
	})
	publishAgent(t, nw, dist1, good)
	web1.waitLog("waiting for the upgrade window (first-half)")
	began := logTime(t, web1.waitLog("agent: upgrading", "to=1.5.0"))
	if s := began.Second(); s >= 30 {
		t.Errorf("the upgrade began at %v, outside its window (the first 30 s of a minute)", began)
	}
	waitFor(t, "web-01 running 1.5.0", func() (bool, string) {
		st, err := web1.subscriberStatus()
		if err != nil {
			return false, err.Error()
		}
		return st.Agent == "1.5.0", st.Agent
	})
}

// A cluster subscriber upgrades every node, the standbys first: the
// active node lays the build out in the shared directory, the standby
// takes it from there, and the active node follows once the standby runs
// it, so the role moves once, to a node already on the new version. The
// top shows the cluster on the new version with each node's, and it
// still delivers. A broken build fails on the standby and is not tried on
// the active node; the top shows it failed, where and why.
func TestAgentUpgradeCluster(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web":    {publishers: []string{"pub-1"}, children: []string{"web-c"}},
		"agents": {publishers: []string{"pub-1"}, children: []string{"web-c"}},
	}, clusters: map[string][]string{"web-c": {"web-c"}}})
	agentBlock := map[string]any{"agent": map[string]any{"channel": "agents", "probation": "40s"}}
	c := nw.clusterWithExtra("web-c", []string{"c-a", "c-b"}, []string{"web-c", "web-c"}, dist1, agentBlock)
	first := c.active(t)
	if first != c.nodes[0] {
		t.Fatalf("%s active, want c-a", first.name)
	}
	standby := c.nodes[1]

	bins := t.TempDir()
	platform := publishAgent(t, nw, dist1, buildTed(t, bins, "1.5.0"))

	waitFor(t, "both nodes running 1.5.0", func() (bool, string) {
		var got []string
		ok := true
		for _, n := range c.nodes {
			st, err := n.subscriberStatus()
			if err != nil {
				return false, err.Error()
			}
			got = append(got, n.name+"="+st.Agent+"/"+st.Role)
			ok = ok && st.Agent == "1.5.0"
		}
		return ok, strings.Join(got, " ")
	})
	for _, n := range c.nodes {
		n.waitLog("agent: upgrade committed", "to=1.5.0")
	}
	// The standby first: it had committed before the active node began.
	committed := logTime(t, standby.logLine("agent: upgrade committed", "to=1.5.0"))
	began := logTime(t, first.logLine("agent: upgrading", "to=1.5.0"))
	if !committed.Before(began) {
		t.Errorf("the active node began its upgrade at %v, before the standby committed (%v)", began, committed)
	}
	if n := strings.Count(standby.log(), "agent: upgrading"); n != 1 {
		t.Errorf("the standby began %d upgrades, want 1", n)
	}
	// The role moved once, to the standby, already on the new version.
	if a := c.active(t); a != standby {
		t.Errorf("%s active after the upgrade, want %s", a.name, standby.name)
	}
	if n := strings.Count(standby.log(), "lease granted: active"); n != 1 {
		t.Errorf("%s was granted the lease %d times, want once", standby.name, n)
	}
	// The top sees the cluster on 1.5.0, the build running, and each
	// node's version (through the active node).
	waitFor(t, "the top showing web-c on 1.5.0 with the build running on both nodes", func() (bool, string) {
		agents, v := agentsAt(t, dist1)
		for _, n := range v.Nodes {
			if n.Name != "web-c" {
				continue
			}
			for _, d := range n.Distributions {
				if d.Name == platform && d.Revision == 1 && d.State == "extracted" {
					return agents["web-c"] == "1.5.0" && strings.Contains(d.Reason, "c-a 1.5.0") && strings.Contains(d.Reason, "c-b 1.5.0 (active)"),
						fmt.Sprintf("%v: %s", agents, d.Reason)
				}
			}
			return false, fmt.Sprintf("%+v", n.Distributions)
		}
		return false, fmt.Sprint(agents)
	})
	// It still delivers, on the node now active.
	nw.build("1.0.0")
	nw.publish("app", dist1)
	standby.waitState(1, "extracted")
	if n := c.extractions(1); n != 1 {
		t.Errorf("web-c extracted app@1 %d times, want once", n)
	}

	// A broken build (exits at start): it fails on the standby, now c-a,
	// which rolls back; the active node does not try it, and the top
	// shows it failed with where and why.
	publishAgent(t, nw, dist1, buildTed(t, bins, "1.6.0", "-X main.agentFault=exit"))
	waitFor(t, "the broken build failed at the top, on the standby", func() (bool, string) {
		_, v := agentsAt(t, dist1)
		for _, n := range v.Nodes {
			for _, d := range n.Distributions {
				if n.Name == "web-c" && d.Name == platform && d.Revision == 2 {
					return d.State == "failed" && strings.Contains(d.Error, "failed on c-a") && strings.Contains(d.Error, "exited during its probation"),
						d.State + ": " + d.Error + d.Reason
				}
			}
		}
		return false, "not seen yet"
	})
	if strings.Contains(standby.log(), "to=1.6.0") {
		t.Error("the active node began an upgrade to the build that failed on the standby")
	}
	for _, n := range c.nodes {
		if st, err := n.subscriberStatus(); err != nil || st.Agent != "1.5.0" {
			t.Errorf("%s runs %q after the broken build (%v), want 1.5.0", n.name, st.Agent, err)
		}
	}
}

// logTime is the time= of a log line.
func logTime(t *testing.T, line string) time.Time {
	t.Helper()
	_, rest, ok := strings.Cut(line, "time=")
	if !ok {
		t.Fatalf("no time in log line %q", line)
	}
	ts, _, _ := strings.Cut(rest, " ")
	at, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		t.Fatalf("log line %q: %v", line, err)
	}
	return at
}
