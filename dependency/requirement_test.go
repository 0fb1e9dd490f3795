package dependency

import (
	"slices"
	"strings"
	"testing"
)

func TestParseRequirement(t *testing.T) {
	tests := []struct {
		in         string
		name       string
		constraint string // "" for any version
		allows     []string
		refuses    []string
		err        string // substring of the error; "" for success
	}{
		{in: "runtime >=2.0, <3", name: "runtime", constraint: ">=2.0, <3", allows: []string{"2.0.0", "2.9.1"}, refuses: []string{"1.4.0", "3.0.0", "junk"}},
		{in: "certs", name: "certs", allows: []string{"0.0.1", "junk"}},
		{in: "  certs  ", name: "certs"},
		{in: "runtime>=2", name: "runtime", constraint: ">=2", allows: []string{"2.0.0"}, refuses: []string{"1.9.9"}},
		{in: "lib.c++_x-1 ~1.2", name: "lib.c++_x-1", constraint: "~1.2", allows: []string{"1.2.7"}, refuses: []string{"1.3.0"}},
		{in: "app ^1.2 || ^2", name: "app", allows: []string{"1.5.0", "2.1.0"}, refuses: []string{"3.0.0"}, constraint: "^1.2 || ^2"},
		{in: "", err: `requirement "": no distribution name`},
		{in: ">=2.0", err: "no distribution name"},
		{in: "-runtime", err: `name "-runtime"`},
		{in: "run/time", err: `name "run/time"`},
		{in: "café >=1", err: `requirement "café >=1": name "café": use ASCII letters a-z A-Z, digits and . _ + - (starting with a letter or digit)`},
		{in: "runtime >=banana", err: `requirement "runtime >=banana": constraint ">=banana"`},
		{in: strings.Repeat("a", 129), err: "longer than 128 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRequirement(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseRequirement(%q) error = %v, want one containing %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRequirement(%q): %v", tt.in, err)
			}
			if r.Name != tt.name {
				t.Errorf("Name = %q, want %q", r.Name, tt.name)
			}
			if (r.Constraint == nil) != (tt.constraint == "") {
				t.Errorf("Constraint = %v, want %q", r.Constraint, tt.constraint)
			}
			if r.Text != strings.TrimSpace(tt.in) || r.String() != r.Text {
				t.Errorf("Text = %q, String = %q, want %q", r.Text, r.String(), strings.TrimSpace(tt.in))
			}
			for _, v := range tt.allows {
				if !r.Allows(v) {
					t.Errorf("%s does not allow %s", r, v)
				}
			}
			for _, v := range tt.refuses {
				if r.Allows(v) {
					t.Errorf("%s allows %s", r, v)
				}
			}
		})
	}
}

func TestParseRequirements(t *testing.T) {
	reqs, err := ParseRequirements([]string{"runtime >=2.0, <3", "certs"})
	if err != nil || len(reqs) != 2 || reqs[0].Name != "runtime" || reqs[1].Name != "certs" {
		t.Fatalf("ParseRequirements = %v, %v", reqs, err)
	}
	if _, err := ParseRequirements([]string{"certs", "bad name"}); err == nil || !strings.Contains(err.Error(), `"bad name"`) {
		t.Fatalf("ParseRequirements with a bad entry: error = %v", err)
	}
}

func TestRequirementStringWithoutText(t *testing.T) {
	r := mustRequire(t, "runtime >=2.0")
	r.Text = ""
	if got := r.String(); got != "runtime >=2.0" {
		t.Errorf("String() = %q", got)
	}
	if got := (Requirement{Name: "certs"}).String(); got != "certs" {
		t.Errorf("String() = %q", got)
	}
}

func FuzzParseRequirement(f *testing.F) {
	for _, s := range []string{"runtime >=2.0, <3", "certs", "a>=1", "x ~1 || ^2", "", "!"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRequirement(s)
		if err != nil {
			return
		}
		if !nameRE.MatchString(r.Name) || len(r.Name) > maxNameLen {
			t.Fatalf("ParseRequirement(%q) accepted name %q", s, r.Name)
		}
		r2, err := ParseRequirement(r.String())
		if err != nil || r2.Name != r.Name || (r2.Constraint == nil) != (r.Constraint == nil) {
			t.Fatalf("reparse of %q: %v, %v", r.String(), r2, err)
		}
	})
}

func mustRequire(t testing.TB, s string) Requirement {
	t.Helper()
	r, err := ParseRequirement(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBreaks(t *testing.T) {
	reqs := func(list ...string) []Requirement {
		t.Helper()
		r, err := ParseRequirements(list)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	extracted := []Candidate{
		{Name: "app", Version: "1.2.0", Requires: reqs("runtime >=2.0, <3", "certs")},
		{Name: "tool", Version: "0.9.0", Requires: reqs("runtime")},
		{Name: "runtime", Version: "2.1.0", Requires: reqs("libc >=2")},
		{Name: "certs", Version: "2024.1.0"},
	}
	tests := []struct {
		name, version string
		want          []string
	}{
		{"runtime", "2.0.5", nil},
		{"runtime", "1.4.0", []string{"app 1.2.0 requires runtime >=2.0, <3"}},
		{"runtime", "", []string{"app 1.2.0 requires runtime >=2.0, <3", "tool 0.9.0 requires runtime"}},
		{"runtime", "not-semver", []string{"app 1.2.0 requires runtime >=2.0, <3"}},
		{"certs", "", []string{"app 1.2.0 requires certs"}},
		{"certs", "1.0.0", nil},
		{"app", "", nil},
	}
	for _, tt := range tests {
		if got := Breaks(extracted, tt.name, tt.version); !slices.Equal(got, tt.want) {
			t.Errorf("Breaks(%s, %q) = %q, want %q", tt.name, tt.version, got, tt.want)
		}
	}
}
