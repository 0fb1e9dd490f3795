package console

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"ted/fleet"
)

// summary is the line at the top of every page.
type summary struct {
	Distributors, Subscribers, Stale int
}

// summarize counts the nodes below the answering one.
func summarize(v *fleet.View) summary {
	var s summary
	for i := range v.Nodes {
		n := &v.Nodes[i]
		if n.Name == v.Node {
			continue
		}
		if n.Role == "distributor" {
			s.Distributors++
		} else {
			s.Subscribers++
		}
		if n.Stale {
			s.Stale++
		}
	}
	return s
}

// barOrder is the order of a rollout's states in its bar and its counts:
// done first, then under way, then trouble, then silence.
var barOrder = []string{"extracted", "received", "receiving", "blocked", "failed", "rolled_back", fleet.StateNotReporting, fleet.StateStale, "superseded"}

// overviewPage is /.
type overviewPage struct {
	page
	Rollouts     []rolloutView
	Problems     []*fleet.Node
	MoreProblems int
}

// maxProblems bounds the nodes with a problem listed on the overview.
const maxProblems = 50

// rolloutView is one revision's block on the overview.
type rolloutView struct {
	Key         string // name@rev
	Name        string
	Revision    uint64
	Version     string
	Subscribers int
	Extracted   int
	// Percent is the share extracted, rounded down.
	Percent  int
	Segments []segment
	Counts   []count
	Blocked  []count
	Failed   []count
	// Chunks and HaveChunks: the receiving subscribers' progress.
	Chunks, HaveChunks int64
	ChunkPercent       int64
	NotReporting       int
	Stale              int
}

// segment is one state's part of a progress bar, in thousandths.
type segment struct {
	State string
	Count int
	X, W  int
}

// count is a state, a reason or an error with how many, and the link to
// the nodes counted.
type count struct {
	Key   string
	Count int
	Link  string
}

func rolloutsOf(v *fleet.View, f fleet.Filter) []rolloutView {
	out := make([]rolloutView, 0, len(v.Rollouts))
	for _, r := range v.Rollouts {
		key := r.Name + "@" + strconv.FormatUint(r.Revision, 10)
		rv := rolloutView{Key: key, Name: r.Name, Revision: r.Revision, Version: r.Version, Subscribers: r.Subscribers,
			Extracted: r.Counts["extracted"], Chunks: r.Chunks, HaveChunks: r.HaveChunks,
			NotReporting: r.Counts[fleet.StateNotReporting], Stale: r.Counts[fleet.StateStale]}
		if r.Subscribers > 0 {
			rv.Percent = 100 * rv.Extracted / r.Subscribers
		}
		if r.Chunks > 0 {
			rv.ChunkPercent = 100 * r.HaveChunks / r.Chunks
		}
		link := func(state string) string {
			q := url.Values{"dist": {key}}
			if state != "" {
				q.Set("state", state)
			}
			if f.Node != "" {
				q.Set("node", f.Node)
			}
			return "/tree?" + q.Encode()
		}
		total := 0
		for _, st := range barOrder {
			total += r.Counts[st]
		}
		x := 0
		for _, st := range barOrder {
			n := r.Counts[st]
			if n == 0 {
				continue
			}
			rv.Counts = append(rv.Counts, count{Key: st, Count: n, Link: link(st)})
			w := 1000 * n / total
			rv.Segments = append(rv.Segments, segment{State: st, Count: n, X: x, W: w})
			x += w
		}
		if len(rv.Segments) > 0 {
			// Rounding: the last segment takes what is left.
			rv.Segments[len(rv.Segments)-1].W = 1000 - rv.Segments[len(rv.Segments)-1].X
		}
		rv.Blocked = groups(r.Blocked, link("blocked"))
		rv.Failed = groups(r.Failed, link("failed"))
		out = append(out, rv)
	}
	return out
}

// groups are blocked reasons or failure errors, most first.
func groups(m map[string]int, link string) []count {
	out := make([]count, 0, len(m))
	for k, n := range m {
		out = append(out, count{Key: k, Count: n, Link: link})
	}
	slices.SortFunc(out, func(a, b count) int { return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Key, b.Key)) })
	return out
}

// problemsOf are the nodes that say something is wrong, at most max,
// and how many more there are.
func problemsOf(v *fleet.View, max int) ([]*fleet.Node, int) {
	var out []*fleet.Node
	more := 0
	for i := range v.Nodes {
		if v.Nodes[i].Problem == "" {
			continue
		}
		if len(out) == max {
			more++
			continue
		}
		out = append(out, &v.Nodes[i])
	}
	return out, more
}

// stateRank orders a node's revision states from the most to the least
// in need of attention: its row shows the first.
var stateRank = map[string]int{"failed": 7, "blocked": 6, "rolled_back": 5, "receiving": 4, "received": 3, "extracted": 2, "superseded": 1}

// nodeState sums up a node in one word: stale, or the state of its
// revisions most in need of attention, or none.
func nodeState(n *fleet.Node) string {
	if n.Stale {
		return fleet.StateStale
	}
	best, rank := "none", -1
	for _, d := range n.Distributions {
		if r, ok := stateRank[d.State]; ok && r > rank || !ok && rank < 0 {
			best, rank = d.State, r
		}
	}
	return best
}

// treePage is /tree.
type treePage struct {
	page
	Rows []row
	// All: no subscribers collapsed (?all=1).
	All bool
}

// row is a node's line in a table of nodes, or (Collapsed) a line of
// counts standing for a node's many subscriber children.
type row struct {
	// Prefix draws the branches of the tree before the name.
	Prefix string
	Node   *fleet.Node
	State  string
	Seen   string
	// Collapsed is set on a row of counts.
	Collapsed *collapsed
}

// collapsed stands for the subscriber children of Parent.
type collapsed struct {
	Parent string
	Count  int
	States []count
}

// treeRows lays the view out as a tree (fleet.Tree): a node with more
// than limit subscriber children (limit >= 0) shows them as one row of
// counts.
func treeRows(v *fleet.View, limit int) []row {
	tree := fleet.Tree(v, limit)
	rows := make([]row, 0, len(tree))
	for _, r := range tree {
		if r.Collapsed != nil {
			rows = append(rows, row{Prefix: r.Prefix, Collapsed: collapse(r.Parent, r.Collapsed)})
			continue
		}
		rows = append(rows, nodeRow(v, r.Node, r.Prefix))
	}
	return rows
}

// childRows are the rows of the direct children of parent, flat.
func childRows(v *fleet.View, parent string) []row {
	var rows []row
	for i := range v.Nodes {
		n := &v.Nodes[i]
		if n.Parent == parent && n.Name != parent && n.Name != v.Node {
			rows = append(rows, nodeRow(v, n, ""))
		}
	}
	return rows
}

func nodeRow(v *fleet.View, n *fleet.Node, prefix string) row {
	return row{Prefix: prefix, Node: n, State: nodeState(n), Seen: seen(v, n)}
}

// collapse counts subs by their state.
func collapse(parent string, subs []*fleet.Node) *collapsed {
	by := map[string]int{}
	for _, s := range subs {
		by[nodeState(s)]++
	}
	c := &collapsed{Parent: parent, Count: len(subs)}
	for _, st := range append(slices.Clone(barOrder), "none") {
		if n := by[st]; n > 0 {
			c.States = append(c.States, count{Key: st, Count: n})
			delete(by, st)
		}
	}
	for _, st := range slices.Sorted(maps.Keys(by)) {
		c.States = append(c.States, count{Key: st, Count: by[st]})
	}
	return c
}

// seen is when a node was last seen, as the tree shows it.
func seen(v *fleet.View, n *fleet.Node) string {
	if n.Connected {
		return "now"
	}
	if n.LastSeen.IsZero() || n.LastSeen.Unix() <= 0 {
		return "never"
	}
	return ago(v.Taken.Sub(n.LastSeen)) + " ago"
}

// ago is a duration as a person reads it: 42s, 5m, 3h, 2d.
func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}

// nodePage is /nodes/{name}.
type nodePage struct {
	page
	Name        string
	Node        *fleet.Node
	State       string
	Children    []row
	Events      []fleet.Event
	EventsError string
}

// filterQuery is f as a query string, without the "?".
func filterQuery(f fleet.Filter) string {
	q := url.Values{}
	if f.Dist != "" {
		q.Set("dist", f.Dist)
	}
	if f.State != "" {
		q.Set("state", f.State)
	}
	if f.Node != "" {
		q.Set("node", f.Node)
	}
	return q.Encode()
}

// digestFS is a short digest of every file of fsys, to version URLs.
func digestFS(fsys fs.FS) string {
	h := sha256.New()
	_ = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// funcs are the templates' functions.
func (c *console) funcs() template.FuncMap {
	return template.FuncMap{
		// nodeURL is the link to a node's page: its name is one escaped
		// path segment whatever it holds.
		"nodeURL": func(name string) template.URL { return template.URL("/nodes/" + url.PathEscape(name)) },
		"static":  func(name string) string { return "/static/" + name + "?v=" + c.version },
		"when":    when,
		"iso": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format(time.RFC3339)
		},
		"label":    label,
		"duration": func(d fleet.Duration) string { return time.Duration(d).String() },
		"revKey":   func(name string, rev uint64) string { return name + "@" + strconv.FormatUint(rev, 10) },
		"percent":  percent,
		"rows":     rowsHTML,
		"join":     strings.Join,
	}
}

// when is a time as the pages show it, "" for none.
func when(t time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// label is a state or a kind as words: rolled_back is "rolled back".
func label(s string) string { return strings.ReplaceAll(s, "_", " ") }

// percent is have of total, rounded down.
func percent(have, total int) int {
	if total <= 0 {
		return 0
	}
	return 100 * have / total
}
