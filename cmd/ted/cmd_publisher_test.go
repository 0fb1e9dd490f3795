package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ted/admin"
	"ted/pki"
	"ted/publisher"
)

// publisherSetup writes a PKI, a signing key, a site and a schedule file
// into a temporary directory and returns it.
func publisherSetup(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	g := &globalOptions{}
	if err := runPKIInit(ctx, g, pkiInitOptions{dir: filepath.Join(dir, "pki")}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := runPKIIssue(ctx, g, pkiIssueOptions{dir: filepath.Join(dir, "pki"), name: "pub-1", role: "publisher"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.GenerateSigningKey(filepath.Join(dir, "pki", "publisher.key"), false); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "site"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "site", "index.html"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	sched := "schedules:\n  nights:\n    windows:\n      - cron: \"0 22 * * *\"\n        duration: 8h\n"
	if err := os.WriteFile(filepath.Join(dir, "schedules.yaml"), []byte(sched), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

const publisherYAML = `name: pub-1
store: ./var/pub
sign_key: pki/publisher.key
tls: {ca: pki/ca.crt, cert: pki/pub-1.crt, key: pki/pub-1.key}
distributor: 127.0.0.1:7400
schedules: schedules.yaml
distributions:
  app:
    from: ./site
    version: 1.4.0
    channels: [web]
    target: app
    requires: ["runtime >=2.0"]
    build: nights
`

func writePublisherConfig(t *testing.T, dir, content string) string {
	t.Helper()
	file := filepath.Join(dir, "publisher.yaml")
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestPublisherConfig(t *testing.T) {
	dir := publisherSetup(t)
	c, err := loadPublisherConfig(writePublisherConfig(t, dir, publisherYAML))
	if err != nil {
		t.Fatal(err)
	}
	app := c.Distributions["app"]
	if c.Store != filepath.Join(dir, "var", "pub") || c.DataDir != c.Store || app.From != filepath.Join(dir, "site") ||
		app.Version != "1.4.0" || app.Build != "nights" || *c.KeepRevisions != 3 {
		t.Errorf("config: %+v, app %+v", c, app)
	}
}

func TestPublisherRunRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(string) string
		mention string
	}{
		{"unknown field", func(s string) string { return s + "colour: blue\n" }, "colour"},
		{"unknown distribution field", func(s string) string {
			return strings.Replace(s, "    build: nights\n", "    build: nights\n    bulid: x\n", 1)
		}, "bulid"},
		{"unknown build schedule", func(s string) string { return strings.Replace(s, "build: nights", "build: weekends", 1) }, "distributions.app.build"},
		{"no schedule file", func(s string) string { return strings.Replace(s, "schedules: schedules.yaml\n", "", 1) }, "distributions.app.build"},
		{"schedule file missing", func(s string) string {
			return strings.Replace(s, "schedules: schedules.yaml\n", "schedules: gone.yaml\n", 1)
		}, "gone.yaml: no such file or directory"},
		{"bad version", func(s string) string { return strings.Replace(s, "version: 1.4.0", "version: one", 1) }, "distributions.app.version"},
		{"loose version", func(s string) string { return strings.Replace(s, "version: 1.4.0", "version: 1.4", 1) },
			`publisher.yaml:10: distributions.app.version: "1.4" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.4.0"?`},
		{"v version", func(s string) string { return strings.Replace(s, "version: 1.4.0", "version: v1", 1) },
			`publisher.yaml:10: distributions.app.version: "v1" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`},
		{"public key as sign_key", func(s string) string {
			return strings.Replace(s, "sign_key: pki/publisher.key", "sign_key: pki/publisher.key.pub", 1)
		}, "publisher.key.pub is a public key; sign_key wants the private signing key made by `ted pki signing-key`; did you mean "},
		{"no channels", func(s string) string { return strings.Replace(s, "channels: [web]", "channels: []", 1) }, "distributions.app.channels"},
		{"bad requires", func(s string) string { return strings.Replace(s, `"runtime >=2.0"`, `"runtime >>2"`, 1) }, "distributions.app.requires[0]"},
		{"no from", func(s string) string { return strings.Replace(s, "    from: ./site\n", "", 1) }, "distributions.app.from"},
		{"no store", func(s string) string { return strings.Replace(s, "store: ./var/pub\n", "", 1) }, "store"},
		{"bad distributor", func(s string) string { return strings.Replace(s, "127.0.0.1:7400", "localhost", 1) }, "distributor"},
		{"no distributions", func(s string) string { return s[:strings.Index(s, "distributions:")] }, "distributions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := publisherSetup(t)
			file := writePublisherConfig(t, dir, tt.edit(publisherYAML))
			err := runPublisher(t.Context(), daemonOptions{config: file, log: logOptions{format: "text", level: "info"}}, io.Discard)
			if code := exitCode(err); code != exitUsage {
				t.Fatalf("exit %d (%v), want %d", code, err, exitUsage)
			}
			if !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not name %s and %q", err, file, tt.mention)
			}
			if _, err := os.Stat(filepath.Join(dir, "var")); err == nil {
				t.Error("a refused config created the store")
			}
		})
	}
}

// TestPublisherRunServesStatus runs the daemon outside its build window:
// it builds nothing, answers on its admin socket and stops on cancel; a
// second run reopens the store beside the socket.
func TestPublisherRunServesStatus(t *testing.T) {
	dir := publisherSetup(t)
	file := writePublisherConfig(t, dir, strings.Replace(publisherYAML, "build: nights", "build: never", 1))
	c, err := loadPublisherConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	for run := range 2 {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			done <- runPublisher(ctx, daemonOptions{config: file, log: logOptions{format: "text", level: "info"}}, io.Discard)
		}()
		var st publisher.Status
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := admin.Get(ctx, daemonSocket(c.DataDir), "/api/status", &st)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("run %d: status: %v (daemon: %v)", run, err, <-done)
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if st.Node != "pub-1" || len(st.Distributions) != 1 || st.Distributions[0].Name != "app" ||
			st.Distributions[0].Open || !st.Distributions[0].LastBuild.IsZero() {
			t.Errorf("run %d: status %+v", run, st)
		}
	}
}
