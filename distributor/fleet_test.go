package distributor_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"ted/distributor"
	tedfleet "ted/fleet"
	"ted/pki"
	"ted/series"
	"ted/transport"
)

// fleetNode returns node name of d's view, or nil.
func fleetNode(d *distributor.Distributor, name string) *tedfleet.Node {
	v := d.FleetView(tedfleet.Filter{})
	for i := range v.Nodes {
		if v.Nodes[i].Name == name {
			return &v.Nodes[i]
		}
	}
	return nil
}

// A lower tier's subtree reaches the top: its subscriber's report, sent
// to the lower distributor, shows at the top with the lower one as its
// parent, its problem included; then a change travels alone.
func TestSubtreeRollsUp(t *testing.T) {
	top := startDistributor(t, testConfig(), nil)
	lowerCfg := testConfig()
	lowerCfg.Name = lowerID.Name
	lowerCfg.Parents.Addrs = []string{"top"}
	lowerCfg.Fleet.ReportEvery = 10 * time.Millisecond
	lowerCfg.Channels = map[string]distributor.Channel{"web": {Children: []string{subID.Name}}}
	dial := func(ctx context.Context, addr string) (transport.Session, error) {
		if err := top.d.Accept(lowerID); err != nil {
			return nil, err
		}
		mine, theirs := transport.NewPipe(lowerID, distID)
		select {
		case top.sessions <- theirs:
			return mine, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	lower := startDistributor(t, lowerCfg, dial)
	if err := lower.d.Accept(subID); err != nil {
		t.Fatal(err)
	}
	mine, theirs := transport.NewPipe(subID, lowerID)
	t.Cleanup(func() { mine.Close(nil) })
	lower.sessions <- theirs
	control, _, err := transport.ClientHello(t.Context(), mine, &transport.Hello{Name: subID.Name, Agent: "test-agent", Channels: []string{"web"}})
	if err != nil {
		t.Fatal(err)
	}
	sub := struct {
		sess    transport.Session
		control *transport.Conn
	}{mine, control}
	if err := sub.control.Send(&transport.Status{Role: "subscriber", Problem: "below the disk floor",
		Revisions: []transport.RevisionState{{Name: "app", Revision: 1, Version: "1.0", State: "blocked", Reason: "needs db"}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "sub-1 at the top under dist-2, blocked, with its problem", func() bool {
		n := fleetNode(top.d, subID.Name)
		return n != nil && n.Parent == lowerID.Name && n.Problem == "below the disk floor" &&
			len(n.Distributions) == 1 && n.Distributions[0].Reason == "needs db" && n.Connected
	})
	if n := fleetNode(top.d, lowerID.Name); n == nil || n.Parent != distID.Name || n.Role != "distributor" {
		t.Fatalf("dist-2 at the top: %+v", n)
	}
	if err := sub.control.Send(&transport.Status{Role: "subscriber",
		Revisions: []transport.RevisionState{{Name: "app", Revision: 1, Version: "1.0", State: "extracted"}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "sub-1 extracted at the top", func() bool {
		n := fleetNode(top.d, subID.Name)
		return n != nil && n.Problem == "" && len(n.Distributions) == 1 && n.Distributions[0].State == "extracted"
	})
	// The subscriber goes: out of touch at the top too.
	sub.sess.Close(nil)
	waitFor(t, "sub-1 out of touch at the top", func() bool {
		n := fleetNode(top.d, subID.Name)
		return n != nil && !n.Connected && !n.LastSeen.IsZero()
	})
}

// What a child may not report: a subscriber a subtree; a distributor a
// subtree that does not match its own summary. Either ends its session.
func TestSubtreeRefused(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	sub := n.mustChild(subID, "web")
	if err := sub.control.Send(&transport.Subtree{Full: true, Count: 0}); err != nil {
		t.Fatal(err)
	}
	awaitEnded(t, sub.sess, "a subscriber that sent a subtree")

	lower := n.mustChild(lowerID, "web")
	node := transport.NodeState{Name: "web-9", Parent: lowerID.Name, Role: "subscriber", Connected: true}
	if err := lower.control.Send(&transport.Subtree{Full: true, Nodes: []transport.NodeState{node}, Count: 1, Digest: transport.NodeDigest(&node)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web-9 in the view", func() bool { return fleetNode(n.d, "web-9") != nil })
	if err := lower.control.Send(&transport.Subtree{Count: 1, Digest: 42}); err != nil {
		t.Fatal(err)
	}
	awaitEnded(t, lower.sess, "a distributor whose summary does not match")
}

func awaitEnded(t *testing.T, sess transport.Session, what string) {
	t.Helper()
	select {
	case <-sess.Context().Done():
	case <-time.After(waitLimit):
		t.Fatalf("%s: session not ended within %v", what, waitLimit)
	}
}

// A child refused at the handshake shows in the view, out of touch, with
// the refusal as its problem, so the top says why a server is missing.
func TestRefusedChildInView(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	stranger := transport.Identity{Name: "web-77", Role: pki.RoleSubscriber}
	if err := n.d.Accept(stranger); err == nil || !errors.Is(err, transport.ErrUnauthorized) {
		t.Fatalf("a stranger accepted: %v", err)
	}
	got := fleetNode(n.d, "web-77")
	if got == nil || got.Connected || !strings.Contains(got.Problem, "refused by dist-1") || !strings.Contains(got.Problem, "not a child of any channel") {
		t.Fatalf("web-77 in the view: %+v", got)
	}
}

// The rollout counts and the metrics follow the view.
func TestFleetMetrics(t *testing.T) {
	n := startDistributor(t, testConfig(), nil)
	src := memStore(t)
	s, _ := build(t, src, publisherKey(), appFiles(1), 1, "web")
	n.publish(pubID, src, s)
	sub := n.mustChild(subID, "web")
	if err := sub.control.Send(&transport.Status{Role: "subscriber",
		Revisions: []transport.RevisionState{{Name: "app", Revision: 1, Version: "1", State: "failed", Error: "disk full"}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a failed subscriber in the metrics", func() bool {
		got, err := series.Values(n.d.Registry())
		return err == nil && got["ted_fleet_subscribers{dist=app,state=failed}"] == 1 && got["ted_fleet_nodes{role=subscriber,stale=false}"] == 1
	})
	v := n.d.FleetView(tedfleet.Filter{Dist: "app@1"})
	if len(v.Rollouts) != 1 || v.Rollouts[0].Failed["disk full"] != 1 {
		t.Fatalf("rollouts %+v", v.Rollouts)
	}
}
