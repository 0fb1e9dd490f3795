package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// printer writes the plain-text form of a result.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) linef(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format+"\n", args...)
	}
}

// printResult prints v as one JSON document when asJSON is set, and as text
// through text otherwise.
func printResult(w io.Writer, asJSON bool, v any, text func(*printer)) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	p := &printer{w: w}
	text(p)
	return p.err
}

// addJSONFlag gives a command that prints results its --json flag.
func addJSONFlag(cmd *cobra.Command, g *globalOptions) {
	cmd.Flags().BoolVar(&g.json, "json", false, "print one JSON document on stdout")
}
