package dependency

import (
	"slices"
	"testing"
)

func TestFindCycle(t *testing.T) {
	tests := []struct {
		name  string
		graph map[string][]string
		want  []string
	}{
		{"empty", nil, nil},
		{"chain", map[string][]string{"app": {"runtime"}, "runtime": {"certs"}}, nil},
		{"diamond", map[string][]string{"a": {"b", "c"}, "b": {"d"}, "c": {"d"}}, nil},
		{"self", map[string][]string{"a": {"a"}}, []string{"a", "a"}},
		{"two", map[string][]string{"b": {"a"}, "a": {"b"}}, []string{"a", "b", "a"}},
		{"three", map[string][]string{"c": {"a"}, "a": {"b"}, "b": {"c"}, "x": {"a"}}, []string{"a", "b", "c", "a"}},
		{"rotated to smallest", map[string][]string{"z": {"m"}, "m": {"b"}, "b": {"z"}}, []string{"b", "z", "m", "b"}},
		{"first of two, sorted", map[string][]string{"p": {"q"}, "q": {"p"}, "a": {"b"}, "b": {"a"}}, []string{"a", "b", "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 { // map order must not matter
				if got := FindCycle(tt.graph); !slices.Equal(got, tt.want) {
					t.Fatalf("FindCycle = %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestFormatCycle(t *testing.T) {
	if got := FormatCycle([]string{"a", "b", "a"}); got != "a → b → a" {
		t.Errorf("FormatCycle = %q", got)
	}
}
