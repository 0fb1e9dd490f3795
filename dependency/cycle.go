package dependency

import (
	"slices"
	"strings"
)

// FindCycle returns one cycle of graph (node → the nodes it requires) as its
// members in order, starting at the smallest name and with that name
// repeated at the end ("a", "b", "a"), or nil when graph has none. Nodes and
// edges are visited in sorted order, so the answer is deterministic. The
// publisher calls it on its store's distributions plus the build at hand to
// refuse a build that would close a cycle.
func FindCycle(graph map[string][]string) []string {
	const (
		unseen = iota
		onPath
		finished
	)
	adj := sortedGraph(graph)
	state := make(map[string]int, len(adj))
	var path []string
	var visit func(string) []string
	visit = func(n string) []string {
		state[n] = onPath
		path = append(path, n)
		for _, m := range adj[n] {
			switch state[m] {
			case onPath:
				i := slices.Index(path, m)
				return rotate(slices.Clone(path[i:]))
			case unseen:
				if c := visit(m); c != nil {
					return c
				}
			}
		}
		path = path[:len(path)-1]
		state[n] = finished
		return nil
	}
	for _, n := range sortedKeys(adj) {
		if state[n] == unseen {
			if c := visit(n); c != nil {
				return c
			}
		}
	}
	return nil
}

// FormatCycle writes a cycle from FindCycle as "a → b → a".
func FormatCycle(cycle []string) string {
	return strings.Join(cycle, " → ")
}

// cyclesThrough maps every node that lies on a cycle of graph to the
// shortest cycle through it, in FindCycle's form.
func cyclesThrough(graph map[string][]string) map[string][]string {
	adj := sortedGraph(graph)
	out := make(map[string][]string)
	for _, scc := range components(adj) {
		in := make(map[string]bool, len(scc))
		for _, n := range scc {
			in[n] = true
		}
		if len(scc) == 1 && !slices.Contains(adj[scc[0]], scc[0]) {
			continue
		}
		for _, n := range scc {
			out[n] = shortestCycle(adj, in, n)
		}
	}
	return out
}

// shortestCycle finds, breadth first inside one strongly connected
// component, the shortest way from start back to itself.
func shortestCycle(adj map[string][]string, in map[string]bool, start string) []string {
	parent := map[string]string{}
	queue := []string{start}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, m := range adj[n] {
			if m == start {
				members := []string{n}
				for members[0] != start {
					members = slices.Insert(members, 0, parent[members[0]])
				}
				return rotate(members)
			}
			if _, seen := parent[m]; !seen && in[m] {
				parent[m] = n
				queue = append(queue, m)
			}
		}
	}
	return nil // not reached inside a component with a cycle
}

// rotate turns the members of a cycle (without the repeat) so the smallest
// comes first, and closes it by repeating that one at the end.
func rotate(members []string) []string {
	i := slices.Index(members, slices.Min(members))
	out := append(slices.Clone(members[i:]), members[:i]...)
	return append(out, out[0])
}

// components returns the strongly connected components of adj (Tarjan),
// each sorted.
func components(adj map[string][]string) [][]string {
	index := make(map[string]int, len(adj))
	low := make(map[string]int, len(adj))
	onStack := make(map[string]bool)
	var stack []string
	var out [][]string
	var connect func(string)
	connect = func(n string) {
		index[n] = len(index)
		low[n] = index[n]
		stack = append(stack, n)
		onStack[n] = true
		for _, m := range adj[n] {
			if _, seen := index[m]; !seen {
				connect(m)
				low[n] = min(low[n], low[m])
			} else if onStack[m] {
				low[n] = min(low[n], index[m])
			}
		}
		if low[n] == index[n] {
			var scc []string
			for {
				m := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[m] = false
				scc = append(scc, m)
				if m == n {
					break
				}
			}
			slices.Sort(scc)
			out = append(out, scc)
		}
	}
	for _, n := range sortedKeys(adj) {
		if _, seen := index[n]; !seen {
			connect(n)
		}
	}
	return out
}

// sortedGraph copies graph with every node (including those only required)
// as a key and each edge list sorted and without repeats.
func sortedGraph(graph map[string][]string) map[string][]string {
	adj := make(map[string][]string, len(graph))
	for n, ms := range graph {
		list := slices.Clone(ms)
		slices.Sort(list)
		adj[n] = slices.Compact(list)
		for _, m := range ms {
			if _, ok := adj[m]; !ok {
				adj[m] = nil
			}
		}
	}
	return adj
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
