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
	web["waves"] = map[string]any{"first": "web-01", "soak": "2s"}
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
	dist1.values["channels"].(map[string]any)["web"].(map[string]any)["waves"] = map[string]any{"first": "web-01", "soak": "1s"}
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
