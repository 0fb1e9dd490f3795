package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"ted/transport"

	"github.com/spf13/cobra"
)

// version is set at link time (-ldflags "-X main.version=1.2.3"); a plain
// build reports the module version or VCS revision that Go recorded.
var version = ""

type versionInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	GoVersion string `json:"go"`
	Protocol  string `json:"protocol"`
}

func buildVersion() versionInfo {
	v := versionInfo{Version: version, GoVersion: runtime.Version(), Protocol: transport.ALPN}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Revision = s.Value
			}
		}
	}
	if v.Version == "" {
		v.Version = "dev"
	}
	return v
}

// lines are the text of ted version and ted --version.
func (v versionInfo) lines() []string {
	lines := []string{fmt.Sprintf("ted %s (%s, protocol %s)", v.Version, v.GoVersion, v.Protocol)}
	if v.Revision != "" {
		lines = append(lines, "revision "+v.Revision)
	}
	return lines
}

func newVersionCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of ted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := buildVersion()
			return printResult(cmd.OutOrStdout(), g.json, v, func(p *printer) {
				for _, line := range v.lines() {
					p.linef("%s", line)
				}
			})
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}
