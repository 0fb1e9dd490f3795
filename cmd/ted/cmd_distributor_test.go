package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const distributorYAML = `name: dist-1
listen: 127.0.0.1:7400
data_dir: ./var/dist-1
tls: {ca: pki/ca.crt, cert: pki/dist-1.crt, key: pki/dist-1.key}
trust: [pki/publisher.key.pub]
channels:
  web:
    publishers: [pub-1]
    children: [web-cluster, web-02]
clusters:
  web-cluster:
    members: [web-01a, web-01b]
`

func writeDistributorConfig(t *testing.T, content string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "dist-1.yaml")
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestDistributorConfigClusters(t *testing.T) {
	c, err := loadDistributorConfig(writeDistributorConfig(t, distributorYAML))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.clusters()["web-cluster"].Members; !slices.Equal(got, []string{"web-01a", "web-01b"}) {
		t.Errorf("web-cluster's members: %v", got)
	}
}

// TestDistributorRunRefusesBadClusters: each bad clusters section is
// refused with the file, line and field, exit 2, before anything starts.
func TestDistributorRunRefusesBadClusters(t *testing.T) {
	section := func(s string) string { return distributorYAML[:strings.Index(distributorYAML, "clusters:")] + s }
	for _, tt := range []struct {
		name, yaml, want string
	}{
		{"no members", section("clusters:\n  web-cluster: {}\n"), "clusters.web-cluster.members: none"},
		{"empty members", section("clusters:\n  web-cluster:\n    members: []\n"), "clusters.web-cluster.members: none"},
		{"bad member", section("clusters:\n  web-cluster:\n    members: [web-01a, \"web 01b\"]\n"), `clusters.web-cluster.members: invalid node name "web 01b"`},
		{"member twice", section("clusters:\n  web-cluster:\n    members: [web-01a, web-01a]\n"), "clusters.web-cluster.members: web-01a is listed twice"},
		{"member of two clusters", section("clusters:\n  web-cluster:\n    members: [web-01a]\n  db-cluster:\n    members: [web-01a]\n"),
			"clusters.web-cluster.members: web-01a is also a member of cluster db-cluster"},
		{"bad cluster name", section("clusters:\n  web/cluster:\n    members: [web-01a]\n"), `clusters: cluster "web/cluster"`},
		{"unknown field", section("clusters:\n  web-cluster:\n    member: [web-01a]\n"), "dist-1.yaml:12: clusters.web-cluster.member: unknown field; did you mean members? (known here: members)"},
		{"cluster twice", distributorYAML + "  web-cluster:\n    members: [web-01c]\n", `clusters.web-cluster: repeats the entry of line`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := writeDistributorConfig(t, tt.yaml)
			err := runDistributor(t.Context(), daemonOptions{config: file, log: logOptions{format: "text", level: "info"}}, io.Discard)
			if code := exitCode(err); code != exitUsage {
				t.Fatalf("exit %d (%v), want %d", code, err, exitUsage)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !regexp.MustCompile(`^` + regexp.QuoteMeta(file) + `:\d+: `).MatchString(line) {
					t.Errorf("error line %q: want it to start FILE:LINE: naming %s", line, file)
				}
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q: want it to say %q", err, tt.want)
			}
		})
	}
}
