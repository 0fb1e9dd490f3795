package dependency

import (
	"fmt"
	"maps"
	"slices"
	"testing"
)

// cand builds a candidate at revision 1.
func cand(t testing.TB, name, version string, requires ...string) Candidate {
	t.Helper()
	c := Candidate{Name: name, Revision: 1, Version: version}
	for _, s := range requires {
		c.Requires = append(c.Requires, mustRequire(t, s))
	}
	return c
}

func names(cs []Candidate) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func TestPlanExtraction(t *testing.T) {
	tests := []struct {
		name      string
		installed map[string]string
		cands     func(t testing.TB) []Candidate
		order     []string
		blocked   map[string]string
	}{
		{
			name:      "runtime arrived first",
			installed: map[string]string{"runtime": "2.1.0"},
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "app", "1.0.0", "runtime >=2.0")}
			},
			order: []string{"app"},
		},
		{
			name: "runtime arrives after",
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "app", "1.0.0", "runtime >=2.0")}
			},
			blocked: map[string]string{"app": "waiting for runtime >=2.0, not yet received"},
		},
		{
			name: "runtime in the same run",
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "app", "1.0.0", "runtime >=2.0"), cand(t, "runtime", "2.0.0")}
			},
			order: []string{"runtime", "app"},
		},
		{
			name: "chain in the same run",
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "a", "1.0.0", "b"), cand(t, "b", "1.0.0", "c"), cand(t, "c", "1.0.0")}
			},
			order: []string{"c", "b", "a"},
		},
		{
			name:      "version not satisfying",
			installed: map[string]string{"runtime": "1.4.0"},
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "app", "1.0.0", "runtime >=2.0")}
			},
			blocked: map[string]string{"app": "requires runtime >=2.0; extracted: runtime 1.4.0"},
		},
		{
			name:      "received version not satisfying either",
			installed: map[string]string{"runtime": "1.4.0"},
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "app", "1.0.0", "runtime >=2.0"), cand(t, "runtime", "1.5.0")}
			},
			order:   []string{"runtime"},
			blocked: map[string]string{"app": "requires runtime >=2.0; extracted: runtime 1.5.0"},
		},
		{
			name: "received but not extractable and not satisfying",
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "app", "1.0.0", "runtime >=2.0"), cand(t, "runtime", "1.5.0", "certs")}
			},
			blocked: map[string]string{
				"runtime": "waiting for certs, not yet received",
				"app":     "requires runtime >=2.0; received: runtime 1.5.0",
			},
		},
		{
			name:      "bare name installed",
			installed: map[string]string{"certs": "0.0.1"},
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "app", "1.0.0", "certs")}
			},
			order: []string{"app"},
		},
		{
			name: "bare name missing",
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "app", "1.0.0", "certs", "runtime")}
			},
			blocked: map[string]string{"app": "waiting for certs, not yet received"},
		},
		{
			name: "cycle of two",
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "b", "1.0.0", "a"), cand(t, "a", "1.0.0", "b"), cand(t, "c", "1.0.0")}
			},
			order:   []string{"c"},
			blocked: map[string]string{"a": "cycle: a → b → a", "b": "cycle: a → b → a"},
		},
		{
			name: "cycle of three and a dependant",
			cands: func(t testing.TB) []Candidate {
				return []Candidate{
					cand(t, "a", "1.0.0", "b >=1"), cand(t, "b", "1.0.0", "c"), cand(t, "c", "1.0.0", "a"),
					cand(t, "web", "1.0.0", "a"),
				}
			},
			blocked: map[string]string{
				"a":   "cycle: a → b → c → a",
				"b":   "cycle: a → b → c → a",
				"c":   "cycle: a → b → c → a",
				"web": "requires a, which is blocked: cycle: a → b → c → a",
			},
		},
		{
			name: "self requirement",
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "a", "2.0.0", "a >=2")}
			},
			blocked: map[string]string{"a": "cycle: a → a"},
		},
		{
			name:      "cycle already installed is an upgrade",
			installed: map[string]string{"a": "1.0.0", "b": "1.0.0"},
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "a", "1.1.0", "b"), cand(t, "b", "1.1.0", "a")}
			},
			order: []string{"a", "b"},
		},
		{
			name:      "dependant of a blocked candidate",
			installed: map[string]string{"runtime": "1.4.0"},
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "web", "1.0.0", "app"), cand(t, "app", "1.0.0", "runtime >=2.0")}
			},
			blocked: map[string]string{
				"app": "requires runtime >=2.0; extracted: runtime 1.4.0",
				"web": "requires app, which is blocked: requires runtime >=2.0; extracted: runtime 1.4.0",
			},
		},
		{
			name:      "upgrade that would satisfy is blocked",
			installed: map[string]string{"runtime": "1.4.0"},
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "app", "1.0.0", "runtime >=2.0"), cand(t, "runtime", "2.0.0", "glibc")}
			},
			blocked: map[string]string{
				"runtime": "waiting for glibc, not yet received",
				"app":     "requires runtime >=2.0, which is blocked: waiting for glibc, not yet received",
			},
		},
		{
			name:      "satisfied by the installed version, before an upgrade past it",
			installed: map[string]string{"runtime": "2.1.0"},
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "runtime", "3.0.0"), cand(t, "app", "1.0.0", "runtime >=2.0, <3")}
			},
			order: []string{"app", "runtime"},
		},
		{
			name: "bad candidate version",
			cands: func(t testing.TB) []Candidate {
				return []Candidate{
					cand(t, "runtime", "two"),
					cand(t, "app", "1.0.0", "runtime"),
					cand(t, "tool", "1.0.0", "runtime >=2"),
				}
			},
			blocked: map[string]string{
				"runtime": `version "two" is not a semantic version`,
				"app":     `requires runtime, which is blocked: version "two" is not a semantic version`,
				"tool":    "requires runtime >=2; received: runtime two (not a semantic version)",
			},
		},
		{
			name:      "bad installed version",
			installed: map[string]string{"runtime": "junk"},
			cands: func(t testing.TB) []Candidate {
				return []Candidate{cand(t, "app", "1.0.0", "runtime >=2"), cand(t, "tool", "1.0.0", "runtime")}
			},
			order:   []string{"tool"},
			blocked: map[string]string{"app": "requires runtime >=2; extracted: runtime junk (not a semantic version)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cands := tt.cands(t)
			for range 3 { // map order must not matter
				plan := PlanExtraction(tt.installed, cands)
				if got := names(plan.Order); !slices.Equal(got, append([]string{}, tt.order...)) {
					t.Errorf("Order = %v, want %v", got, tt.order)
				}
				want := tt.blocked
				if want == nil {
					want = map[string]string{}
				}
				if !maps.Equal(plan.Blocked, want) {
					t.Errorf("Blocked =\n%q\nwant\n%q", plan.Blocked, want)
				}
				if len(plan.Superseded) != 0 {
					t.Errorf("Superseded = %v", plan.Superseded)
				}
			}
		})
	}
}

func TestPlanExtractionSupersededRevisions(t *testing.T) {
	old := cand(t, "app", "1.0.0", "runtime >=9")
	newer := cand(t, "app", "1.1.0")
	newer.Revision = 2
	older := cand(t, "app", "0.9.0")
	older.Revision = 0
	plan := PlanExtraction(nil, []Candidate{old, newer, older})
	if len(plan.Order) != 1 || plan.Order[0].Revision != 2 || len(plan.Blocked) != 0 {
		t.Fatalf("plan = %+v, want revision 2 of app extracted", plan)
	}
	if len(plan.Superseded) != 2 || plan.Superseded[0].Revision != 0 || plan.Superseded[1].Revision != 1 {
		t.Fatalf("Superseded = %+v, want revisions 0 and 1", plan.Superseded)
	}
}

func TestPlanExtractionLongChain(t *testing.T) {
	// d0 requires d1 requires … requires d{n-1}, which waits for certs.
	const n = 3000
	name := func(i int) string { return fmt.Sprintf("d%04d", i) }
	cands := make([]Candidate, n)
	for i := range n {
		dep := "certs"
		if i+1 < n {
			dep = name(i + 1)
		}
		cands[i] = cand(t, name(i), "1.0.0", dep)
	}
	plan := PlanExtraction(nil, cands)
	if len(plan.Order) != 0 || len(plan.Blocked) != n {
		t.Fatalf("Order %d, Blocked %d, want 0 and %d", len(plan.Order), len(plan.Blocked), n)
	}
	want := map[string]string{
		name(n - 1): "waiting for certs, not yet received",
		name(n - 2): "requires d2999, which is blocked: waiting for certs, not yet received",
		name(n - 4): "requires d2997, which is blocked: requires d2998, which is blocked: requires d2999, which is blocked: waiting for certs, not yet received",
		name(0):     "requires d0001, which is blocked because d2999, 2999 levels down, is blocked: waiting for certs, not yet received",
	}
	for k, w := range want {
		if got := plan.Blocked[k]; got != w {
			t.Errorf("Blocked[%s] = %q, want %q", k, got, w)
		}
	}

	// Once certs is extracted the whole chain goes, bottom first.
	plan = PlanExtraction(map[string]string{"certs": "1.0.0"}, cands)
	if len(plan.Order) != n || plan.Order[0].Name != name(n-1) || plan.Order[n-1].Name != name(0) {
		t.Fatalf("Order has %d, first %s", len(plan.Order), plan.Order[0].Name)
	}
}

func BenchmarkPlanExtraction(b *testing.B) {
	// 1000 candidates, each requiring the three before it.
	cands := make([]Candidate, 1000)
	for i := range cands {
		c := cand(b, fmt.Sprintf("d%04d", i), "1.0.0")
		for j := max(0, i-3); j < i; j++ {
			c.Requires = append(c.Requires, mustRequire(b, fmt.Sprintf("d%04d >=1.0", j)))
		}
		cands[i] = c
	}
	for b.Loop() {
		if plan := PlanExtraction(nil, cands); len(plan.Order) != len(cands) {
			b.Fatalf("Order %d", len(plan.Order))
		}
	}
}

func TestPlanSaysBeingReceived(t *testing.T) {
	app := Candidate{Name: "app", Revision: 1, Version: "1.0.0", Requires: []Requirement{mustRequire(t, "runtime >=2.0")}}
	plan := PlanExtractionReceiving(nil, []Candidate{app}, map[string]bool{"runtime": true})
	if got := plan.Blocked["app"]; got != "waiting for runtime >=2.0, being received" {
		t.Fatalf("reason %q", got)
	}
	if got := PlanExtraction(nil, []Candidate{app}).Blocked["app"]; got != "waiting for runtime >=2.0, not yet received" {
		t.Fatalf("reason without receiving %q", got)
	}
}
