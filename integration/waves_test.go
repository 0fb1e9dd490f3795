//go:build linux

package integration

import (
	"fmt"
	"strings"
	"testing"
)

// Waves: a revision goes first to the first wave (web-01); one that fails
// there stops the rollout, and the other subscribers never receive it. A
// good revision, extracted by the first wave and healthy for the soak,
// goes to the rest.
func TestWavesStopOnAFailingFirstWave(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-*"}},
	}})
	// The waves block, written into the config and the distributor
	// started again with it.
	dist1.stop()
	web := dist1.values["channels"].(map[string]any)["web"].(map[string]any)
	web["waves"] = map[string]any{"canary": "web-01", "soak": "2s"}
	dist1.startFresh() // nothing refers to it yet: new ports are fine
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr}})
	web2 := nw.subscriber("web-02", subscriberSpec{parents: []string{dist1.addr}})
	web3 := nw.subscriber("web-03", subscriberSpec{parents: []string{dist1.addr}})

	// A broken revision: its post action fails on every server.
	nw.build("1.0.0", "--post", "false")
	nw.publish("app", dist1)
	web1.waitState(1, "failed")
	waitFor(t, "the rollout of app@1 stopped at dist-1", func() (bool, string) {
		_, v := agentsAt(t, dist1)
		for _, r := range v.Rollouts {
			if r.Name == "app" && r.Revision == 1 {
				return strings.HasPrefix(r.Wave, "stopped: 1 failed in the first wave"), r.Wave
			}
		}
		return false, fmt.Sprintf("%+v", v.Rollouts)
	})
	for _, n := range []*node{web2, web3} {
		if st, err := n.subscriberStatus(); err != nil {
			t.Fatal(err)
		} else if r, ok := st.distState("app", 1); ok {
			t.Errorf("%s received the stopped revision: %+v", n.name, r)
		}
	}
	if out := mustTed(t, "status", "--config", dist1.config); !strings.Contains(out.stdout, "waves: stopped") {
		t.Errorf("the rollout view does not say it stopped:\n%s", out.stdout)
	}

	// A good revision: the first wave, then the rest.
	nw.build("1.0.1")
	nw.publish("app", dist1)
	web1.waitState(2, "extracted")
	web2.waitState(2, "extracted")
	web3.waitState(2, "extracted")
	if !strings.Contains(dist1.log(), "rollout opens to every subscriber") {
		t.Error("no log of the rollout opening")
	}
}

// A subscriber outside the first wave that joins while a rollout is
// stopped gets the revision before it, and nothing it should not.
func TestWavesNewcomerGetsTheRevisionBefore(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-*"}},
	}})
	dist1.stop()
	dist1.values["channels"].(map[string]any)["web"].(map[string]any)["waves"] = map[string]any{"canary": "web-01", "soak": "1s"}
	dist1.startFresh()
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr}})
	nw.build("1.0.0")
	nw.publish("app", dist1)
	web1.waitState(1, "extracted")
	nw.build("1.0.1", "--post", "false")
	nw.publish("app", dist1)
	web1.waitDistState("app", 2, "failed")
	waitFor(t, "the rollout of app@2 stopped", func() (bool, string) {
		_, v := agentsAt(t, dist1)
		for _, r := range v.Rollouts {
			if r.Name == "app" && r.Revision == 2 {
				return strings.HasPrefix(r.Wave, "stopped"), r.Wave
			}
		}
		return false, ""
	})
	web4 := nw.subscriber("web-04", subscriberSpec{parents: []string{dist1.addr}})
	web4.waitState(1, "extracted")
	if st, err := web4.subscriberStatus(); err != nil {
		t.Fatal(err)
	} else if r, ok := st.distState("app", 2); ok {
		t.Errorf("web-04 received the stopped app@2: %+v", r)
	}
}

// Waves across the tree: the top decides for its whole subtree and passes
// the rollout down. A broken build of ted fails on the first wave, a
// subscriber two tiers down; the rollout stops, and no other node
// receives it: not the subscribers under either tier, and the lower-tier
// distributor, which relays it to the first wave, does not run it. A good
// build, healthy on the first wave for the soak, then reaches every node,
// the lower-tier distributor last among its own.
func TestWavesAcrossTheTree(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	agentBlock := map[string]any{"channel": "agents", "probation": "40s"}
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"agents": {publishers: []string{"pub-1"}, children: []string{"dist-2", "web-03"}},
	}})
	dist1.stop()
	dist1.values["channels"].(map[string]any)["agents"].(map[string]any)["waves"] = map[string]any{"canary": "web-01", "soak": "2s"}
	dist1.startFresh() // nothing refers to it yet: new ports are fine
	dist2 := nw.distributor("dist-2", distributorSpec{parents: []string{dist1.addr}, channels: map[string]channel{
		"agents": {children: []string{"web-01", "web-02"}},
	}, extra: map[string]any{"agent": agentBlock}})
	subs := map[string]*node{}
	for name, parent := range map[string]*node{"web-01": dist2, "web-02": dist2, "web-03": dist1} {
		subs[name] = nw.subscriber(name, subscriberSpec{parents: []string{parent.addr}, channels: []string{"agents"},
			extra: map[string]any{"agent": agentBlock}})
	}
	waitFor(t, "the whole tree seen at the top", func() (bool, string) {
		agents, _ := agentsAt(t, dist1)
		return len(agents) == 5, fmt.Sprint(agents)
	})

	bins := t.TempDir()
	broken := buildTed(t, bins, "1.6.0", "-X main.agentFault=exit")
	platform := publishAgent(t, nw, dist1, broken)
	subs["web-01"].waitDistState(platform, 1, "failed")
	waitFor(t, "the rollout of the broken build stopped at the top", func() (bool, string) {
		_, v := agentsAt(t, dist1)
		for _, r := range v.Rollouts {
			if r.Name == platform && r.Revision == 1 {
				return strings.HasPrefix(r.Wave, "stopped: 1 failed in the first wave"), r.Wave
			}
		}
		return false, fmt.Sprintf("%+v", v.Rollouts)
	})
	// dist-2 knows it stopped (passed down), and neither it nor the
	// subscribers outside the first wave took the build.
	// Every such line has a stopped= field: the stop is its reason.
	dist2.waitLog("rollout in waves from the parent", `stopped="1 failed in the first wave`)
	for _, name := range []string{"web-02", "web-03"} {
		if st, err := subs[name].subscriberStatus(); err != nil {
			t.Fatal(err)
		} else if r, ok := st.distState(platform, 1); ok {
			t.Errorf("%s received the broken build: %+v", name, r)
		}
	}
	if strings.Contains(dist2.log(), "agent: upgrading") {
		t.Error("dist-2 began an upgrade to the broken build")
	}

	good := buildTed(t, bins, "1.7.0")
	publishAgent(t, nw, dist1, good)
	waitFor(t, "every node but the top on 1.7.0", func() (bool, string) {
		agents, _ := agentsAt(t, dist1)
		for _, name := range []string{"dist-2", "web-01", "web-02", "web-03"} {
			if agents[name] != "1.7.0" {
				return false, fmt.Sprint(agents)
			}
		}
		return true, ""
	})
	// The first wave first: the others began once the rollout opened.
	opened := logTime(t, dist1.logLine("rollout opens to every subscriber", "rev=2"))
	committed := logTime(t, subs["web-01"].logLine("agent: upgrade committed", "to=1.7.0"))
	if !committed.Before(opened) {
		t.Errorf("the rollout opened at %v, before the first wave committed (%v)", opened, committed)
	}
	for _, n := range []*node{dist2, subs["web-02"], subs["web-03"]} {
		if began := logTime(t, n.logLine("agent: upgrading", "to=1.7.0")); began.Before(opened) {
			t.Errorf("%s began its upgrade at %v, before the rollout opened (%v)", n.name, began, opened)
		}
	}
}
