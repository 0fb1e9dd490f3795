package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// The command reference (docs/commands) and the man pages are generated
// from the commands themselves, so a flag's help text is written once and
// the documents cannot drift from the binary. TestCommandReference fails
// when the committed Markdown differs from what gendocs writes.

// regenerateDocsCommand is the one command that brings docs/commands up to
// date; TestCommandReference names it when the pages are stale.
const regenerateDocsCommand = "go run ./cmd/ted gendocs --markdown docs/commands"

func newGendocsCommand() *cobra.Command {
	var markdownDir, manDir string
	cmd := &cobra.Command{
		Use:   "gendocs [--markdown DIR] [--man DIR]",
		Short: "Write the command reference as Markdown pages and man pages",
		Long: `Write one Markdown page and one section-1 man page per command.

The Markdown pages go to docs/commands (` + regenerateDocsCommand + `);
the man pages are made when the packages are built.`,
		// Hidden: it is a build tool, not something an operator runs, and
		// a hidden command has no page of its own in the reference.
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if markdownDir == "" && manDir == "" {
				return usageError{fmt.Errorf("want --markdown DIR, --man DIR or both")}
			}
			root := cmd.Root()
			// The pages must not depend on the day they were made: no
			// "Auto generated on" line (and no HISTORY section in man
			// pages). Set on every command because cobra copies it from
			// the root only into pages that have a SEE ALSO section.
			disableAutoGenTag(root)
			if markdownDir != "" {
				if err := writeMarkdown(root, markdownDir); err != nil {
					return err
				}
			}
			if manDir != "" {
				if err := writeMan(root, manDir); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&markdownDir, "markdown", "", "write Markdown pages (ted.md is the index) to `DIR`")
	cmd.Flags().StringVar(&manDir, "man", "", "write section-1 man pages (ted.1, ted-version.1, ...) to `DIR`")
	return cmd
}

func disableAutoGenTag(cmd *cobra.Command) {
	cmd.DisableAutoGenTag = true
	for _, sub := range cmd.Commands() {
		disableAutoGenTag(sub)
	}
}

// writeMarkdown replaces the generated pages in dir. Pages of commands that
// no longer exist are removed first, so regenerating is one command and
// never leaves a stale page behind; files that are not command pages are
// left alone.
func writeMarkdown(root *cobra.Command, dir string) error {
	if err := removeGenerated(dir, root.Name()+".md", root.Name()+"_*.md"); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// cobra's links name the other page's file (ted_dist_build.md), which
	// is a relative link between pages of the same directory.
	return doc.GenMarkdownTree(root, dir)
}

func writeMan(root *cobra.Command, dir string) error {
	if err := removeGenerated(dir, root.Name()+".1", root.Name()+"-*.1"); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// The header's date is left unset: cobra then takes it from
	// SOURCE_DATE_EPOCH when set (packaging/build.sh sets it to the
	// commit's time, so package builds are reproducible), else today.
	// The title is left unset too, so that each page is titled after
	// its own command (TED-DIST-BUILD).
	header := &doc.GenManHeader{
		Section: "1",
		Source:  "ted " + buildVersion().Version,
		Manual:  "TED Manual",
	}
	return doc.GenManTree(root, header, dir)
}

// removeGenerated deletes the files in dir that match any of patterns. A
// missing dir is not an error: there is nothing stale in it.
func removeGenerated(dir string, patterns ...string) error {
	for _, p := range patterns {
		matches, err := filepath.Glob(filepath.Join(dir, p))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.Remove(m); err != nil {
				return err
			}
		}
	}
	return nil
}
