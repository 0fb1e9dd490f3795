package dependency

import (
	"cmp"
	"fmt"
	"slices"
	"sort"

	"github.com/Masterminds/semver/v3"
)

// Candidate is a revision received and verified but not yet extracted.
type Candidate struct {
	Name     string
	Revision uint64
	// Version is the revision's semantic version, checked against the
	// requirements of its dependants.
	Version  string
	Requires []Requirement
}

// Plan is the outcome of PlanExtraction. Every candidate given is in exactly
// one of Order, Blocked and Superseded.
type Plan struct {
	// Order lists the candidates to extract now, in this order: each one's
	// requirements hold once those before it are extracted.
	Order []Candidate
	// Blocked maps the name of every other candidate to why it must wait.
	Blocked map[string]string
	// Superseded lists candidates passed over because a higher revision of
	// the same distribution was also a candidate.
	Superseded []Candidate
}

// PlanExtraction plans one extract run. installed maps each distribution
// already extracted on this server to its version; candidates are the
// revisions waiting to be extracted (at most one per name is planned: the
// highest revision).
//
// A candidate is ready when each of its requirements is met by the version
// extracted at that point of the run, so a dependency that is itself a ready
// candidate and satisfies the constraint is put first and unblocks its
// dependants in the same run. Among ready candidates, one whose extraction
// would break a requirement that another waiting candidate currently meets
// goes last, and ties go by name, so the plan is deterministic.
func PlanExtraction(installed map[string]string, candidates []Candidate) Plan {
	return PlanExtractionReceiving(installed, candidates, nil)
}

// PlanExtractionReceiving is PlanExtraction where receiving names the
// distributions on their way to this server, so a revision waiting for one
// says it is being received rather than not yet received.
func PlanExtractionReceiving(installed map[string]string, candidates []Candidate, receiving map[string]bool) Plan {
	p := newPlanner(installed, candidates)
	p.receiving = receiving
	p.order()
	return p.result()
}

type entry struct {
	candidate  Candidate
	badVersion error // the version does not parse: never extracted
	ready      bool
	done       bool

	// Once blocked: how many "which is blocked" links lead from here to the
	// candidate blocked for a reason of its own (root), and that reason.
	depth   int
	root    string
	rootWhy string
}

type planner struct {
	state      map[string]string          // name → version extracted, updated as the run goes
	parsed     map[string]*semver.Version // version text → parsed; nil when it does not parse
	byName     map[string]*entry
	names      []string            // candidate names, sorted
	dependants map[string][]*entry // required name → candidates requiring it, once each
	receiving  map[string]bool     // names on their way here (for reasons)
	plan       Plan
}

func newPlanner(installed map[string]string, candidates []Candidate) *planner {
	p := &planner{
		state:      make(map[string]string, len(installed)+len(candidates)),
		parsed:     make(map[string]*semver.Version),
		byName:     make(map[string]*entry, len(candidates)),
		dependants: make(map[string][]*entry),
		plan:       Plan{Blocked: make(map[string]string)},
	}
	for name, v := range installed {
		p.state[name] = v
	}
	for _, c := range candidates {
		if old, ok := p.byName[c.Name]; ok {
			if c.Revision <= old.candidate.Revision {
				p.plan.Superseded = append(p.plan.Superseded, c)
				continue
			}
			p.plan.Superseded = append(p.plan.Superseded, old.candidate)
		}
		e := &entry{candidate: c}
		if _, err := semver.NewVersion(c.Version); err != nil {
			e.badVersion = err
		}
		p.byName[c.Name] = e
	}
	slices.SortFunc(p.plan.Superseded, func(a, b Candidate) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Revision, b.Revision))
	})
	for name, e := range p.byName {
		p.names = append(p.names, name)
		seen := make(map[string]bool)
		for _, r := range e.candidate.Requires {
			if !seen[r.Name] {
				seen[r.Name] = true
				p.dependants[r.Name] = append(p.dependants[r.Name], e)
			}
		}
	}
	sort.Strings(p.names)
	for _, e := range p.byName {
		e.ready = p.isReady(e)
	}
	return p
}

// allows reports whether version, when present, meets r.
func (p *planner) allows(r Requirement, version string, present bool) bool {
	if !present {
		return false
	}
	if r.Constraint == nil {
		return true
	}
	v := p.version(version)
	return v != nil && r.Constraint.Check(v)
}

func (p *planner) version(text string) *semver.Version {
	v, ok := p.parsed[text]
	if !ok {
		v, _ = semver.NewVersion(text) // nil when it does not parse
		p.parsed[text] = v
	}
	return v
}

// met reports whether r holds for what is extracted now.
func (p *planner) met(r Requirement) bool {
	v, ok := p.state[r.Name]
	return p.allows(r, v, ok)
}

func (p *planner) isReady(e *entry) bool {
	if e.done || e.badVersion != nil {
		return false
	}
	for _, r := range e.candidate.Requires {
		if !p.met(r) {
			return false
		}
	}
	return true
}

// harms reports whether extracting e would break a requirement that another
// waiting candidate meets now (an upgrade past what a dependant accepts).
func (p *planner) harms(e *entry) bool {
	for _, d := range p.dependants[e.candidate.Name] {
		if d == e || d.done {
			continue
		}
		for _, r := range d.candidate.Requires {
			if r.Name == e.candidate.Name && p.met(r) && !p.allows(r, e.candidate.Version, true) {
				return true
			}
		}
	}
	return false
}

// order extracts, on paper, one ready candidate at a time until none is ready.
func (p *planner) order() {
	for {
		var pick, fallback *entry
		for _, name := range p.names {
			e := p.byName[name]
			if !e.ready || e.done {
				continue
			}
			if fallback == nil {
				fallback = e
			}
			if !p.harms(e) {
				pick = e
				break
			}
		}
		if pick == nil {
			pick = fallback
		}
		if pick == nil {
			return
		}
		pick.done, pick.ready = true, false
		p.state[pick.candidate.Name] = pick.candidate.Version
		p.plan.Order = append(p.plan.Order, pick.candidate)
		for _, d := range p.dependants[pick.candidate.Name] {
			d.ready = p.isReady(d)
		}
	}
}

// waitsOn returns the blocked candidate that r waits for, if r is unmet and
// that candidate would meet it.
func (p *planner) waitsOn(r Requirement) *entry {
	if p.met(r) {
		return nil
	}
	d := p.byName[r.Name]
	if d == nil || d.done || !p.allows(r, d.candidate.Version, true) {
		return nil
	}
	return d
}

func (p *planner) result() Plan {
	graph := make(map[string][]string)
	for _, name := range p.names {
		e := p.byName[name]
		if e.done {
			continue
		}
		graph[name] = nil
		for _, r := range e.candidate.Requires {
			if d := p.waitsOn(r); d != nil {
				graph[name] = append(graph[name], d.candidate.Name)
			}
		}
	}
	for name, cycle := range cyclesThrough(graph) {
		e := p.byName[name]
		e.root, e.rootWhy = name, "cycle: "+FormatCycle(cycle)
		p.plan.Blocked[name] = e.rootWhy
	}
	visiting := make(map[string]bool)
	for _, name := range p.names {
		if e := p.byName[name]; !e.done {
			p.reason(e, visiting)
		}
	}
	return p.plan
}

// reason works out, once, why e is blocked. A dependant's reason includes
// its dependency's, so a person sees the chain down to the cause; past
// maxChain links it names only the cause, so reasons stay short.
func (p *planner) reason(e *entry, visiting map[string]bool) string {
	name := e.candidate.Name
	if why, ok := p.plan.Blocked[name]; ok {
		return why
	}
	e.root = name
	if visiting[name] { // only on a cycle, and cycles are named first
		e.rootWhy = "waits on itself"
		return e.rootWhy
	}
	visiting[name] = true
	why := p.explain(e, visiting)
	delete(visiting, name)
	if e.depth == 0 {
		e.rootWhy = why
	}
	p.plan.Blocked[name] = why
	return why
}

// maxChain bounds how many "which is blocked" links one reason spells out.
const maxChain = 3

func (p *planner) explain(e *entry, visiting map[string]bool) string {
	if e.badVersion != nil {
		return fmt.Sprintf("version %q is not a semantic version", e.candidate.Version)
	}
	for _, r := range e.candidate.Requires {
		if p.met(r) {
			continue
		}
		if d := p.waitsOn(r); d != nil {
			why := p.reason(d, visiting)
			e.depth, e.root, e.rootWhy = d.depth+1, d.root, d.rootWhy
			if d.depth < maxChain {
				return fmt.Sprintf("requires %s, which is blocked: %s", r, why)
			}
			return fmt.Sprintf("requires %s, which is blocked because %s, %d levels down, is blocked: %s", r, d.root, e.depth, d.rootWhy)
		}
		current, extracted := p.state[r.Name]
		received := p.byName[r.Name]
		if received != nil && received.done {
			received = nil
		}
		if !extracted && received == nil {
			if p.receiving[r.Name] {
				return fmt.Sprintf("waiting for %s, being received", r)
			}
			return fmt.Sprintf("waiting for %s, not yet received", r)
		}
		why := "requires " + r.String()
		if extracted {
			why += fmt.Sprintf("; extracted: %s %s", r.Name, p.describe(current))
		}
		if received != nil {
			why += fmt.Sprintf("; received: %s %s", r.Name, p.describe(received.candidate.Version))
		}
		return why
	}
	return "not ready" // not reached: order stops only when no candidate is ready
}

func (p *planner) describe(version string) string {
	if p.version(version) == nil {
		return version + " (not a semantic version)"
	}
	return version
}
