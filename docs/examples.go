// Package docs is TED's user documentation. Its Go side holds the
// commented example of each file kind, which `ted config example KIND`
// prints and the reference pages (docs/reference) show verbatim: one
// source, so the two cannot drift, and tests load every example.
package docs

import (
	"embed"
	"fmt"
	"strings"
)

//go:embed examples
var examples embed.FS

// Kinds are the file kinds with an example, in the order they are listed.
var Kinds = []string{"distributor", "subscriber", "publisher", "schedules", "package"}

// ExampleFile is the name of kind's example under docs/examples.
func ExampleFile(kind string) string {
	if kind == "package" {
		return "package.spk"
	}
	return kind + ".yaml"
}

// Example returns the commented example of kind.
func Example(kind string) ([]byte, error) {
	for _, k := range Kinds {
		if k == kind {
			return examples.ReadFile("examples/" + ExampleFile(kind))
		}
	}
	return nil, fmt.Errorf("no example of %q: the kinds are %s", kind, strings.Join(Kinds, ", "))
}
