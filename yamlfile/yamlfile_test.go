package yamlfile

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type tlsT struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
}

type common struct {
	Name string `yaml:"name"`
	TLS  tlsT   `yaml:"tls"`
}

type channelT struct {
	Send     string   `yaml:"send"`
	Children []string `yaml:"children"`
}

type fileT struct {
	common   `yaml:",inline"`
	Keep     *int                `yaml:"keep"`
	Every    time.Duration       `yaml:"every"`
	Channels map[string]channelT `yaml:"channels"`
	//lint:ignore U1000 the walk must skip unexported fields, so one is here
	unexported int
}

func decode(t *testing.T, text string) (*fileT, *Doc) {
	t.Helper()
	var f fileT
	d := Decode("x.yaml", []byte(text), &f)
	return &f, d
}

func problems(t *testing.T, d *Doc) []string {
	t.Helper()
	err := d.Err()
	if err == nil {
		return nil
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Err is %T, want Problems", err)
	}
	return strings.Split(err.Error(), "\n")
}

func TestDecodeValid(t *testing.T) {
	f, d := decode(t, "name: a\ntls: {ca: c.crt}\nkeep: 2\nevery: 30s\nchannels:\n  web.eu:\n    children: [x, y]\n")
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
	if f.Name != "a" || f.TLS.CA != "c.crt" || *f.Keep != 2 || f.Every != 30*time.Second || len(f.Channels["web.eu"].Children) != 2 {
		t.Errorf("decoded %+v", f)
	}
	for field, line := range map[string]int{"name": 1, "tls.ca": 2, "channels": 5, "channels.web.eu": 6, "channels.web.eu.children": 7, "channels.web.eu.children[1]": 7, "missing": 0} {
		if got := d.Line(field); got != line {
			t.Errorf("Line(%q) = %d, want %d", field, got, line)
		}
	}
	if !d.Has("channels.web.eu.children") || d.Has("channels.web.eu.send") {
		t.Error("Has is wrong")
	}
}

// TestDecodeReportsEveryProblem: each problem once, with line, field and
// (for an unknown field) the fields known there, in line order.
func TestDecodeReportsEveryProblem(t *testing.T) {
	_, d := decode(t, "name: a\ntls:\n  ca: c\n  crt: x\nkeep: many\nevery: soon\nchannels:\n  web:\n    sned: nights\n    children: one\nname: b\n")
	d.Errorf("tls.ca", "%q does not exist", "c")
	got := problems(t, d)
	want := []string{
		`x.yaml:3: tls.ca: "c" does not exist`,
		`x.yaml:4: tls.crt: unknown field; did you mean cert? (known here: ca, cert)`,
		`x.yaml:5: keep: "many" is not a whole number`,
		`x.yaml:6: every: "soon" is not a duration (such as 30s, 5m or 1h30m)`,
		`x.yaml:9: channels.web.sned: unknown field; did you mean send? (known here: send, children)`,
		`x.yaml:10: channels.web.children: want a list, found "one"`,
		`x.yaml:11: name: repeats the field of line 1`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDecodeTypeErrors(t *testing.T) {
	_, d := decode(t, "name: a\nkeep: many\nevery: soon\n")
	got := problems(t, d)
	want := []string{
		`x.yaml:2: keep: "many" is not a whole number`,
		`x.yaml:3: every: "soon" is not a duration (such as 30s, 5m or 1h30m)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDecodeBadFiles(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"", "x.yaml: empty file"},
		{"# only a comment\n", "x.yaml: empty file"},
		{"name: [a\n", "x.yaml:1: not valid YAML: did not find expected ',' or ']'"},
		{"name: a\n---\nname: b\n", "x.yaml:2: more than one YAML document"},
		{"- a\n- b\n", `x.yaml:1: want a mapping of name, tls, keep, every, channels, found a list`},
	} {
		_, d := decode(t, tt.text)
		// A reader's checks of a file that is not a mapping would only
		// say that every field is missing: they are not recorded.
		if !strings.Contains(tt.text, "---") { // that one's first document is read
			d.Errorf("name", "missing")
		}
		err := d.Err()
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "missing") {
			t.Errorf("%q: %v, want it to start %q, and no more", tt.text, err, tt.want)
		}
	}
}

// Several values on one line are each named by their own field, a long or
// multi-line value is quoted and cut short, and no Go type is named.
func TestDecodeTypeErrorsOnOneLine(t *testing.T) {
	_, d := decode(t, "channels: {web: {send: [a]}}\nkeep: \"1\\n2\"\nevery: abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz\ntls: {ca: a}\n")
	got := problems(t, d)
	want := []string{
		`x.yaml:1: channels.web.send: want a single value, found a list`,
		`x.yaml:2: keep: "1\n2" is not a whole number`,
		`x.yaml:3: every: "abcdefghijklmnopqrstuvwxyzabcdefghijklmn…" is not a duration (such as 30s, 5m or 1h30m)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	type linkT struct {
		Keepalive time.Duration `yaml:"keepalive"`
		Idle      time.Duration `yaml:"idle_timeout"`
		Priority  int           `yaml:"priority"`
	}
	var l struct {
		Link linkT `yaml:"link"`
	}
	d = Decode("x.yaml", []byte("link: {keepalive: 10, idle_timeout: 5x, priority: high}\n"), &l)
	got = problems(t, d)
	want = []string{
		`x.yaml:1: link.keepalive: "10" is not a duration (such as 30s, 5m or 1h30m)`,
		`x.yaml:1: link.idle_timeout: "5x" is not a duration (such as 30s, 5m or 1h30m)`,
		`x.yaml:1: link.priority: "high" is not a whole number`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A reader's own problems: one with a field that could not be decoded, or
// under one, is that problem's echo and is dropped; several about one
// field that did decode are all kept, and so is one about a repeated field.
func TestErrorf(t *testing.T) {
	_, d := decode(t, "name: a\nkeep: many\ntls: [a]\nname: b\nchannels:\n  web:\n    children: [a, a, x y]\n")
	d.Errorf("keep", "0, want at least 1")
	d.Errorf("tls.ca", "missing")
	d.Errorf("name", "invalid node name %q", "a")
	d.Errorf("channels.web.children", "a is listed twice")
	d.Errorf("channels.web.children", "invalid node name %q", "x y")
	got := problems(t, d)
	want := []string{
		`x.yaml:1: name: invalid node name "a"`,
		`x.yaml:2: keep: "many" is not a whole number`,
		`x.yaml:3: tls: want a mapping of ca, cert, found a list`,
		`x.yaml:4: name: repeats the field of line 1`,
		`x.yaml:7: channels.web.children: a is listed twice`,
		`x.yaml:7: channels.web.children: invalid node name "x y"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Merge keys (<<: *anchor) merge as yaml.v3 decodes them: the merged
// fields are checked where they are merged, and found by Line and Has.
func TestDecodeMergeKeys(t *testing.T) {
	type withBase struct {
		fileT `yaml:",inline"`
		Base  channelT `yaml:"x-base"`
	}
	var f withBase
	d := Decode("x.yaml", []byte("x-base: &base {send: nights, children: [a]}\nchannels:\n  web:\n    <<: *base\n    children: [b]\n  api: {<<: [*base], send: always}\n"), &f)
	if err := d.Err(); err != nil {
		t.Errorf("problems: %v", err)
	}
	if web := f.Channels["web"]; web.Send != "nights" || len(web.Children) != 1 || web.Children[0] != "b" {
		t.Errorf("web: %+v, want send nights from the merge and its own children", web)
	}
	if api := f.Channels["api"]; api.Send != "always" || len(api.Children) != 1 || api.Children[0] != "a" {
		t.Errorf("api: %+v", api)
	}
	if !d.Has("channels.web.send") || d.Line("channels.web.send") != 1 {
		t.Errorf("channels.web.send: Has %v, Line %d; want it found at the anchor, line 1", d.Has("channels.web.send"), d.Line("channels.web.send"))
	}
	_, d = decode(t, "channels:\n  web:\n    <<: {snd: x}\n")
	if got := problems(t, d); len(got) != 1 || !strings.HasPrefix(got[0], `x.yaml:3: channels.web.snd: unknown field; did you mean send?`) {
		t.Errorf("an unknown field merged: %q", got)
	}
	_, d = decode(t, "channels:\n  web:\n    <<: [a]\n")
	if got := problems(t, d); len(got) != 1 || !strings.HasPrefix(got[0], `x.yaml:3: channels.web.<<: want a mapping (or an alias of one) to merge, found "a"`) {
		t.Errorf("a merge of a list of names: %q", got)
	}
}
