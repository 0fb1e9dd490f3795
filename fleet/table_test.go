package fleet

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"ted/transport"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)} }

func sub(name, parent string, revs ...transport.RevisionState) transport.NodeState {
	return transport.NodeState{Name: name, Parent: parent, Role: "subscriber", Agent: "1.0", Channels: []string{"web"}, Connected: true, Revisions: revs}
}

func rev(name string, r uint64, state string) transport.RevisionState {
	return transport.RevisionState{Name: name, Revision: r, Version: fmt.Sprintf("1.%d", r), State: state}
}

// relay copies a lower table's changes into an upper one as a
// distributor's reporter does, and returns the error Apply gave.
func relay(t *testing.T, from string, lower *Table, upper *Table, at *uint64) error {
	t.Helper()
	nodes, gone, full, now, count, digest := lower.Changes(*at)
	*at = now
	m := &transport.Subtree{Full: full, Nodes: nodes, Gone: gone, Count: count, Digest: digest}
	return upper.Apply(from, m)
}

// Two tiers: the top learns the grandchildren through the middle one's
// reports, only changes travel, a gone child goes, and the digest holds.
func TestTableRollsUp(t *testing.T) {
	clk := newClock()
	var events []Event
	top := New(Config{Self: "dist-1", Now: clk.now, Events: func(evs []Event) { events = append(events, evs...) }})
	mid := New(Config{Self: "dist-2", Now: clk.now})
	top.Child(transport.NodeState{Name: "dist-2", Role: "distributor", Connected: true})
	mid.Child(sub("web-01", "", rev("app", 1, "extracted")))
	mid.Child(sub("web-02", "", rev("app", 1, "receiving")))
	var at uint64
	if err := relay(t, "dist-2", mid, top, &at); err != nil {
		t.Fatal(err)
	}
	v := top.View(Node{Name: "dist-1", Role: "distributor"}, nil, Filter{})
	names := []string{}
	for _, n := range v.Nodes {
		names = append(names, n.Name+"<"+n.Parent)
	}
	if want := []string{"dist-1<", "dist-2<dist-1", "web-01<dist-2", "web-02<dist-2"}; !slices.Equal(names, want) {
		t.Fatalf("nodes %v, want %v", names, want)
	}
	// A change: only it travels.
	mid.Child(sub("web-02", "", rev("app", 1, "extracted")))
	nodes, gone, full, _, _, _ := mid.Changes(at)
	if full || len(nodes) != 1 || nodes[0].Name != "web-02" || len(gone) != 0 {
		t.Fatalf("changes after one: %d nodes, %v gone, full %v", len(nodes), gone, full)
	}
	if err := relay(t, "dist-2", mid, top, &at); err != nil {
		t.Fatal(err)
	}
	// Nothing changed: a summary that matches.
	if err := relay(t, "dist-2", mid, top, &at); err != nil {
		t.Fatalf("summary of a quiet subtree: %v", err)
	}
	ro := top.View(Node{Name: "dist-1", Role: "distributor"}, nil, Filter{}).Rollouts
	if len(ro) != 1 || ro[0].Counts["extracted"] != 2 || ro[0].Subscribers != 2 {
		t.Fatalf("rollouts %+v", ro)
	}
	// A summary that does not match is an error.
	if err := top.Apply("dist-2", &transport.Subtree{Count: 2, Digest: 1}); err == nil {
		t.Fatal("a wrong digest is taken")
	}
	// A node that leaves the middle tier's table leaves the top's.
	mid.mu.Lock()
	mid.dropLocked("web-01", "web-01")
	mid.unlockAndEmit()
	if err := relay(t, "dist-2", mid, top, &at); err != nil {
		t.Fatal(err)
	}
	if n := len(top.View(Node{Name: "dist-1"}, nil, Filter{}).Nodes); n != 3 {
		t.Fatalf("%d nodes after web-01 went, want 3", n)
	}
	kinds := map[Kind]int{}
	for _, ev := range events {
		kinds[ev.Kind]++
	}
	if kinds[KindFirstSeen] != 3 || kinds[KindExtracted] != 2 {
		t.Errorf("events %v", kinds)
	}
}

// A node out of touch turns stale after StaleAfter, with an event; a
// subtree whose distributor went away turns stale with it; a node that
// moved to another parent shows where it is now.
func TestTableStale(t *testing.T) {
	clk := newClock()
	var events []Event
	top := New(Config{Self: "dist-1", Now: clk.now, StaleAfter: time.Minute, Events: func(evs []Event) { events = append(events, evs...) }})
	mid := New(Config{Self: "dist-2", Now: clk.now, StaleAfter: time.Minute})
	top.Child(transport.NodeState{Name: "dist-2", Role: "distributor", Connected: true})
	mid.Child(sub("web-01", ""))
	mid.Child(sub("web-02", ""))
	var at uint64
	if err := relay(t, "dist-2", mid, top, &at); err != nil {
		t.Fatal(err)
	}
	// web-02 goes away below dist-2.
	gone := sub("web-02", "")
	gone.Connected, gone.LastSeen = false, clk.now().UnixMilli()
	mid.Child(gone)
	if err := relay(t, "dist-2", mid, top, &at); err != nil {
		t.Fatal(err)
	}
	clk.add(59 * time.Second)
	if stale := staleNames(top); len(stale) != 0 {
		t.Fatalf("stale before the bound: %v", stale)
	}
	clk.add(time.Second)
	if stale := staleNames(top); !slices.Equal(stale, []string{"web-02"}) {
		t.Fatalf("stale %v, want web-02", stale)
	}
	top.Sweep()
	if !slices.ContainsFunc(events, func(ev Event) bool { return ev.Kind == KindStale && ev.Node == "web-02" }) {
		t.Error("no stale event")
	}
	// dist-2 goes away: its whole subtree is out of touch with it.
	top.Child(transport.NodeState{Name: "dist-2", Role: "distributor", LastSeen: clk.now().UnixMilli()})
	clk.add(time.Minute)
	if stale := staleNames(top); !slices.Equal(stale, []string{"dist-2", "web-01", "web-02"}) {
		t.Fatalf("stale %v after dist-2 went", stale)
	}
	// web-01 shows up directly under the top: it is there now.
	top.Child(sub("web-01", ""))
	v := top.View(Node{Name: "dist-1"}, nil, Filter{Node: "web-01"})
	if len(v.Nodes) != 1 || v.Nodes[0].Parent != "dist-1" || v.Nodes[0].Stale {
		t.Fatalf("web-01 after it moved: %+v", v.Nodes)
	}
}

func staleNames(t *Table) []string {
	var out []string
	for _, n := range t.View(Node{Name: t.cfg.Self}, nil, Filter{}).Nodes {
		if n.Stale {
			out = append(out, n.Name)
		}
	}
	return out
}

// Rollouts count subscribers by state, group blocked and failed, count
// those of the channel that say nothing, and the filters narrow.
func TestRollouts(t *testing.T) {
	clk := newClock()
	tb := New(Config{Self: "dist-1", Now: clk.now})
	blocked := rev("app", 2, "blocked")
	blocked.Reason = "needs db >= 3"
	failed := rev("app", 2, "failed")
	failed.Error = "disk full"
	recv := rev("app", 2, "receiving")
	recv.Chunks, recv.HaveChunks = 10, 4
	tb.Child(sub("web-01", "", rev("app", 2, "extracted")))
	tb.Child(sub("web-02", "", blocked))
	tb.Child(sub("web-03", "", failed))
	tb.Child(sub("web-04", "", recv))
	tb.Child(sub("web-05", "", rev("app", 1, "extracted")))
	other := sub("db-01", "")
	other.Channels = []string{"db"}
	tb.Child(other)
	cat := []Catalog{{Name: "app", Revision: 2, Version: "1.2", Channels: []string{"web"}}}
	v := tb.View(Node{Name: "dist-1", Role: "distributor"}, cat, Filter{Dist: "app@2"})
	if len(v.Rollouts) != 1 {
		t.Fatalf("rollouts %+v", v.Rollouts)
	}
	r := v.Rollouts[0]
	want := map[string]int{"extracted": 1, "blocked": 1, "failed": 1, "receiving": 1, StateNotReporting: 1}
	for k, n := range want {
		if r.Counts[k] != n {
			t.Errorf("count %s = %d, want %d (%v)", k, r.Counts[k], n, r.Counts)
		}
	}
	if r.Subscribers != 5 || r.Blocked["needs db >= 3"] != 1 || r.Failed["disk full"] != 1 || r.Chunks != 10 || r.HaveChunks != 4 {
		t.Errorf("rollout %+v", r)
	}
	for state, want := range map[string][]string{"failed": {"web-03"}, StateNotReporting: {"web-05"}, "extracted": {"web-01"}} {
		v := tb.View(Node{Name: "dist-1", Role: "distributor"}, cat, Filter{Dist: "app@2", State: state})
		var got []string
		for _, n := range v.Nodes {
			got = append(got, n.Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("state %s: nodes %v, want %v", state, got, want)
		}
	}
	if v := tb.View(Node{Name: "dist-1"}, cat, Filter{Node: "web-0[12]"}); len(v.Nodes) != 2 {
		t.Errorf("--node web-0[12]: %d nodes", len(v.Nodes))
	}
	for _, f := range []Filter{{Dist: "app@x"}, {State: "happy"}, {Node: "["}} {
		if f.Validate() == nil {
			t.Errorf("filter %+v is valid", f)
		}
	}
}

// A full report replaces what the child reported before; one in several
// messages is checked at its last; Changes gives a reader far behind the
// whole table.
func TestTableFullReports(t *testing.T) {
	clk := newClock()
	top := New(Config{Self: "dist-1", Now: clk.now})
	top.Child(transport.NodeState{Name: "dist-2", Role: "distributor", Connected: true})
	first := &transport.Subtree{Full: true, Nodes: []transport.NodeState{sub("a", "dist-2"), sub("b", "dist-2")}}
	first.Count, first.Digest = 2, transport.NodeDigest(&first.Nodes[0])+transport.NodeDigest(&first.Nodes[1])
	if err := top.Apply("dist-2", first); err != nil {
		t.Fatal(err)
	}
	// Again, a whole report in two messages, without b.
	c := sub("c", "dist-2")
	if err := top.Apply("dist-2", &transport.Subtree{Full: true, More: true, Nodes: []transport.NodeState{first.Nodes[0]}}); err != nil {
		t.Fatalf("a first part is checked: %v", err)
	}
	if err := top.Apply("dist-2", &transport.Subtree{Nodes: []transport.NodeState{c}, Count: 2, Digest: transport.NodeDigest(&first.Nodes[0]) + transport.NodeDigest(&c)}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range top.View(Node{Name: "dist-1"}, nil, Filter{}).Nodes {
		names = append(names, n.Name)
	}
	if !slices.Equal(names, []string{"a", "c", "dist-1", "dist-2"}) {
		t.Fatalf("nodes %v", names)
	}
	// A child cannot report its parent or itself; what it says of them is
	// counted in its digest, as the child counts it, and kept out of the
	// table, so the summaries still match.
	self := sub("dist-1", "x")
	digest := transport.NodeDigest(&first.Nodes[0]) + transport.NodeDigest(&c) + transport.NodeDigest(&self)
	if err := top.Apply("dist-2", &transport.Subtree{Nodes: []transport.NodeState{self}, Count: 3, Digest: digest}); err != nil {
		t.Fatal(err)
	}
	if err := top.Apply("dist-2", &transport.Subtree{Count: 3, Digest: digest}); err != nil {
		t.Fatalf("the summary after an ignored record: %v", err)
	}
	for _, n := range top.View(Node{Name: "dist-1"}, nil, Filter{}).Nodes {
		if n.Name == "dist-1" && n.Parent == "x" {
			t.Fatal("a child reported its parent")
		}
	}
	_, _, full, _, count, _ := top.Changes(0)
	if !full || count != 3 {
		t.Fatalf("from 0: full %v, %d nodes", full, count)
	}
	// The whole report again, unchanged: no event, no change upward, and
	// the first-seen times stay.
	_, _, _, at, _, _ := top.Changes(0)
	firstBefore := top.View(Node{Name: "dist-1"}, nil, Filter{Node: "a"}).Nodes[0].FirstSeen
	clk.add(time.Hour)
	again := []transport.NodeState{first.Nodes[0], c, self}
	if err := top.Apply("dist-2", &transport.Subtree{Full: true, More: true, Nodes: again[:1]}); err != nil {
		t.Fatal(err)
	}
	// Between the parts, nothing is gone.
	if nodes, gone, _, _, _, _ := top.Changes(at); len(nodes) != 0 || len(gone) != 0 {
		t.Fatalf("mid-report: %d nodes changed, %v gone", len(nodes), gone)
	}
	if err := top.Apply("dist-2", &transport.Subtree{Nodes: again[1:], Count: 3, Digest: digest}); err != nil {
		t.Fatal(err)
	}
	if nodes, gone, _, _, _, _ := top.Changes(at); len(nodes) != 0 || len(gone) != 0 {
		t.Fatalf("an unchanged whole report: %d nodes changed, %v gone", len(nodes), gone)
	}
	if got := top.View(Node{Name: "dist-1"}, nil, Filter{Node: "a"}).Nodes[0].FirstSeen; !got.Equal(firstBefore) {
		t.Errorf("first seen moved from %v to %v", firstBefore, got)
	}
	// A whole report without c drops it at its end.
	if err := top.Apply("dist-2", &transport.Subtree{Full: true, Nodes: again[:1], Count: 1, Digest: transport.NodeDigest(&first.Nodes[0])}); err != nil {
		t.Fatal(err)
	}
	if _, gone, _, _, _, _ := top.Changes(at); !slices.Equal(gone, []string{"c"}) {
		t.Fatalf("gone %v, want c", gone)
	}
}

// An empty table does not ask its reporter for whole reports forever.
func TestEmptyTableChanges(t *testing.T) {
	tb := New(Config{Self: "dist-1"})
	_, _, full, at, _, _ := tb.Changes(0)
	if !full {
		t.Fatal("the first report is not whole")
	}
	if _, _, full, _, _, _ := tb.Changes(at); full {
		t.Fatal("an empty table asks for a whole report again")
	}
}

// The table saved and restored keeps nodes that do not come back, out of
// touch since the save; a live report replaces them.
func TestTableRestore(t *testing.T) {
	clk := newClock()
	tb := New(Config{Self: "dist-1", Now: clk.now, StaleAfter: time.Minute})
	first := clk.now().Add(-time.Hour)
	tb.Restore([]SavedNode{{NodeState: sub("web-01", "dist-1"), FirstSeen: first}, {NodeState: sub("web-02", "dist-1")}}, clk.now())
	clk.add(2 * time.Minute)
	if stale := staleNames(tb); !slices.Equal(stale, []string{"web-01", "web-02"}) {
		t.Fatalf("stale %v", stale)
	}
	tb.Child(sub("web-01", ""))
	if stale := staleNames(tb); !slices.Equal(stale, []string{"web-02"}) {
		t.Fatalf("stale %v after web-01 came back", stale)
	}
	if v := tb.View(Node{Name: "dist-1"}, nil, Filter{Node: "web-01"}); !v.Nodes[0].FirstSeen.Equal(first) {
		t.Errorf("web-01 first seen %v, want %v as saved", v.Nodes[0].FirstSeen, first)
	}
	// Forgotten after ForgetAfter.
	clk.add(DefaultForgetAfter)
	tb.Sweep()
	if v := tb.View(Node{Name: "dist-1"}, nil, Filter{}); len(v.Nodes) != 2 {
		t.Fatalf("%d nodes after forget_after, want dist-1 and web-01", len(v.Nodes))
	}
}

// The history keeps events by day, reads them back from a time, and
// drops whole days beyond its bounds.
func TestHistory(t *testing.T) {
	dir := t.TempDir()
	h, err := OpenHistory(HistoryConfig{Dir: dir, MaxAge: 48 * time.Hour, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for i := range 4 {
		h.Add([]Event{{Time: day.Add(time.Duration(i) * 24 * time.Hour), Kind: KindExtracted, Node: "web-01", Dist: "app", Revision: uint64(i + 1)}})
	}
	evs, err := h.Events(time.Time{}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Days older than two days before the last write are gone.
	var revs []uint64
	for _, ev := range evs {
		revs = append(revs, ev.Revision)
	}
	if !slices.Equal(revs, []uint64{2, 3, 4}) {
		t.Fatalf("revisions %v", revs)
	}
	if _, err := os.Stat(filepath.Join(dir, "2026-12-01.jsonl")); err == nil {
		t.Fatal("the day beyond max_age is still there")
	}
	if evs, _ := h.Events(day.Add(48*time.Hour), nil, 0); len(evs) != 2 {
		t.Fatalf("%d events from day 3, want 2", len(evs))
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	// A torn last line is skipped.
	f, _ := os.OpenFile(filepath.Join(dir, "2026-12-04.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"time":"2026-12-04T11:00:00Z","kind":"ext`)
	f.Close()
	h, _ = OpenHistory(HistoryConfig{Dir: dir})
	evs, err = h.Events(time.Time{}, func(ev *Event) bool { return ev.Revision == 4 }, 10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("%d events, %v", len(evs), err)
	}
}

// A line cut short by a crash does not swallow the next event.
func TestHistoryTornLine(t *testing.T) {
	dir := t.TempDir()
	day := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	if err := os.WriteFile(filepath.Join(dir, "2026-12-03.jsonl"), []byte(`{"time":"2026-12-03T09:00:00Z","kind":"ext`), 0o640); err != nil {
		t.Fatal(err)
	}
	h, err := OpenHistory(HistoryConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	h.Add([]Event{{Time: day, Kind: KindStale, Node: "web-01"}})
	evs, err := h.Events(time.Time{}, nil, 0)
	if err != nil || len(evs) != 1 || evs[0].Node != "web-01" {
		t.Fatalf("events %+v, %v", evs, err)
	}
}

// The tree: the answering node first, children under their parents,
// many subscribers collapsed, and a loop of parents shown once each.
func TestTree(t *testing.T) {
	v := &View{Node: "top", Nodes: []Node{
		{Name: "a", Parent: "top", Role: "distributor"},
		{Name: "s1", Parent: "a", Role: "subscriber"},
		{Name: "s2", Parent: "a", Role: "subscriber"},
		{Name: "top", Role: "distributor"},
		{Name: "x", Parent: "y", Role: "distributor"},
		{Name: "y", Parent: "x", Role: "distributor"},
	}}
	var got []string
	for _, r := range Tree(v, -1) {
		got = append(got, r.Prefix+r.Node.Name)
	}
	want := []string{"top", "└─ a", "   ├─ s1", "   └─ s2", "x", "└─ y"}
	if !slices.Equal(got, want) {
		t.Fatalf("tree %q, want %q", got, want)
	}
	rows := Tree(v, 1)
	last := rows[2]
	if len(rows) != 5 || last.Parent != "a" || len(last.Collapsed) != 2 || last.Prefix != "   └─ " {
		t.Fatalf("collapsed: %d rows, %+v", len(rows), last)
	}
}
