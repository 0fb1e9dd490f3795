package docs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReferenceShowsExamples: each reference page shows its kind's example
// verbatim, right after the line <!-- example: KIND -->, so the page and
// `ted config example KIND` never differ. TED_UPDATE_DOCS=1 rewrites the
// blocks from the examples.
func TestReferenceShowsExamples(t *testing.T) {
	update := os.Getenv("TED_UPDATE_DOCS") == "1"
	for _, kind := range Kinds {
		page := filepath.Join("reference", kind+".md")
		data, err := os.ReadFile(page)
		if err != nil {
			t.Errorf("%s: %v", page, err)
			continue
		}
		ex, err := Example(kind)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		marker := "<!-- example: " + kind + " -->\n"
		at := strings.Index(text, marker)
		if at < 0 {
			t.Errorf("%s has no line %q where the example goes", page, strings.TrimSpace(marker))
			continue
		}
		before, after := text[:at+len(marker)], text[at+len(marker):]
		block := "\n```yaml\n" + string(ex) + "```\n"
		// An existing block (after the marker) is replaced whole.
		rest := after
		if strings.HasPrefix(strings.TrimLeft(after, "\n"), "```yaml\n") {
			trimmed := strings.TrimLeft(after, "\n")
			end := strings.Index(trimmed[len("```yaml\n"):], "\n```\n")
			if end >= 0 {
				rest = trimmed[len("```yaml\n")+end+len("\n```\n"):]
			}
		}
		want := before + block + rest
		if want == text {
			continue
		}
		if update {
			if err := os.WriteFile(page, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s does not show examples/%s verbatim after %q; run TED_UPDATE_DOCS=1 go test ./docs", page, ExampleFile(kind), strings.TrimSpace(marker))
	}
}
