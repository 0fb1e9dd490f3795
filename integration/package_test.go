//go:build linux

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writePackage writes a package spec with two components (bin, always;
// docs, only where docsGate exists) and a script that logs every command
// to log, and returns the spec's path. gate, if set, is a package-level
// file_exists prerequisite.
func writePackage(t *testing.T, dir, name, version, gate, docsGate, log string) string {
	t.Helper()
	dir = filepath.Join(dir, name)
	writeFile(t, filepath.Join(dir, "bin/"+name), []byte("#!/bin/sh\necho "+name+" "+version+"\n"), 0o755)
	writeFile(t, filepath.Join(dir, "bin/"+name+".conf"), []byte("version = "+version+"\n"), 0o640)
	writeFile(t, filepath.Join(dir, "docs/index.html"), []byte("<h1>"+name+"</h1>\n"), 0o644)
	writeFile(t, filepath.Join(dir, "scripts/log.sh"),
		[]byte(fmt.Sprintf("echo \"$1 $TED_NAME $TED_COMPONENT\" >> %s\n", log)), 0o644)
	spec := fmt.Sprintf("name: %s\nversion: %s\n", name, version)
	if gate != "" {
		spec += fmt.Sprintf("prerequisites:\n  - file_exists: %s\n  - os: linux\n", gate)
	}
	spec += fmt.Sprintf(`components:
  - name: bin
    files: {from: ./bin, to: opt/%[1]s/bin}
    pre: ["sh log.sh pre"]
    post: ["sh log.sh post"]
    undo: ["sh log.sh undo"]
  - name: docs
    files: {from: ./docs, to: opt/%[1]s/docs}
    prerequisites: [{file_exists: %[2]s}]
    undo: ["sh log.sh undo"]
`, name, docsGate)
	path := filepath.Join(dir, name+".spk")
	writeFile(t, path, []byte(spec), 0o644)
	return path
}

// buildPackage compiles a spec and builds it into the publisher store.
func (nw *network) buildPackage(spec string) {
	nw.t.Helper()
	cpk := strings.TrimSuffix(spec, ".spk") + ".cpk"
	mustTed(nw.t, "package", "compile", spec, "--out", cpk)
	mustTed(nw.t, "dist", "build", "--store", nw.store, "--package", cpk, "--channel", "web", "--sign-key", nw.signKey)
}

// packagesResult is `ted subscriber packages --json`.
type packagesResult struct {
	Packages []struct {
		Name       string `json:"name"`
		Revision   uint64 `json:"revision"`
		Version    string `json:"version"`
		State      string `json:"state"`
		Components []struct {
			Name      string `json:"name"`
			Installed bool   `json:"installed"`
			Reason    string `json:"reason"`
		} `json:"components"`
		NextRollback bool `json:"next_rollback"`
	} `json:"packages"`
}

// TestPackages installs software packages on a real subscriber: a
// component whose prerequisite fails is skipped (partial); a package whose
// prerequisite fails waits, blocked, until the next extract window after
// it holds; three packages roll back one by one, last first, running
// their undo commands and taking their files away.
func TestPackages(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-01"}},
	}})
	// Extract windows of 2 s every 4 s.
	nw.writeSchedules("windows.yaml", "schedules:\n  often:\n    windows:\n      - cron: \"*/4 * * * * *\"\n        duration: 2s\n")
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr}, schedules: "windows.yaml", extract: "often"})
	log := filepath.Join(nw.dir, "commands.log")
	gate := filepath.Join(nw.dir, "gate-open")
	never := filepath.Join(nw.dir, "never-there")
	waitState := web1.waitDistState
	packages := func() packagesResult {
		t.Helper()
		var res packagesResult
		r := mustTed(t, "subscriber", "packages", "--config", web1.config, "--json")
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("%v: %s", err, r)
		}
		return res
	}
	commands := func() string {
		b, _ := os.ReadFile(log)
		_ = os.Remove(log)
		return strings.TrimSpace(string(b))
	}
	pkgDir := filepath.Join(nw.dir, "packages")

	// webstack: docs' prerequisite fails here, so it is partial.
	nw.buildPackage(writePackage(t, pkgDir, "webstack", "2.1.0", "", never, log))
	nw.publish("webstack", dist1)
	partial := waitState("webstack", 1, "extracted")
	if !strings.Contains(partial.Reason, "partial") || !strings.Contains(partial.Reason, "docs") || !strings.Contains(partial.Reason, never) {
		t.Errorf("webstack@1 extracted with reason %q, want it partial naming docs and %s", partial.Reason, never)
	}
	if _, err := os.Stat(filepath.Join(web1.root, "opt/webstack/bin/webstack")); err != nil {
		t.Errorf("the bin component is not installed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(web1.root, "opt/webstack/docs")); !os.IsNotExist(err) {
		t.Errorf("the skipped docs component is there: %v", err)
	}
	if got := commands(); got != "pre webstack bin\npost webstack bin" {
		t.Errorf("commands ran:\n%s\nwant pre and post of bin", got)
	}
	pk := packages()
	if len(pk.Packages) != 1 || pk.Packages[0].State != "partial" || len(pk.Packages[0].Components) != 2 ||
		pk.Packages[0].Components[1].Installed || !strings.Contains(pk.Packages[0].Components[1].Reason, "file_exists") {
		t.Errorf("packages = %+v, want webstack partial with docs skipped for file_exists", pk)
	}

	// gated: its package-level prerequisite fails; nothing installs and
	// it waits, blocked, naming the prerequisite.
	nw.buildPackage(writePackage(t, pkgDir, "gated", "1.0.0", gate, gate, log))
	nw.publish("gated", dist1)
	blocked := waitState("gated", 1, "blocked")
	if !strings.Contains(blocked.Reason, "file_exists") || !strings.Contains(blocked.Reason, gate) {
		t.Errorf("gated@1 blocked with %q, want the file_exists prerequisite named", blocked.Reason)
	}
	if _, err := os.Stat(filepath.Join(web1.root, "opt/gated")); !os.IsNotExist(err) {
		t.Errorf("a blocked package installed something: %v", err)
	}
	// Once it holds, the next window installs it, docs included.
	writeFile(t, gate, []byte("open\n"), 0o644)
	waitState("gated", 1, "extracted")
	if _, err := os.Stat(filepath.Join(web1.root, "opt/gated/docs/index.html")); err != nil {
		t.Errorf("gated's docs are not installed: %v", err)
	}
	commands()

	nw.buildPackage(writePackage(t, pkgDir, "tools", "0.9.0", "", gate, log))
	nw.publish("tools", dist1)
	waitState("tools", 1, "extracted")
	commands()
	pk = packages()
	var order []string
	for _, p := range pk.Packages {
		mark := ""
		if p.NextRollback {
			mark = "*"
		}
		order = append(order, mark+p.Name)
	}
	if strings.Join(order, " ") != "webstack gated *tools" {
		t.Errorf("packages in completion order: %v, want webstack gated *tools", order)
	}

	// Not the latest: refused, naming the later ones.
	r := ted(t, "subscriber", "rollback", "--config", web1.config, "--name", "webstack")
	if r.code != 1 || !strings.Contains(r.stderr, "tools@1, gated@1 installed later") {
		t.Fatalf("rollback of webstack first: %s; want it refused naming tools and gated", r)
	}
	for _, want := range []struct{ name, undo string }{
		{"tools", "undo tools docs\nundo tools bin"},
		{"gated", "undo gated docs\nundo gated bin"},
		{"webstack", "undo webstack bin"},
	} {
		mustTed(t, "subscriber", "rollback", "--config", web1.config)
		if got := commands(); got != want.undo {
			t.Errorf("rollback of %s ran:\n%s\nwant\n%s", want.name, got, want.undo)
		}
		if _, err := os.Stat(filepath.Join(web1.root, "opt", want.name)); !os.IsNotExist(err) {
			t.Errorf("%s's files after its rollback: %v, want them gone", want.name, err)
		}
		waitState(want.name, 1, "rolled_back")
	}
	if pk := packages(); len(pk.Packages) != 0 {
		t.Errorf("packages after every rollback: %+v", pk)
	}
}

// TestPackageBadInput: a spec mistake is one error naming file, line and
// field (exit 2); a truncated or altered .cpk is refused by dist build
// (exit 3) and nothing is stored.
func TestPackageBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	spec := writePackage(t, dir, "webstack", "1.0.0", "", "/nonexistent", log)
	good, err := os.ReadFile(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, edit, want string }{
		{"unknown field", strings.Replace(string(good), "version:", "colour: blue\nversion:", 1), "bad.spk:2: colour: unknown field (known here: name, version, requires, scripts, prerequisites, components)"},
		{"unknown field near a known one", strings.Replace(string(good), "version:", "requirse: [x]\nversion:", 1), "bad.spk:2: requirse: unknown field; did you mean requires? (known here: "},
		{"missing folder", strings.Replace(string(good), "./docs", "./nope", 1), "components[1].files.from"},
		{"escaping path", strings.Replace(string(good), "./docs", "../..", 1), "components[1].files.from"},
		{"unknown prerequisite", strings.Replace(string(good), "file_exists:", "kernel:", 1), "unknown prerequisite kind \"kernel\""},
		{"duplicate component", strings.Replace(string(good), "name: docs", "name: bin", 1), "duplicate"},
		// The commands run in the package's scripts folder: a script that
		// is not there is refused before anything is built.
		{"script not in the package", strings.Replace(string(good), "sh log.sh pre", "sh prepare.sh", 1),
			`bad.spk:6: components[0].pre[0]: "sh prepare.sh" runs prepare.sh, which is not in the package's scripts folder ./scripts, where the commands run`},
		{"script by the spec's path", strings.Replace(string(good), "sh log.sh post", "sh scripts/log.sh post", 1),
			`bad.spk:7: components[0].post[0]: "sh scripts/log.sh post" runs scripts/log.sh, which is not in the package's scripts folder ./scripts, where the commands run; did you mean "sh log.sh post"?`},
		{"version not strict", strings.Replace(string(good), "version: 1.0.0", "version: v1", 1),
			`bad.spk:2: version: "v1" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`},
	} {
		bad := filepath.Join(dir, "webstack", "bad.spk")
		writeFile(t, bad, []byte(tt.edit), 0o644)
		r := ted(t, "package", "compile", bad, "--out", filepath.Join(dir, "bad.cpk"))
		if r.code != 2 || !strings.Contains(r.stderr, "bad.spk:") || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%s: %s; want exit 2 naming the file, line and %q", tt.name, r, tt.want)
		}
	}

	cpk := filepath.Join(dir, "webstack.cpk")
	mustTed(t, "package", "compile", spec, "--out", cpk)
	data, err := os.ReadFile(cpk)
	if err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	mustTed(t, "pki", "signing-key", "--out", filepath.Join(dir, "key"))
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"truncated", data[:len(data)*2/3]},
		{"altered", func() []byte { b := append([]byte(nil), data...); b[len(b)/2] ^= 1; return b }()},
	} {
		bad := filepath.Join(dir, tt.name+".cpk")
		writeFile(t, bad, tt.data, 0o644)
		r := ted(t, "dist", "build", "--store", store, "--package", bad, "--channel", "web", "--sign-key", filepath.Join(dir, "key"))
		if r.code != 3 || !strings.Contains(r.stderr, bad) {
			t.Errorf("%s package: %s; want exit 3 naming the file", tt.name, r)
		}
	}
	if r := ted(t, "dist", "list", "--store", store); strings.Contains(r.stdout, "webstack") {
		t.Errorf("a refused package was stored: %s", r)
	}
	var built struct {
		Name, Version string
	}
	tedJSON(t, &built, "dist", "build", "--store", store, "--package", cpk, "--channel", "web", "--sign-key", filepath.Join(dir, "key"))
	if built.Name != "webstack" || built.Version != "1.0.0" {
		t.Errorf("dist build --package = %+v, want webstack 1.0.0", built)
	}
	if r := ted(t, "dist", "build", "--store", store, "--package", cpk, "--name", "x", "--channel", "web", "--sign-key", filepath.Join(dir, "key")); r.code != 2 {
		t.Errorf("--name with --package: %s; want exit 2", r)
	}
}
