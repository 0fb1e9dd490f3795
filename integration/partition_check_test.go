//go:build linux

package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"ted/distribution"
)

// The checker of a cluster's history: plain functions over data (role
// samples, the shared journal history, trees), each returning the
// violations it finds as sentences, so that a test lists every one and the
// checker itself is tested with hand-made histories.

// roleRound is one sample round: every running node's status role, asked
// at about the same time.
type roleRound struct {
	at time.Time
	// roles maps each node sampled to its role: "active", "standby", or
	// what went wrong ("no answer: …"), which is not active; took, if
	// set, to how long it took to answer.
	roles map[string]string
	took  map[string]time.Duration
}

// checkRoles reports every round in which two nodes or more said they were
// active.
func checkRoles(rounds []roleRound) []string {
	var out []string
	for _, r := range rounds {
		var active []string
		for node, role := range r.roles {
			if role == "active" {
				active = append(active, node)
			}
		}
		if len(active) > 1 {
			slices.Sort(active)
			var took []string
			for _, node := range active {
				if d, ok := r.took[node]; ok {
					took = append(took, fmt.Sprintf("%s in %s", node, d.Round(time.Millisecond)))
				}
			}
			answered := ""
			if len(took) > 0 {
				answered = " (answered: " + strings.Join(took, ", ") + ")"
			}
			out = append(out, fmt.Sprintf("roles: %s active in one sample round at %s%s",
				strings.Join(active, " and "), r.at.Format("15:04:05.000"), answered))
		}
	}
	return out
}

// active returns the node active in round r, or "" (the first found if
// there are two: checkRoles reports those).
func (r roleRound) active() string {
	for node, role := range r.roles {
		if role == "active" {
			return node
		}
	}
	return ""
}

// journalLine is one line of SHARED_DIR/installed/journal.log: a journal
// record of the cluster's installer, or "done" when an extraction ended.
type journalLine struct {
	Time    string `json:"time"`
	Epoch   uint64 `json:"epoch"`
	Node    string `json:"node"`
	Dist    string `json:"dist"`
	From    uint64 `json:"from"`
	To      uint64 `json:"to"`
	Step    string `json:"step"`
	Part    int    `json:"part"`
	Written int    `json:"written"`

	// where: file:line, for messages.
	where string
}

func (l journalLine) String() string {
	return fmt.Sprintf("%s: %s epoch %d node %s %s %d->%d step %s part %d written %d",
		l.where, l.Time, l.Epoch, l.Node, l.Dist, l.From, l.To, l.Step, l.Part, l.Written)
}

// journalSteps are the steps a journal.log line may name.
var journalSteps = []string{"begin", "backup", "write", "remove", "commit", "post", "restore", "undone", "done"}

// journalLogName is the history's file in the cluster's shared directory;
// it is rotated to journalLogName.1.
const journalLogName = "installed/journal.log"

// readJournalHistory reads journal.log.1 then journal.log in sharedDir.
// A missing file has no lines. A last line with no newline is being
// written: it is left out.
func readJournalHistory(sharedDir string) ([]journalLine, []string, error) {
	var lines []journalLine
	var bad []string
	for _, name := range []string{journalLogName + ".1", journalLogName} {
		data, err := os.ReadFile(filepath.Join(sharedDir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		l, b := parseJournalHistory(filepath.Base(name), data)
		lines, bad = append(lines, l...), append(bad, b...)
	}
	return lines, bad, nil
}

// parseJournalHistory parses one file's lines; file names them in
// messages. A line that is not a record (bad JSON, a bad time, an unknown
// step, no node or distribution) is a violation: the history must be
// readable to be checked.
func parseJournalHistory(file string, data []byte) ([]journalLine, []string) {
	var lines []journalLine
	var bad []string
	if i := bytes.LastIndexByte(data, '\n'); i+1 < len(data) {
		data = data[:i+1] // a line still being written
	}
	if len(data) == 0 {
		return nil, nil
	}
	for i, raw := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		where := fmt.Sprintf("%s:%d", file, i+1)
		var l journalLine
		dec := json.NewDecoder(bytes.NewReader(raw))
		if err := dec.Decode(&l); err != nil || dec.More() {
			bad = append(bad, fmt.Sprintf("journal: %s: not one JSON record (%v): %q", where, err, raw))
			continue
		}
		l.where = where
		var problems []string
		if _, err := time.Parse(time.RFC3339Nano, l.Time); err != nil {
			problems = append(problems, fmt.Sprintf("time %q is not RFC 3339", l.Time))
		}
		if !slices.Contains(journalSteps, l.Step) {
			problems = append(problems, fmt.Sprintf("unknown step %q", l.Step))
		}
		if l.Node == "" {
			problems = append(problems, "no node")
		}
		if l.Dist == "" {
			problems = append(problems, "no dist")
		}
		if len(problems) > 0 {
			bad = append(bad, fmt.Sprintf("journal: %s: %s: %q", where, strings.Join(problems, ", "), raw))
			continue
		}
		lines = append(lines, l)
	}
	return lines, bad
}

// checkJournal checks the history: (a) epochs never go backwards in file
// order; (b) each revision of a distribution is committed at most once;
// (c) all the lines of one epoch come from one node.
func checkJournal(lines []journalLine) []string {
	var out []string
	var last *journalLine // the line of the highest epoch so far
	type revision struct {
		dist string
		to   uint64
	}
	commits := map[revision]journalLine{}
	nodeOf := map[uint64]journalLine{}
	reported := map[string]bool{}
	// An old writer goes on for many lines: one violation for each
	// epoch it goes back to from each higher one, with a count.
	type back struct{ from, to uint64 }
	backs := map[back]int{} // index in out
	backLines := map[back]int{}
	for i := range lines {
		l := lines[i]
		if last != nil && l.Epoch < last.Epoch {
			b := back{last.Epoch, l.Epoch}
			if _, ok := backs[b]; !ok {
				backs[b] = len(out)
				out = append(out, fmt.Sprintf("journal: epoch went back from %d to %d: %s after %s", last.Epoch, l.Epoch, l, *last))
			}
			backLines[b]++
		}
		if last == nil || l.Epoch >= last.Epoch {
			last = &lines[i]
		}
		if l.Step == "commit" {
			r := revision{l.Dist, l.To}
			if first, ok := commits[r]; ok {
				out = append(out, fmt.Sprintf("journal: %s@%d committed twice: %s, then %s", l.Dist, l.To, first, l))
			} else {
				commits[r] = l
			}
		}
		if first, ok := nodeOf[l.Epoch]; !ok {
			nodeOf[l.Epoch] = l
		} else if first.Node != l.Node {
			key := fmt.Sprintf("%d %s", l.Epoch, l.Node)
			if !reported[key] {
				reported[key] = true
				out = append(out, fmt.Sprintf("journal: epoch %d used by two nodes, %s and %s: %s, then %s", l.Epoch, first.Node, l.Node, first, l))
			}
		}
	}
	for b, i := range backs {
		if n := backLines[b]; n > 1 {
			out[i] += fmt.Sprintf(" (%d such lines)", n)
		}
	}
	return out
}

// checkTree reports whether dir holds exactly the tree at src, as
// requireTree compares them (listing: content, modes, symlinks), naming a
// few of the paths that differ.
func checkTree(t *testing.T, dir, src string) []string {
	t.Helper()
	if _, err := os.Stat(dir); err != nil {
		return []string{fmt.Sprintf("tree: %v", err)}
	}
	// A node fenced off between its check and creating a temporary file
	// leaves that file: once fenced it changes nothing under the target,
	// not even its own temporary files, and the next extraction sweeps
	// them. Hidden and never renamed into place, it is not content.
	var content []string
	for line := range strings.SplitSeq(listing(t, dir), "\n") {
		path, _, _ := strings.Cut(line, " ")
		if distribution.IsTempName(filepath.Base(path)) {
			t.Logf("tree: %s, a fenced node's temporary file (swept by the next extraction)", path)
			continue
		}
		content = append(content, line)
	}
	return diffListings(dir, strings.Join(content, "\n"), src, listing(t, src))
}

// diffListings compares two listings (one line a path) and describes the
// lines only one of them has, a few of each.
func diffListings(gotName, got, wantName, want string) []string {
	if got == want {
		return nil
	}
	index := func(s string) map[string]bool {
		m := map[string]bool{}
		for line := range strings.SplitSeq(s, "\n") {
			if line != "" {
				m[line] = true
			}
		}
		return m
	}
	g, w := index(got), index(want)
	only := func(a, b map[string]bool) []string {
		var out []string
		for line := range a {
			if !b[line] {
				out = append(out, line)
			}
		}
		sort.Strings(out)
		return out
	}
	extra, missing := only(g, w), only(w, g)
	const most = 10
	cut := func(l []string) string {
		if len(l) > most {
			return strings.Join(l[:most], "; ") + fmt.Sprintf("; … (%d in all)", len(l))
		}
		return strings.Join(l, "; ")
	}
	return []string{fmt.Sprintf("tree: %s differs from %s: %d entries not in it or different (%s), %d missing or different (%s)",
		gotName, wantName, len(extra), cut(extra), len(missing), cut(missing))}
}

// failover is the time from when the active node was killed or paused to
// when another node said it was active.
type failover struct {
	what string // "kill -9 c1-a"
	from string // the node that was active
	// also is what else was wrong then (cuts, nodes down), "" if nothing;
	// during the events while the cluster failed over.
	also   string
	during []string
	at     time.Time
	took   time.Duration
	// back: from was active again (restarted, continued) before any
	// other, after took; missed: no node was active in the rounds
	// sampled after.
	back, missed bool
}

// clean reports whether nothing else was wrong before or during the
// failover: its time is the cluster's own.
func (f failover) clean() bool {
	return f.also == "" && len(f.during) == 0
}

func (f failover) String() string {
	also := " (nothing else wrong)"
	if f.also != "" {
		also = " (also: " + f.also + ")"
	}
	if during := f.during; len(during) > 0 {
		more := ""
		if len(during) > 4 {
			during, more = during[:4], fmt.Sprintf("; … %d events in all", len(f.during))
		}
		also += " (meanwhile: " + strings.Join(during, "; ") + more + ")"
	}
	switch {
	case f.missed:
		return fmt.Sprintf("%s%s: no node active afterwards", f.what, also)
	case f.back:
		return fmt.Sprintf("%s%s: no failover, %s itself active again after %s", f.what, also, f.from, f.took.Round(100*time.Millisecond))
	}
	return fmt.Sprintf("%s%s: another node active after %s", f.what, also, f.took.Round(100*time.Millisecond))
}

// failoverTime finds, in rounds sorted by time, the first round after at
// in which a node is active: another than from (a failover), or from
// again.
func failoverTime(rounds []roleRound, f failover) failover {
	from, at := f.from, f.at
	for _, r := range rounds {
		if r.at.Before(at) {
			continue
		}
		if a := r.active(); a != "" {
			f.took, f.back = r.at.Sub(at), a == from
			return f
		}
	}
	f.missed = true
	return f
}

// TestCheckerRoles: a history with one active node at a time passes; two
// active nodes in one round, whatever else, are each reported.
func TestCheckerRoles(t *testing.T) {
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	round := func(ms int, roles ...string) roleRound {
		r := roleRound{at: t0.Add(time.Duration(ms) * time.Millisecond), roles: map[string]string{}}
		for i := 0; i < len(roles); i += 2 {
			r.roles[roles[i]] = roles[i+1]
		}
		return r
	}
	good := []roleRound{
		round(0, "a", "active", "b", "standby", "c", "standby"),
		round(100, "a", "no answer: timeout", "b", "standby", "c", "standby"),
		round(200, "b", "active", "c", "standby"), // a killed
		round(300, "a", "standby", "b", "active", "c", "no answer: timeout"),
		round(400),
	}
	if v := checkRoles(good); len(v) != 0 {
		t.Errorf("one active at a time: %q", v)
	}
	bad := append(slices.Clone(good),
		round(500, "a", "active", "b", "active", "c", "standby"),
		round(600, "a", "standby", "b", "active", "c", "standby"),
		round(700, "a", "active", "b", "active", "c", "active"))
	bad[len(bad)-1].took = map[string]time.Duration{"a": 3 * time.Millisecond, "b": 250 * time.Millisecond, "c": time.Second}
	v := checkRoles(bad)
	if len(v) != 2 || !strings.Contains(v[0], "a and b active") || !strings.Contains(v[0], "03:04:05.500") ||
		!strings.Contains(v[1], "a and b and c active") || !strings.Contains(v[1], "(answered: a in 3ms, b in 250ms, c in 1s)") {
		t.Errorf("two rounds with two active nodes or more: %q", v)
	}

	// Failover times, from the same samples.
	f := failoverTime(good, failover{what: "kill -9 a", from: "a", at: t0.Add(50 * time.Millisecond)})
	if f.missed || f.back || f.took != 150*time.Millisecond {
		t.Errorf("failover after a at 50 ms: %v", f)
	}
	if f := failoverTime(good[1:2], failover{what: "pause a", from: "a", at: t0}); !f.missed {
		t.Errorf("no node active after a was paused: %v", f)
	}
	back := []roleRound{round(0, "a", "active", "b", "standby"), round(100, "b", "standby"), round(200, "a", "active", "b", "standby")}
	if f := failoverTime(back, failover{what: "kill -9 a", from: "a", at: t0.Add(50 * time.Millisecond)}); !f.back || f.took != 150*time.Millisecond {
		t.Errorf("a restarted before any failover: %v", f)
	}
}

// TestCheckerJournal: a clean history with a failover passes; each
// injected violation — an epoch going back, a revision committed twice, an
// epoch written by two nodes, a malformed line — is reported, and reported
// once.
func TestCheckerJournal(t *testing.T) {
	line := func(epoch uint64, node string, to uint64, step string) string {
		return fmt.Sprintf(`{"time":"2030-01-02T03:04:05.123456789Z","epoch":%d,"node":%q,"dist":"app","from":%d,"to":%d,"step":%q,"part":0,"written":0}`,
			epoch, node, to-1, to, step)
	}
	extraction := func(epoch uint64, node string, to uint64, steps ...string) []string {
		if len(steps) == 0 {
			steps = []string{"begin", "backup", "write", "remove", "commit", "post", "done"}
		}
		var out []string
		for _, s := range steps {
			out = append(out, line(epoch, node, to, s))
		}
		return out
	}
	// a extracts 1, is cut off writing 2; b recovers 2 (rolls it back),
	// extracts 3; then c, after a restart of the parent, extracts 4.
	clean := slices.Concat(
		extraction(1, "a", 1),
		extraction(1, "a", 2, "begin", "backup", "write"),
		[]string{strings.Replace(line(2, "b", 1, "restore"), `"from":0,"to":1`, `"from":2,"to":1`, 1)},
		extraction(2, "b", 3),
		extraction(5, "c", 4),
	)
	parse := func(lines []string) ([]journalLine, []string) {
		return parseJournalHistory("journal.log", []byte(strings.Join(lines, "\n")+"\n"))
	}
	lines, bad := parse(clean)
	if len(bad) != 0 || len(lines) != len(clean) {
		t.Fatalf("clean history: %d lines of %d, malformed: %q", len(lines), len(clean), bad)
	}
	if v := checkJournal(lines); len(v) != 0 {
		t.Errorf("clean history: %q", v)
	}
	if lines[0].where != "journal.log:1" || lines[0].Epoch != 1 || lines[0].Node != "a" || lines[0].To != 1 || lines[0].Step != "begin" {
		t.Errorf("first line read as %+v", lines[0])
	}

	for _, tt := range []struct {
		name  string
		lines []string
		want  string
	}{
		{"epoch back", slices.Concat(clean, extraction(2, "b", 6, "begin")),
			"epoch went back from 5 to 2: journal.log:26"},
		{"two commits", slices.Concat(clean, extraction(5, "c", 3, "begin", "backup", "write", "remove", "commit")),
			"app@3 committed twice: journal.log:16: 2030-01-02T03:04:05.123456789Z epoch 2 node b"},
		{"one epoch, two nodes", slices.Concat(clean, extraction(5, "a", 6, "begin", "backup")),
			"epoch 5 used by two nodes, c and a"},
		// The old active node, paused, goes on writing after the new one
		// took over: three violations at once.
		{"unfenced writer", slices.Concat(clean, extraction(6, "b", 7, "begin", "backup", "write"), extraction(5, "c", 7, "write", "remove", "commit"), extraction(6, "b", 7, "remove", "commit")),
			"epoch went back from 6 to 5"},
	} {
		lines, bad := parse(tt.lines)
		if len(bad) != 0 {
			t.Errorf("%s: malformed: %q", tt.name, bad)
			continue
		}
		v := checkJournal(lines)
		if len(v) == 0 || !strings.Contains(strings.Join(v, "\n"), tt.want) {
			t.Errorf("%s: violations %q, want one with %q", tt.name, v, tt.want)
		}
		if tt.name != "unfenced writer" && len(v) != 1 {
			t.Errorf("%s: %d violations, want 1 (each reported once): %q", tt.name, len(v), v)
		}
		if tt.name == "unfenced writer" && len(v) < 2 {
			t.Errorf("%s: want an epoch going back and a revision committed twice: %q", tt.name, v)
		}
	}

	// Malformed lines are violations; a last line without its newline is
	// being written, and is no line yet.
	_, bad = parseJournalHistory("journal.log", []byte(line(1, "a", 1, "begin")+"\n{\"time\":\n"+
		strings.Replace(line(1, "a", 1, "backup"), "backup", "jump", 1)+"\n"+
		strings.Replace(line(1, "a", 1, "write"), `"node":"a"`, `"node":""`, 1)+"\n"+
		strings.Replace(line(1, "a", 1, "remove"), "2030-01-02T03:04:05.123456789Z", "yesterday", 1)+"\n"+
		`{"time":"2030-01-02T03`))
	if len(bad) != 4 || !strings.Contains(bad[0], "journal.log:2: not one JSON record") || !strings.Contains(bad[1], `unknown step "jump"`) ||
		!strings.Contains(bad[2], "no node") || !strings.Contains(bad[3], "not RFC 3339") {
		t.Errorf("malformed lines: %q", bad)
	}
	if lines, bad := parseJournalHistory("journal.log", nil); len(lines) != 0 || len(bad) != 0 {
		t.Errorf("empty file: %v %q", lines, bad)
	}

	// Files: none is no line; journal.log.1 is read before journal.log.
	dir := t.TempDir()
	if lines, bad, err := readJournalHistory(dir); err != nil || len(lines) != 0 || len(bad) != 0 {
		t.Errorf("no journal.log: %v %q %v", lines, bad, err)
	}
	writeFile(t, filepath.Join(dir, journalLogName+".1"), []byte(strings.Join(clean[:3], "\n")+"\n"), 0o644)
	writeFile(t, filepath.Join(dir, journalLogName), []byte(strings.Join(clean[3:], "\n")+"\n"), 0o644)
	lines, bad, err := readJournalHistory(dir)
	if err != nil || len(bad) != 0 || len(lines) != len(clean) || lines[0].where != "journal.log.1:1" || lines[3].where != "journal.log:1" {
		t.Fatalf("rotated history: %d lines, %q, %v", len(lines), bad, err)
	}
	if v := checkJournal(lines); len(v) != 0 {
		t.Errorf("rotated clean history: %q", v)
	}
	// Read in the wrong order, the epochs would go back.
	writeFile(t, filepath.Join(dir, journalLogName+".1"), []byte(strings.Join(clean[3:], "\n")+"\n"), 0o644)
	writeFile(t, filepath.Join(dir, journalLogName), []byte(strings.Join(clean[:3], "\n")+"\n"), 0o644)
	lines, _, _ = readJournalHistory(dir)
	if v := checkJournal(lines); len(v) == 0 {
		t.Errorf("journal.log older than journal.log.1: no violation")
	}
}

// TestCheckerTree: the same tree passes; a changed, a missing and an extra
// file are reported.
func TestCheckerTree(t *testing.T) {
	src, dir := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "dst")
	writeTree(t, src, 1024)
	copyTree(t, src, dir)
	if v := checkTree(t, dir, src); len(v) != 0 {
		t.Errorf("same tree: %q", v)
	}
	writeFile(t, filepath.Join(dir, "etc/app.conf"), []byte("port = 81\n"), 0o640)
	writeFile(t, filepath.Join(dir, "extra"), nil, 0o644)
	if err := os.Remove(filepath.Join(dir, "old.txt")); err != nil {
		t.Fatal(err)
	}
	v := checkTree(t, dir, src)
	if len(v) != 1 || !strings.Contains(v[0], "2 entries not in it or different") || !strings.Contains(v[0], "extra ") ||
		!strings.Contains(v[0], "2 missing or different") || !strings.Contains(v[0], "old.txt ") {
		t.Errorf("changed tree: %q", v)
	}
	if v := checkTree(t, filepath.Join(dir, "nope"), src); len(v) != 1 || !strings.Contains(v[0], "no such file") {
		t.Errorf("no tree: %q", v)
	}
}
