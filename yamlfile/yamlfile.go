// Package yamlfile reads TED's YAML files — the distributor, subscriber and
// publisher configs and the schedule file — strictly, and reports their
// problems the one way every TED file reports them:
//
//	FILE:LINE: FIELD: message
//
// FIELD is the path from the top of the file, keys joined by dots and list
// items as [i] (channels.web.publishers[1]). Every problem is reported at
// once, in line order, not just the first; an unknown field lists the fields
// known where it stands. The package spec (swpkg) walks its own node tree
// but prints its problems in the same form.
package yamlfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong in a file.
type Problem struct {
	File  string `json:"file"`
	Line  int    `json:"line,omitempty"` // 0 when the problem has no one place
	Field string `json:"field,omitempty"`
	Msg   string `json:"message"`
}

func (p *Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteString(":" + strconv.Itoa(p.Line))
	}
	if p.Field != "" {
		b.WriteString(": " + p.Field)
	}
	b.WriteString(": " + p.Msg)
	return b.String()
}

// Problems is everything wrong in one file, in line order: its Error has
// one problem a line.
type Problems []*Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each *Problem.
func (ps Problems) Unwrap() []error {
	out := make([]error, len(ps))
	for i, p := range ps {
		out[i] = p
	}
	return out
}

// Doc is a decoded file: it finds the line of a field and collects the
// problems its reader finds after decoding.
type Doc struct {
	File     string
	root     *yaml.Node // the top mapping; nil for an empty file
	problems Problems
	// lines maps a line to the field path that starts there, to name the
	// field of yaml.v3's type errors, which only know the line.
	lines map[int]string
	// undecodable holds the fields whose value has the wrong shape or
	// type: what a reader finds wrong with them (or under them) afterwards
	// is only the echo of that problem.
	undecodable map[string]bool
}

// Decode decodes data, the content of file, into out (a pointer to a
// struct with yaml tags). Unknown and repeated fields, values of the wrong
// shape or type, a second document and bad YAML are problems of the Doc;
// what could be decoded is in out all the same, so the caller goes on
// checking values and adds its own problems with Errorf. Err returns them
// all.
func Decode(file string, data []byte, out any) *Doc {
	d := &Doc{File: file, lines: map[int]string{}, undecodable: map[string]bool{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.add(0, "", "empty file")
		} else {
			d.syntax(err)
		}
		return d
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			line = 0
		}
		d.add(line, "", "more than one YAML document (a line of --- in the file?)")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		d.add(root.Line, "", "empty file")
		return d
	}
	if !d.walk(root, reflect.TypeOf(out).Elem(), "") && root.Kind != yaml.MappingNode {
		return d // not a mapping at all: nothing to decode, nothing to check
	}
	d.root = root
	// yaml.v3 stops at a repeated key; walk has reported each, so the
	// repeats go before decoding what else is wrong.
	dropRepeats(root)
	if err := root.Decode(out); err != nil {
		d.typeErrors(err)
	}
	return d
}

// Errorf records a problem with field, at the field's line, unless the
// field's value, or one it is part of, could not be decoded: that problem
// says it already. In a file that is not a YAML mapping at all (bad YAML,
// empty, a list) it records nothing: every field would be "missing".
func (d *Doc) Errorf(field, format string, args ...any) {
	if d.root == nil || d.isUndecodable(field) {
		return
	}
	d.add(d.Line(field), field, fmt.Sprintf(format, args...))
}

// isUndecodable reports whether field, or a field it is part of, has a
// value of the wrong shape or type.
func (d *Doc) isUndecodable(field string) bool {
	for f := range d.undecodable {
		if field == f || strings.HasPrefix(field, f+".") || strings.HasPrefix(field, f+"[") {
			return true
		}
	}
	return false
}

// undecoded records a value of the wrong shape or type.
func (d *Doc) undecoded(line int, field, msg string) {
	d.undecodable[field] = true
	d.add(line, field, msg)
}

// Err returns the problems found, in line order, or nil.
func (d *Doc) Err() error {
	if len(d.problems) == 0 {
		return nil
	}
	out := slices.Clone(d.problems)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	return out
}

// Failed reports whether a problem was found so far.
func (d *Doc) Failed() bool { return len(d.problems) > 0 }

func (d *Doc) add(line int, field, msg string) {
	for _, p := range d.problems {
		if p.Line == line && p.Field == field && p.Msg == msg {
			return
		}
	}
	d.problems = append(d.problems, &Problem{File: d.File, Line: line, Field: field, Msg: msg})
}

// reported reports whether a problem was recorded at line.
func (d *Doc) reported(line int) bool {
	return slices.ContainsFunc(d.problems, func(p *Problem) bool { return p.Line == line })
}

// Has reports whether field is present in the file.
func (d *Doc) Has(field string) bool {
	_, ok := d.node(field)
	return ok
}

// Line is the line of field (its key's line, or its item's), or of the
// deepest part of the path that is in the file; 0 if none is.
func (d *Doc) Line(field string) int {
	n, _ := d.node(field)
	if n == nil {
		return 0
	}
	return n.Line
}

// node finds field's key (or list item) node: the node itself and true,
// or the deepest node on the way and false. Keys may hold dots (a channel
// named web.eu): the longest key that matches is taken.
func (d *Doc) node(field string) (*yaml.Node, bool) {
	n, rest := d.root, field
	var last *yaml.Node
	for n != nil && rest != "" {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		switch {
		case strings.HasPrefix(rest, "["):
			end := strings.IndexByte(rest, ']')
			if end < 0 || n.Kind != yaml.SequenceNode {
				return last, false
			}
			i, err := strconv.Atoi(rest[1:end])
			if err != nil || i < 0 || i >= len(n.Content) {
				return last, false
			}
			last, n = n.Content[i], n.Content[i]
			rest = strings.TrimPrefix(rest[end+1:], ".")
		case n.Kind == yaml.MappingNode:
			var bestK, bestV *yaml.Node
			for k, v := range pairs(n) {
				if (rest == k.Value || strings.HasPrefix(rest, k.Value+".") || strings.HasPrefix(rest, k.Value+"[")) &&
					(bestK == nil || len(k.Value) > len(bestK.Value)) {
					bestK, bestV = k, v
				}
			}
			if bestK == nil {
				return last, false
			}
			last, n = bestK, bestV
			rest = strings.TrimPrefix(rest[len(last.Value):], ".")
		default:
			return last, false
		}
	}
	return last, rest == "" && last != nil
}

// walk checks node n against type t: mappings have only known keys, each
// once; lists and mappings are where they are expected. It reports whether
// the shape allows decoding at all.
func (d *Doc) walk(n *yaml.Node, t reflect.Type, path string) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return true // absent: the default
	}
	ok := true
	switch t.Kind() {
	case reflect.Struct:
		if t.String() == "time.Time" {
			return true
		}
		if n.Kind != yaml.MappingNode {
			d.undecoded(n.Line, path, fmt.Sprintf("want a mapping of %s, found %s", strings.Join(fieldNames(t), ", "), Describe(n)))
			return false
		}
		fields := structFields(t)
		typeOf := func(key string) (reflect.Type, bool) { ft, ok := fields[key]; return ft, ok }
		ok = d.walkEntries(n, t, path, "field", typeOf)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.undecoded(n.Line, path, "want a mapping, found "+Describe(n))
			return false
		}
		typeOf := func(string) (reflect.Type, bool) { return t.Elem(), true }
		ok = d.walkEntries(n, t, path, "entry", typeOf)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.undecoded(n.Line, path, "want a list, found "+Describe(n))
			return false
		}
		for i, item := range n.Content {
			sub := fmt.Sprintf("%s[%d]", path, i)
			if _, taken := d.lines[item.Line]; !taken {
				d.lines[item.Line] = sub
			}
			if !d.walk(item, t.Elem(), sub) {
				ok = false
			}
		}
	default:
		if n.Kind != yaml.ScalarNode {
			d.undecoded(n.Line, path, "want a single value, found "+Describe(n))
			return false
		}
		if _, taken := d.lines[n.Line]; !taken {
			d.lines[n.Line] = path
		}
		// Each value is decoded on its own, so that a wrong one is named
		// by its own field: yaml.v3's errors know only a line, and a line
		// may hold several fields ({keepalive: 10, idle_timeout: 5x}).
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			msg := err.Error()
			var te *yaml.TypeError
			if errors.As(err, &te) {
				msg = fmt.Sprintf("%s is not %s", quoteValue(n.Value), want(t.String()))
			}
			d.undecoded(n.Line, path, msg)
			return false
		}
	}
	return ok
}

// walkEntries checks the keys of mapping n, of struct or map type t, at
// path: merge keys, keys that are names, each once (what: "field" or
// "entry"), and known (typeOf's false); each value is walked as the type
// typeOf gives.
func (d *Doc) walkEntries(n *yaml.Node, t reflect.Type, path, what string, typeOf func(key string) (reflect.Type, bool)) bool {
	ok := true
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if isMerge(k) {
			if !d.walkMerge(v, t, path) {
				ok = false
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			name := "a name"
			if what == "field" {
				name = "a field name"
			}
			d.undecoded(k.Line, path, "want "+name+" as the key, found "+Describe(k))
			ok = false
			continue
		}
		sub := join(path, k.Value)
		d.lines[k.Line] = sub
		if prev, dup := seen[k.Value]; dup {
			d.add(k.Line, sub, fmt.Sprintf("repeats the %s of line %d", what, prev))
			ok = false
			continue
		}
		seen[k.Value] = k.Line
		vt, known := typeOf(k.Value)
		if !known {
			d.add(k.Line, sub, UnknownField(k.Value, fieldNames(t)))
			continue
		}
		if !d.walk(v, vt, sub) {
			ok = false
		}
	}
	return ok
}

// walkMerge checks the value of a merge key (<<: *base, or a list of
// them) as part of the mapping at path: its fields count as that
// mapping's.
func (d *Doc) walkMerge(v *yaml.Node, t reflect.Type, path string) bool {
	if v.Kind == yaml.SequenceNode {
		ok := true
		for _, item := range v.Content {
			if !d.walkMerge(item, t, path) {
				ok = false
			}
		}
		return ok
	}
	target := v
	if target.Kind == yaml.AliasNode {
		target = target.Alias
	}
	if target.Kind != yaml.MappingNode {
		d.undecoded(v.Line, join(path, "<<"), "want a mapping (or an alias of one) to merge, found "+Describe(target))
		return false
	}
	return d.walk(target, t, path)
}

// isMerge reports whether k is YAML's merge key, <<.
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.ShortTag() == "!!merge")
}

// pairs yields a mapping's keys and values, merged ones (<<) after its
// own, as yaml.v3 decodes them.
func pairs(n *yaml.Node) func(yield func(k, v *yaml.Node) bool) {
	return func(yield func(k, v *yaml.Node) bool) {
		var merged []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if isMerge(k) {
				if v.Kind == yaml.SequenceNode {
					merged = append(merged, v.Content...)
				} else {
					merged = append(merged, v)
				}
				continue
			}
			if !yield(k, v) {
				return
			}
		}
		for _, m := range merged {
			if m.Kind == yaml.AliasNode {
				m = m.Alias
			}
			if m.Kind != yaml.MappingNode {
				continue
			}
			for k, v := range pairs(m) {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// quoteValue quotes a value for a message, cut short if it is long.
func quoteValue(v string) string {
	if r := []rune(v); len(r) > 40 {
		v = string(r[:40]) + "…"
	}
	return strconv.Quote(v)
}

// dropRepeats removes, in every mapping under n, the keys that repeat an
// earlier one, with their values.
func dropRepeats(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		seen := map[string]bool{}
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; k.Kind != yaml.ScalarNode || !seen[k.Value] {
				seen[k.Value] = true
				kept = append(kept, n.Content[i], n.Content[i+1])
			}
		}
		n.Content = kept
	}
	for _, c := range n.Content {
		dropRepeats(c)
	}
}

// UnknownField says a field is not known, and which are, naming the likely
// one when the name is within two edits of it. Files that are not read with
// Decode (package specs) use it so that every file's problems are worded
// alike.
func UnknownField(name string, known []string) string {
	msg := "unknown field (known here: " + strings.Join(known, ", ") + ")"
	if best := closest(name, known); best != "" {
		msg = fmt.Sprintf("unknown field; did you mean %s? (known here: %s)", best, strings.Join(known, ", "))
	}
	return msg
}

// closest is the known name within two edits of name, if one is.
func closest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if dist := levenshtein(strings.ToLower(name), k); dist < bestD {
			best, bestD = k, dist
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// yamlField is one YAML key of a struct and the type of its value.
type yamlField struct {
	name string
	typ  reflect.Type
}

// fieldsOf lists a struct's YAML keys in declaration order, inline structs
// flattened.
func fieldsOf(t reflect.Type) []yamlField {
	var out []yamlField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if strings.Contains(opts, "inline") {
			out = append(out, fieldsOf(f.Type)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, yamlField{name, f.Type})
	}
	return out
}

// structFields maps a struct's YAML keys to their types.
func structFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for _, f := range fieldsOf(t) {
		out[f.name] = f.typ
	}
	return out
}

// fieldNames are a struct's YAML keys in declaration order.
func fieldNames(t reflect.Type) []string {
	var out []string
	for _, f := range fieldsOf(t) {
		out = append(out, f.name)
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Describe names a node's shape for "want X, found Y": a mapping, a
// list, nothing, or the value quoted (cut short if long).
func Describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		return quoteValue(n.Value)
	}
	return "something else"
}

var (
	lineRE      = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
	unmarshalRE = regexp.MustCompile("(?s)^cannot unmarshal !!(\\w+) `(.*)` into (.+)$")
)

// syntax records a YAML syntax error at its line.
func (d *Doc) syntax(err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	d.add(line, "", "not valid YAML: "+msg)
}

// typeErrors records yaml.v3's decoding errors, each at its line and with
// the field found there, in words rather than Go types.
func (d *Doc) typeErrors(err error) {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		if !d.Failed() { // else it is what walk has reported (a bad merge)
			d.syntax(err)
		}
		return
	}
	for _, e := range te.Errors {
		m := lineRE.FindStringSubmatch(e)
		if m == nil {
			d.add(0, "", e)
			continue
		}
		line, _ := strconv.Atoi(m[1])
		msg := m[2]
		if strings.Contains(msg, "already defined") || d.reported(line) {
			continue // a repeated key, a wrong shape or type: walk has said so
		}
		// walk decodes every value on its own: one it let pass and yaml.v3
		// did not is a value of a type walk does not see into.
		if u := unmarshalRE.FindStringSubmatch(msg); u != nil {
			msg = fmt.Sprintf("%q is not %s", u[2], want(u[3]))
		}
		d.add(line, d.lines[line], msg)
	}
}

// want names, for a person, what a Go type takes.
func want(goType string) string {
	switch {
	case goType == "time.Duration":
		return "a duration (such as 30s, 5m or 1h30m)"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "text"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["):
		return "a mapping"
	}
	return "a valid value"
}
