package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"ted/transport"
)

// sim is a cluster in simulated time: nodes with drifting clocks, the
// parent's lease table, and links that can be cut in any direction.
type sim struct {
	t     *testing.T
	start time.Time
	now   time.Time // the authority's (true) time
	table *transport.Leases
	nodes map[string]*simNode
	names []string
	// cut holds the links that are down: "a|b" between nodes (both
	// ways), "a|parent" to the authority.
	cut map[string]bool
}

type simNode struct {
	name  string
	rate  float64 // local seconds per true second
	alive bool
	meta  Meta
	node  *Node
	due   time.Time // true time of its next round
}

const simTTL = 6 * time.Second

func newSim(t *testing.T, nodes map[string]int, rates map[string]float64) *sim {
	s := &sim{t: t, start: time.Unix(1_800_000_000, 0), nodes: map[string]*simNode{}, cut: map[string]bool{}}
	s.now = s.start
	s.table = transport.NewLeases(simTTL, func() time.Time { return s.now })
	for name, prio := range nodes {
		sn := &simNode{name: name, rate: 1, alive: true}
		if r, ok := rates[name]; ok {
			sn.rate = r
		}
		cfg := DefaultConfig(name)
		cfg.Priority = prio
		cfg.Now = func() time.Time {
			return s.start.Add(time.Duration(float64(s.now.Sub(s.start)) * sn.rate))
		}
		sn.node = NewNode(cfg, simMembership{s, name}, simAuthority{s, name})
		s.nodes[name] = sn
		s.names = append(s.names, name)
	}
	slices.Sort(s.names)
	return s
}

func link(a, b string) string {
	if a > b {
		a, b = b, a
	}
	return a + "|" + b
}

type simMembership struct {
	s    *sim
	self string
}

func (m simMembership) Members() []Member {
	var out []Member
	for _, name := range m.s.names {
		n := m.s.nodes[name]
		if n.alive && (name == m.self || !m.s.cut[link(m.self, name)]) {
			out = append(out, Member{Name: name, Meta: n.meta})
		}
	}
	return out
}
func (m simMembership) SetMeta(meta Meta)        { m.s.nodes[m.self].meta = meta }
func (m simMembership) Changed() <-chan struct{} { return nil }

type simAuthority struct {
	s    *sim
	self string
}

var errCut = errors.New("link to the parent is cut")

func (a simAuthority) Acquire(context.Context) (Grant, error) {
	if a.s.cut[link(a.self, "parent")] {
		return Grant{}, errCut
	}
	ans := a.s.table.Acquire("web", a.self)
	g := Grant{Granted: ans.Granted, Holder: ans.Holder, Epoch: ans.Epoch}
	if ans.Granted {
		g.TTL = simTTL
	} else {
		g.RetryIn = ans.Until.Sub(a.s.now)
	}
	return g, nil
}

func (a simAuthority) Release(context.Context) error {
	if a.s.cut[link(a.self, "parent")] {
		return errCut
	}
	a.s.table.Release("web", a.self)
	return nil
}

// run advances true time by d in 50 ms ticks, running every live node's
// rounds when due, and checks after each tick that at most one node acts
// and that a node acting holds the lease at the parent.
func (s *sim) run(d time.Duration) {
	s.t.Helper()
	for end := s.now.Add(d); s.now.Before(end); {
		s.now = s.now.Add(50 * time.Millisecond)
		for _, name := range s.names {
			n := s.nodes[name]
			if !n.alive || s.now.Before(n.due) {
				continue
			}
			wait := n.node.step(context.Background())
			n.node.finishRelease(context.Background()) // no act to stop here
			n.due = s.now.Add(time.Duration(float64(wait) / n.rate))
		}
		s.check()
	}
}

func (s *sim) check() {
	s.t.Helper()
	var acting []string
	for _, name := range s.names {
		n := s.nodes[name]
		if ok, epoch := n.node.Acting(); ok && n.alive {
			acting = append(acting, name)
			if valid, _, _ := s.table.Valid("web", name, epoch); !valid {
				s.t.Fatalf("at %v %s acts under epoch %d, which the parent does not grant it", s.now.Sub(s.start), name, epoch)
			}
		}
	}
	if len(acting) > 1 {
		s.t.Fatalf("at %v two nodes act: %v", s.now.Sub(s.start), acting)
	}
}

// active returns the node acting now, or "".
func (s *sim) active() string {
	for _, name := range s.names {
		if ok, _ := s.nodes[name].node.Acting(); ok && s.nodes[name].alive {
			return name
		}
	}
	return ""
}

// waitActive runs until want acts, failing after within.
func (s *sim) waitActive(want string, within time.Duration) time.Duration {
	s.t.Helper()
	start := s.now
	for s.active() != want {
		if s.now.Sub(start) > within {
			s.t.Fatalf("%s not active within %v (active: %q)", want, within, s.active())
		}
		s.run(50 * time.Millisecond)
	}
	return s.now.Sub(start)
}

func (s *sim) kill(name string)   { s.nodes[name].alive = false }
func (s *sim) revive(name string) { n := s.nodes[name]; n.alive, n.due = true, s.now }

// partition cuts every link between the two groups ("parent" may be in
// one); heal restores all links.
func (s *sim) partition(a, b []string) {
	for _, x := range a {
		for _, y := range b {
			s.cut[link(x, y)] = true
		}
	}
}
func (s *sim) heal() { s.cut = map[string]bool{} }

// Clocks drift within the 1 % bound, in both directions.
var drifting = map[string]float64{"a": 1.0099, "b": 0.9901, "c": 1.005}

func TestElectionAndFailover(t *testing.T) {
	s := newSim(t, map[string]int{"a": 10, "b": 20, "c": 30}, drifting)
	// Nothing is granted during the parent's first TTL.
	s.run(simTTL - time.Second)
	if got := s.active(); got != "" {
		t.Fatalf("%s active during the parent's grace period", got)
	}
	s.waitActive("a", 10*time.Second)

	// The active node dies: the next by priority takes over within the
	// failover budget (gossip here sees the death at once; memberlist
	// takes about 5 s more).
	s.kill("a")
	if took := s.waitActive("b", 15*time.Second); took > simTTL+time.Second {
		t.Errorf("b took over after %v, want at most the lease TTL and a round", took)
	}
	// a comes back with the lowest priority: b stays active (the role
	// does not move back by itself) until an operator hands it over.
	s.revive("a")
	s.run(time.Minute)
	if s.active() != "b" {
		t.Errorf("active a minute after a came back: %q, want b still", s.active())
	}
	if err := s.nodes["c"].node.Handover("a"); err != nil {
		t.Fatal(err)
	}
	s.waitActive("a", 15*time.Second)
	s.run(time.Minute)
	if s.active() != "a" {
		t.Errorf("active after a quiet minute: %q", s.active())
	}
}

func TestPartitions(t *testing.T) {
	tests := []struct {
		name string
		cut  func(s *sim)
		// then is the node active once the partition has lasted long
		// enough.
		then string
	}{
		{"active cut from its peers, not from the parent", func(s *sim) { s.partition([]string{"a"}, []string{"b", "c"}) }, "a"},
		{"active cut from the parent", func(s *sim) { s.partition([]string{"a"}, []string{"parent"}) }, "b"},
		{"active cut from everything", func(s *sim) { s.partition([]string{"a"}, []string{"b", "c", "parent"}) }, "b"},
		{"full split, parent with the minority", func(s *sim) { s.partition([]string{"a", "parent"}, []string{"b", "c"}) }, "a"},
		{"full split, parent with the majority", func(s *sim) { s.partition([]string{"a"}, []string{"b", "c", "parent"}) }, "b"},
		{"standby cut from everything", func(s *sim) { s.partition([]string{"b"}, []string{"a", "c", "parent"}) }, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, map[string]int{"a": 10, "b": 20, "c": 30}, drifting)
			s.waitActive("a", 20*time.Second)
			tt.cut(s)
			s.waitActive(tt.then, 30*time.Second)
			s.run(time.Minute)
			if got := s.active(); got != tt.then {
				t.Errorf("active after a minute of partition: %q, want %s", got, tt.then)
			}
			// Healed, the node active stays so: no move back.
			s.heal()
			s.run(time.Minute)
			if got := s.active(); got != tt.then {
				t.Errorf("active a minute after the partition healed: %q, want %s", got, tt.then)
			}
		})
	}
}

func TestPriorityChangeAndHandover(t *testing.T) {
	s := newSim(t, map[string]int{"a": 10, "b": 20, "c": 30}, drifting)
	s.waitActive("a", 20*time.Second)
	// A priority change does not move an active role (no flapping)...
	s.nodes["c"].node.cfg.Priority = 1
	s.run(time.Minute)
	if s.active() != "a" {
		t.Errorf("after c's priority changed %q is active, want a still", s.active())
	}
	// ... it decides when there is no holder.
	s.kill("a")
	s.waitActive("c", 20*time.Second)
	s.revive("a")
	if err := s.nodes["a"].node.Handover("b"); err != nil {
		t.Fatal(err)
	}
	s.waitActive("b", 20*time.Second)
	s.run(time.Minute)
	if s.active() != "b" {
		t.Errorf("after the handover %q is active, want b", s.active())
	}
	if err := s.nodes["a"].node.Handover("nobody"); err == nil {
		t.Error("a handover to a node that is not a member was accepted")
	}
}

// TestNeverTwoActive flaps links and kills and revives nodes at random
// for an hour of simulated time; check (every 50 ms) never sees two
// nodes act, or one act without the parent's grant.
func TestNeverTwoActive(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			s := newSim(t, map[string]int{"a": 10, "b": 20, "c": 30}, drifting)
			ends := []string{"a", "b", "c", "parent"}
			active := 0
			for range 720 { // 5 s each
				switch r.IntN(6) {
				case 0:
					x, y := ends[r.IntN(4)], ends[r.IntN(4)]
					if x != y {
						s.cut[link(x, y)] = !s.cut[link(x, y)]
					}
				case 1:
					name := s.names[r.IntN(3)]
					if s.nodes[name].alive {
						s.kill(name)
					} else {
						s.revive(name)
					}
				case 2:
					s.heal()
				}
				s.run(5 * time.Second)
				if s.active() != "" {
					active++
				}
			}
			if active < 100 {
				t.Errorf("a node was active in only %d of 720 periods: the test exercised too little", active)
			}
		})
	}
}
