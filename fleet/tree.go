package fleet

// TreeRow is one line of a view laid out as a tree: a node, or (Collapsed
// set) the subscriber children of Parent standing in one line.
type TreeRow struct {
	// Prefix draws the branches before the name ("│  ├─ ").
	Prefix    string
	Node      *Node
	Parent    string
	Collapsed []*Node
}

// Tree lays v out as a tree: the answering node first, each node under
// its parent. A node with more than limit subscriber children (limit >= 0)
// has them in one collapsed row after its other children. A node whose
// parent is not in the view (filtered out) starts a tree of its own, and
// so do nodes whose parents name each other in a loop: each node is on
// one row.
func Tree(v *View, limit int) []TreeRow {
	byName := make(map[string]*Node, len(v.Nodes))
	for i := range v.Nodes {
		byName[v.Nodes[i].Name] = &v.Nodes[i]
	}
	kids := make(map[string][]*Node)
	var roots []*Node
	for i := range v.Nodes {
		n := &v.Nodes[i]
		if _, ok := byName[n.Parent]; ok && n.Name != v.Node && n.Parent != n.Name {
			kids[n.Parent] = append(kids[n.Parent], n)
		} else if n.Name == v.Node {
			roots = append([]*Node{n}, roots...)
		} else {
			roots = append(roots, n)
		}
	}
	rows := make([]TreeRow, 0, len(v.Nodes)+1)
	done := make(map[string]bool, len(v.Nodes))
	var walk func(n *Node, prefix, branch string)
	walk = func(n *Node, prefix, branch string) {
		done[n.Name] = true
		rows = append(rows, TreeRow{Prefix: prefix + branch, Node: n})
		next := prefix
		switch branch {
		case "├─ ":
			next += "│  "
		case "└─ ":
			next += "   "
		}
		children := kids[n.Name]
		var subs []*Node
		if limit >= 0 {
			count := 0
			for _, k := range children {
				if k.Role == "subscriber" && !done[k.Name] {
					count++
				}
			}
			if count > limit {
				shown := make([]*Node, 0, len(children)-count)
				subs = make([]*Node, 0, count)
				for _, k := range children {
					if k.Role == "subscriber" && !done[k.Name] {
						subs = append(subs, k)
					} else {
						shown = append(shown, k)
					}
				}
				children = shown
			}
		}
		// Children already shown (a loop of parents) are left out before
		// the last branch is chosen.
		var unshown []*Node
		for _, k := range children {
			if !done[k.Name] {
				unshown = append(unshown, k)
			}
		}
		for i, k := range unshown {
			if done[k.Name] {
				continue // reached through an earlier sibling's loop
			}
			b := "├─ "
			if i == len(unshown)-1 && len(subs) == 0 {
				b = "└─ "
			}
			walk(k, next, b)
		}
		if len(subs) > 0 {
			for _, s := range subs {
				done[s.Name] = true
			}
			rows = append(rows, TreeRow{Prefix: next + "└─ ", Parent: n.Name, Collapsed: subs})
		}
	}
	for _, n := range roots {
		if !done[n.Name] {
			walk(n, "", "")
		}
	}
	for i := range v.Nodes {
		if n := &v.Nodes[i]; !done[n.Name] {
			walk(n, "", "")
		}
	}
	return rows
}
