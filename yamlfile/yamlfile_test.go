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
		err := d.Err()
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%q: %v, want it to start %q", tt.text, err, tt.want)
		}
	}
}
