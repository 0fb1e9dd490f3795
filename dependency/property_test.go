package dependency

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/Masterminds/semver/v3"
	"pgregory.net/rapid"
)

var (
	genNames    = []string{"a", "b", "c", "d", "e", "f", "g"}
	genMissing  = []string{"x", "y"} // never installed nor received
	genVersions = []string{"1.0.0", "1.5.0", "2.0.0", "2.1.0", "3.0.0", "junk"}
	genConstr   = []string{"", " >=1.5", " <2", " ^1", " >=2, <3", " !=2.0.0"}
)

// genPlanInput draws an installed set and candidates with unique names. With
// disjoint set, nothing received is also installed, so every requirement on a
// candidate waits for it and cycles among candidates can never resolve.
func genPlanInput(t *rapid.T, disjoint bool) (map[string]string, []Candidate) {
	candNames := rapid.SliceOfNDistinct(rapid.SampledFrom(genNames), 0, len(genNames), rapid.ID[string]).Draw(t, "candidates")
	installed := map[string]string{}
	for _, n := range genNames {
		if disjoint && slices.Contains(candNames, n) {
			continue
		}
		if rapid.Bool().Draw(t, "installed "+n) {
			installed[n] = rapid.SampledFrom(genVersions).Draw(t, "installed version "+n)
		}
	}
	pool := append(slices.Clone(genNames), genMissing...)
	var cands []Candidate
	for _, n := range candNames {
		c := Candidate{
			Name:     n,
			Revision: rapid.Uint64Range(1, 9).Draw(t, "revision "+n),
			Version:  rapid.SampledFrom(genVersions).Draw(t, "version "+n),
		}
		for _, dep := range rapid.SliceOfN(rapid.SampledFrom(pool), 0, 3).Draw(t, "requires "+n) {
			s := dep + rapid.SampledFrom(genConstr).Draw(t, "constraint")
			r, err := ParseRequirement(s)
			if err != nil {
				t.Fatalf("generator made a bad requirement %q: %v", s, err)
			}
			c.Requires = append(c.Requires, r)
		}
		cands = append(cands, c)
	}
	return installed, cands
}

func checkPlan(t *rapid.T, installed map[string]string, cands []Candidate, plan Plan) {
	// Order and Blocked partition the candidates.
	seen := map[string]int{}
	for _, c := range plan.Order {
		seen[c.Name]++
	}
	for n, why := range plan.Blocked {
		seen[n]++
		if why == "" {
			t.Fatalf("%s blocked without a reason", n)
		}
	}
	if len(plan.Superseded) != 0 {
		t.Fatalf("Superseded = %v with unique names", plan.Superseded)
	}
	for _, c := range cands {
		if seen[c.Name] != 1 {
			t.Fatalf("%s is in Order or Blocked %d times, plan %+v", c.Name, seen[c.Name], plan)
		}
	}
	if len(seen) != len(cands) {
		t.Fatalf("plan names %d distributions, %d candidates given", len(seen), len(cands))
	}

	// The order respects every edge: each requirement holds when its
	// candidate's turn comes.
	state := maps.Clone(installed)
	for _, c := range plan.Order {
		for _, r := range c.Requires {
			v, ok := state[r.Name]
			if !ok || !r.Allows(v) {
				t.Fatalf("%s extracted while %q is unmet (have %q), order %v", c.Name, r, v, names(plan.Order))
			}
		}
		state[c.Name] = c.Version
	}

	// Nothing ready is reported blocked: each blocked candidate has a bad
	// version or a requirement unmet by what the run leaves extracted.
	for _, c := range cands {
		if _, blocked := plan.Blocked[c.Name]; !blocked {
			continue
		}
		if _, err := semver.NewVersion(c.Version); err != nil {
			continue // bad version
		}
		unmet := false
		for _, r := range c.Requires {
			v, ok := state[r.Name]
			unmet = unmet || !ok || !r.Allows(v)
		}
		if !unmet {
			t.Fatalf("%s is ready but blocked: %q", c.Name, plan.Blocked[c.Name])
		}
	}
}

func TestPropertyPlan(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		installed, cands := genPlanInput(t, rapid.Bool().Draw(t, "disjoint"))
		plan := PlanExtraction(installed, cands)
		checkPlan(t, installed, cands, plan)

		shuffled := rapid.Permutation(cands).Draw(t, "shuffled")
		if again := PlanExtraction(installed, shuffled); !reflect.DeepEqual(again, plan) {
			t.Fatalf("plan depends on candidate order:\n%+v\n%+v", plan, again)
		}
	})
}

func TestPropertyPlanCycles(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		installed, cands := genPlanInput(t, true)
		plan := PlanExtraction(installed, cands)
		checkPlan(t, installed, cands, plan)

		// edge c → d when candidate d would meet one of c's requirements
		edge := map[[2]string]bool{}
		byName := map[string]Candidate{}
		for _, c := range cands {
			byName[c.Name] = c
		}
		for _, c := range cands {
			for _, r := range c.Requires {
				if d, ok := byName[r.Name]; ok && r.Allows(d.Version) {
					edge[[2]string{c.Name, d.Name}] = true
				}
			}
		}
		reach := closure(edge, slices.Collect(maps.Keys(byName)))
		for _, c := range cands {
			why := plan.Blocked[c.Name]
			onCycle := reach[[2]string{c.Name, c.Name}]
			if onCycle != strings.HasPrefix(why, "cycle: ") {
				t.Fatalf("%s: on a cycle %v, reason %q", c.Name, onCycle, why)
			}
			if !onCycle {
				continue
			}
			members := strings.Split(strings.TrimPrefix(why, "cycle: "), " → ")
			if !slices.Contains(members, c.Name) || members[0] != members[len(members)-1] {
				t.Fatalf("%s: reason %q does not name a cycle through it", c.Name, why)
			}
			for i := 1; i < len(members); i++ {
				if !edge[[2]string{members[i-1], members[i]}] {
					t.Fatalf("%s: reason %q: no edge %s → %s", c.Name, why, members[i-1], members[i])
				}
			}
		}
	})
}

func TestPropertyPlanDuplicates(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		installed, cands := genPlanInput(t, false)
		var all []Candidate
		for _, c := range cands {
			n := rapid.IntRange(1, 3).Draw(t, "copies")
			for i := range n {
				copyOf := c
				copyOf.Revision = c.Revision*10 + uint64(i)
				all = append(all, copyOf)
			}
		}
		all = rapid.Permutation(all).Draw(t, "shuffled")
		plan := PlanExtraction(installed, all)
		if len(plan.Order)+len(plan.Blocked)+len(plan.Superseded) != len(all) {
			t.Fatalf("%d candidates, plan accounts for %d+%d+%d", len(all), len(plan.Order), len(plan.Blocked), len(plan.Superseded))
		}
		for _, s := range plan.Superseded {
			higher := func(c Candidate) bool { return c.Name == s.Name && c.Revision > s.Revision }
			if !slices.ContainsFunc(all, higher) {
				t.Fatalf("%s revision %d superseded by nothing higher", s.Name, s.Revision)
			}
		}
	})
}

func TestPropertyFindCycle(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		graph := map[string][]string{}
		edge := map[[2]string]bool{}
		for _, n := range rapid.SliceOfNDistinct(rapid.SampledFrom(genNames), 0, len(genNames), rapid.ID[string]).Draw(t, "nodes") {
			deps := rapid.SliceOfN(rapid.SampledFrom(genNames), 0, 3).Draw(t, "deps "+n)
			graph[n] = deps
			for _, d := range deps {
				edge[[2]string{n, d}] = true
			}
		}
		reach := closure(edge, genNames)
		cyclic := false
		for _, n := range genNames {
			cyclic = cyclic || reach[[2]string{n, n}]
		}
		got := FindCycle(graph)
		if (got != nil) != cyclic {
			t.Fatalf("FindCycle = %v, graph cyclic: %v", got, cyclic)
		}
		if got == nil {
			return
		}
		if got[0] != got[len(got)-1] || got[0] != slices.Min(got) {
			t.Fatalf("FindCycle = %v: want the smallest member first and last", got)
		}
		inner := slices.Clone(got[:len(got)-1])
		slices.Sort(inner)
		if len(slices.Compact(inner)) != len(got)-1 {
			t.Fatalf("FindCycle = %v repeats a member", got)
		}
		for i := 1; i < len(got); i++ {
			if !edge[[2]string{got[i-1], got[i]}] {
				t.Fatalf("FindCycle = %v: no edge %s → %s", got, got[i-1], got[i])
			}
		}
		if again := FindCycle(maps.Clone(graph)); !slices.Equal(again, got) {
			t.Fatalf("FindCycle not deterministic: %v then %v", got, again)
		}
	})
}

// closure returns the transitive closure of edge over nodes (Floyd–Warshall):
// reach[{a, b}] when a path of one or more edges leads from a to b.
func closure(edge map[[2]string]bool, nodes []string) map[[2]string]bool {
	reach := maps.Clone(edge)
	for _, k := range nodes {
		for _, i := range nodes {
			for _, j := range nodes {
				if reach[[2]string{i, k}] && reach[[2]string{k, j}] {
					reach[[2]string{i, j}] = true
				}
			}
		}
	}
	return reach
}
