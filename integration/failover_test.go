//go:build linux

package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// journalHistory reads a cluster's journal history (none yet: empty).
func (c *aCluster) journalHistory(t *testing.T) []journalLine {
	t.Helper()
	lines, bad, err := readJournalHistory(c.shared)
	if err != nil || len(bad) > 0 {
		t.Fatalf("journal history of %s: %v %v", c.name, err, bad)
	}
	return lines
}

// activeNow returns the running node of c whose status says active, or
// nil; it fails the test if two do.
func (c *aCluster) activeNow(t *testing.T) *node {
	t.Helper()
	var got *node
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		if st, err := n.subscriberStatus(); err == nil && st.Role == "active" {
			if got != nil {
				t.Fatalf("two active nodes in %s: %s and %s", c.name, got.name, n.name)
			}
			got = n
		}
	}
	return got
}

// TestClusterFailoverInARow kills the active node of a 2-, a 3- and a
// 5-node cluster again and again until one node is left, and logs how long
// each cluster had no active node after each kill (bench/failover.sh reads
// these lines; the budget is 15 s). Every cluster ends with the revision
// extracted once.
func TestClusterFailoverInARow(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	sizes := map[string][]string{
		"web-c2": {"c2-a", "c2-b"},
		"web-c3": {"c3-a", "c3-b", "c3-c"},
		"web-c5": {"c5-a", "c5-b", "c5-c", "c5-d", "c5-e"},
	}
	names := []string{"web-c2", "web-c3", "web-c5"}
	clusters := map[string][]string{}
	for _, name := range names {
		clusters[name] = []string{name}
	}
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: names},
	}, clusters: clusters})
	var cs []*aCluster
	for _, name := range names {
		cs = append(cs, nw.cluster(name, sizes[name], dist1))
	}
	nw.build("1.0.0")
	nw.publish("app", dist1)
	for _, c := range cs {
		c.active(t).waitState(1, "extracted")
	}
	for round := 1; ; round++ {
		killed := map[*aCluster]*node{}
		for _, c := range cs {
			if running := c.running(); running > 1 {
				killed[c] = c.active(t)
			}
		}
		if len(killed) == 0 {
			break
		}
		start := time.Now()
		for _, n := range killed {
			n.kill()
		}
		took := map[*aCluster]time.Duration{}
		waitForWithin(t, time.Minute, fmt.Sprintf("round %d: a new active node in each cluster", round), func() (bool, string) {
			for c := range killed {
				if _, done := took[c]; !done && c.activeNow(t) != nil {
					took[c] = time.Since(start)
				}
			}
			return len(took) == len(killed), fmt.Sprint(took)
		})
		for c, old := range killed {
			next := c.active(t)
			t.Logf("%s: %s active %.1fs after %s was killed (kill %d of %d)", c.name, next.name, took[c].Seconds(), old.name, round, len(c.nodes)-1)
		}
	}
	for _, c := range cs {
		if n := c.extractions(1); n != 1 {
			t.Errorf("%s extracted app@1 %d times, want once", c.name, n)
		}
	}
}

// running counts the running nodes of c.
func (c *aCluster) running() int {
	n := 0
	for _, x := range c.nodes {
		if x.running() {
			n++
		}
	}
	return n
}

// TestClusterParentRestartMidExtraction kills the parent distributor while the active
// node extracts a revision of many files and starts it again 3 s later:
// the cluster is without an active node for at most one lease TTL plus
// 2 s (logged; bench/failover.sh reads it), and the extraction goes on
// where it was: never rolled back, never begun again.
func TestClusterParentRestartMidExtraction(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-c2"}},
	}, clusters: map[string][]string{"web-c2": {"web-c2"}}})
	c := nw.cluster("web-c2", []string{"c2-a", "c2-b"}, dist1)
	nw.build("1.0.0")
	nw.publish("app", dist1)
	c.active(t).waitState(1, "extracted")

	// Revision 2: thousands of files, each synced: seconds to extract.
	for i := range 4000 {
		writeFile(t, filepath.Join(nw.src, fmt.Sprintf("many/%02d/f%04d.txt", i%40, i)), []byte(strings.Repeat(fmt.Sprint(i), 200)), 0o644)
	}
	nw.build("2.0.0")
	src2 := filepath.Join(nw.dir, "site-2")
	copyTree(t, nw.src, src2)
	nw.publish("app", dist1)
	waitFor(t, "the extraction of app@2 under way", func() (bool, string) {
		for _, l := range c.journalHistory(t) {
			if l.To == 2 && l.Step == "write" && l.Written > 0 {
				return true, ""
			}
		}
		return false, "no checkpoint of app@2 yet"
	})
	killed := time.Now()
	dist1.kill()
	// Sample the roles every 100 ms until the parent has been back long
	// enough for the cluster to settle.
	var lastActive, gapStart time.Time
	var gap time.Duration
	restarted := false
	for deadline := killed.Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) { // sampling, not synchronising
		if !restarted && time.Since(killed) >= 3*time.Second {
			dist1.start()
			restarted = true
		}
		now := time.Now()
		if c.activeNow(t) != nil {
			if !gapStart.IsZero() {
				gap = max(gap, now.Sub(gapStart))
				gapStart = time.Time{}
			}
			lastActive = now
			if restarted && time.Since(killed) > 15*time.Second {
				break
			}
			continue
		}
		if gapStart.IsZero() {
			gapStart = lastActive
			if gapStart.IsZero() {
				gapStart = killed
			}
		}
	}
	if !gapStart.IsZero() {
		t.Fatalf("no active node %v after the parent was killed", time.Since(gapStart).Round(100*time.Millisecond))
	}
	t.Logf("parent restart: %.1fs without an active node (budget: lease TTL 6 s + 2 s)", gap.Seconds())
	c.active(t).waitState(2, "extracted")
	requireTree(t, filepath.Join(c.root, "app"), src2)
	begins := 0
	for _, l := range c.journalHistory(t) {
		if l.To == 2 && l.Step == "begin" {
			begins++
		}
		if l.From == 2 && l.Step == "restore" {
			t.Errorf("app@2 was rolled back: %+v", l)
		}
	}
	if begins != 1 {
		t.Errorf("app@2 was begun %d times, want once (carried on, not redone)", begins)
	}
	if n := c.extractions(2); n != 1 {
		t.Errorf("app@2 extracted %d times, want once", n)
	}
}
