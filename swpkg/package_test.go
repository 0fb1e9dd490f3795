package swpkg

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// samplePackage uses every kind of prerequisite and every field.
func samplePackage() *Package {
	return &Package{
		Format:   PackageFormat,
		Name:     "webstack",
		Version:  "2.1.0",
		Requires: []string{"runtime >=1.0", "base"},
		Prerequisites: []Prerequisite{
			{Kind: "os", Value: "linux"},
			{Kind: "arch", Value: "amd64"},
			{Kind: "free_disk", Path: "/", Min: 100 << 20},
			{Kind: "memory", Min: 1 << 30},
			{Kind: "file_exists", Value: "/etc/x"},
			{Kind: "file_absent", Value: "var/lock/x"},
			{Kind: "file_sha256", Path: "/etc/x", SHA256: strings.Repeat("ab", 32)},
			{Kind: "env", Name: "A"},
			{Kind: "env", Name: "B", EnvValue: ptr("")},
			{Kind: "env", Name: "C", EnvValue: ptr("c")},
			{Kind: "command", Value: "true", Timeout: time.Second},
			{Kind: "agent_version", Value: ">=0.3, <2"},
		},
		Components: []Component{
			{Name: "bin", To: "opt/web/bin", Prerequisites: []Prerequisite{{Kind: "arch", Value: "arm64"}}, Pre: []string{"a"}, Post: []string{"b"}, Undo: []string{"c"}},
			{Name: "docs", To: "opt/web/docs"},
		},
	}
}

func TestPackageRoundTrip(t *testing.T) {
	p := samplePackage()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodePackage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Errorf("DecodePackage =\n%+v\nwant\n%+v", got, p)
	}
	// An empty env value and no env value encode differently.
	if got.Prerequisites[8].EnvValue == nil || got.Prerequisites[7].EnvValue != nil {
		t.Error("env value: set and unset not kept apart")
	}
	// Integer keys: the top level is a map with keys 1 to 6.
	var m map[int]cbor.RawMessage
	if err := cbor.Unmarshal(b, &m); err != nil || len(m) != 6 {
		t.Errorf("top level: %v, %d keys", err, len(m))
	}
}

func TestDecodePackageRefuses(t *testing.T) {
	good, err := samplePackage().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// The same map written with an indefinite length, and with a text key.
	indefinite := append([]byte{0xbf}, good[1:]...)
	indefinite = append(indefinite, 0xff)
	unknown, _ := cbor.Marshal(map[any]any{1: 1, 2: "x", 3: "1.0.0", 6: []any{}, 99: 1})
	// Format 1 written in two bytes instead of one.
	if good[1] != 0x01 || good[2] != 0x01 {
		t.Fatalf("descriptor does not start with format 1: % x", good[:3])
	}
	nonCanonical := append([]byte{good[0], 0x01, 0x18, 0x01}, good[3:]...)
	if _, err := DecodePackage(nonCanonical); err == nil || !strings.Contains(err.Error(), "not in canonical encoding") {
		t.Errorf("non-minimal integer: %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":         nil,
		"garbage":       []byte("hello"),
		"truncated":     good[:len(good)-1],
		"trailing":      append(bytes.Clone(good), 0),
		"indefinite":    indefinite,
		"unknown field": unknown,
		"not canonical": nonCanonical,
		"too large":     make([]byte, MaxDescriptorBytes+1),
	} {
		if _, err := DecodePackage(b); !errors.Is(err, ErrInvalidPackage) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(p *Package)
		want   string
	}{
		{"format", func(p *Package) { p.Format = 2 }, "format 2"},
		{"name", func(p *Package) { p.Name = "a b" }, `name "a b"`},
		{"version", func(p *Package) { p.Version = "2.1" }, `version: "2.1" is not a semantic version MAJOR.MINOR.PATCH; did you mean "2.1.0"?`},
		{"requires", func(p *Package) { p.Requires = []string{"a >>1"} }, `constraint ">>1"`},
		{"no components", func(p *Package) { p.Components = nil }, "0 components"},
		{"duplicate component", func(p *Package) { p.Components[1].Name = "bin" }, `component "bin": duplicate name`},
		{"component name", func(p *Package) { p.Components[1].Name = "" }, "component name is empty"},
		{"to", func(p *Package) { p.Components[1].To = "../x" }, `to "../x": path has a .. element`},
		{"to dot", func(p *Package) { p.Components[1].To = "." }, `to ".": empty path`},
		{"action", func(p *Package) { p.Components[0].Undo = []string{""} }, `undo: command "": empty`},
		{"unknown kind", func(p *Package) { p.Prerequisites[0].Kind = "kernel" }, `unknown prerequisite kind "kernel"`},
		{"field of another kind", func(p *Package) { p.Prerequisites[0].Path = "/" }, "os does not use field Path"},
		{"os", func(p *Package) { p.Prerequisites[0].Value = "linx" }, `"linx" is not a known operating system`},
		{"min", func(p *Package) { p.Prerequisites[3].Min = -1 }, "memory.min: -1: must be more than 0"},
		{"sha256 upper case", func(p *Package) { p.Prerequisites[6].SHA256 = strings.Repeat("AB", 32) }, "is not 64 hex digits"},
		{"env name", func(p *Package) { p.Prerequisites[7].Name = "" }, "env.name"},
		{"timeout", func(p *Package) { p.Prerequisites[10].Timeout = 0 }, "command.timeout: 0s"},
		{"timeout too long", func(p *Package) { p.Prerequisites[10].Timeout = 2 * time.Hour }, "at most 1h0m0s"},
		{"command", func(p *Package) { p.Prerequisites[10].Value = "a\x00b" }, "contains NUL"},
		{"agent_version", func(p *Package) { p.Prerequisites[11].Value = "~~1" }, "is not a version constraint"},
		{"relative path", func(p *Package) { p.Prerequisites[5].Value = "./x" }, "path is not clean"},
		{"component prerequisite", func(p *Package) { p.Components[0].Prerequisites[0].Value = "" }, `component "bin": prerequisites: [0] arch`},
	}
	for _, c := range cases {
		p := samplePackage()
		c.change(p)
		err := p.Validate()
		if !errors.Is(err, ErrInvalidPackage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

func FuzzDecodePackage(f *testing.F) {
	good, err := samplePackage().Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePackage(b)
		if err != nil {
			return
		}
		again, err := p.Marshal()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted bytes that do not re-encode to themselves: %v", err)
		}
	})
}

func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	src := filepath.Join(dir, "src")
	for _, d := range []string{"bin/sub", "scripts"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			f.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(src, "bin/sub/a"), []byte("a"), 0o644)
	os.Symlink("sub/a", filepath.Join(src, "bin/l"))
	os.WriteFile(filepath.Join(src, "scripts/s"), []byte("s"), 0o755)
	spk := filepath.Join(src, "p.spk")
	os.WriteFile(spk, []byte("name: p\nversion: 1.0.0\ncomponents:\n  - name: bin\n    files: {from: bin, to: opt/p}\n"), 0o644)
	spec, err := ParseSpec(spk)
	if err != nil {
		f.Fatal(err)
	}
	cpk := filepath.Join(dir, "p.cpk")
	if _, err := Compile(spec, cpk); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(cpk)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		parent := t.TempDir()
		file := filepath.Join(parent, "f.cpk")
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(parent, "out")
		if _, err := Open(file, out); err != nil {
			if _, serr := os.Stat(out); serr == nil {
				t.Fatalf("Open failed (%v) and left %s", err, out)
			}
			return
		}
		if left, _ := os.ReadDir(parent); len(left) != 2 {
			t.Fatalf("Open wrote beside its folder: %d entries", len(left))
		}
	})
}
