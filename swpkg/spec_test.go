package swpkg

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// baseSpec is the design's example; the tests below change one line of it.
// Line numbers matter: the error cases name them.
const baseSpec = `name: webstack
version: 2.1.0
requires: ["runtime >=1.0"]
prerequisites:
  - os: linux
  - free_disk: {path: /, min: 100MiB}
components:
  - name: binaries
    files: {from: ./bin, to: opt/webstack/bin}
    prerequisites: [{arch: amd64}]
    pre:  ["sh stop.sh"]
    post: ["sh start.sh"]
    undo: ["sh stop.sh"]
  - name: docs
    files: {from: ./docs, to: opt/webstack/docs}
    prerequisites: [{file_exists: /etc/webstack/enable-docs}]
`

// writeFile writes a file, making its folder.
func writeFile(t *testing.T, name, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// specTree makes a package source folder: bin, docs and scripts, plus a
// folder beside it that specs must not reach. It returns the spec's folder.
func specTree(t *testing.T) string {
	t.Helper()
	top := t.TempDir()
	dir := filepath.Join(top, "src")
	writeFile(t, filepath.Join(dir, "bin/webstack"), "#!/bin/sh\necho webstack\n", 0o755)
	writeFile(t, filepath.Join(dir, "bin/lib/libweb.so.1"), "ELF", 0o644)
	if err := os.Symlink("libweb.so.1", filepath.Join(dir, "bin/lib/libweb.so")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("lib", filepath.Join(dir, "bin/current")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "bin/sbin/setuid-helper"), "x", 0o750|os.ModeSetuid)
	if err := os.Mkdir(filepath.Join(dir, "bin/empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "docs/README"), "read me\n", 0o644)
	writeFile(t, filepath.Join(dir, "docs/ro/notes.txt"), "notes\n", 0o444)
	if err := os.Chmod(filepath.Join(dir, "docs/ro"), 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dir, "docs/ro"), 0o755) })
	writeFile(t, filepath.Join(dir, "scripts/stop.sh"), "echo stop\n", 0o755)
	writeFile(t, filepath.Join(dir, "scripts/start.sh"), "echo start\n", 0o755)
	writeFile(t, filepath.Join(top, "outside/secret"), "secret", 0o600)
	if err := os.Symlink("../outside", filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeSpec(t *testing.T, dir, text string) string {
	t.Helper()
	file := filepath.Join(dir, "webstack.spk")
	writeFile(t, file, text, 0o644)
	return file
}

func TestParseSpec(t *testing.T) {
	dir := specTree(t)
	text := strings.Replace(baseSpec, "  - free_disk: {path: /, min: 100MiB}\n", `  - free_disk: {path: /, min: 100MiB}
  - memory: {min: 1GiB}
  - file_absent: etc/webstack/disabled
  - file_sha256: {path: /etc/os-release, sha256: 5891B5B522D5DF086D0FF0B110FBD9D21BB4FC7163AF34D08286A2E846F6BE03}
  - env: {name: DEPLOY}
  - env: {name: DEPLOY, value: ""}
  - command: "test -d /opt"
  - command: {run: "sleep 1", timeout: 2s}
  - agent_version: ">=0.3, <2"
  - arch: 386
`, 1)
	file := writeSpec(t, dir, text)
	spec, err := ParseSpec(file)
	if err != nil {
		t.Fatal(err)
	}
	realDir, _ := filepath.EvalSymlinks(dir)
	want := &Spec{
		File: file,
		Dir:  dir,
		Package: Package{
			Format:   PackageFormat,
			Name:     "webstack",
			Version:  "2.1.0",
			Requires: []string{"runtime >=1.0"},
			Prerequisites: []Prerequisite{
				{Kind: "os", Value: "linux"},
				{Kind: "free_disk", Path: "/", Min: 100 << 20},
				{Kind: "memory", Min: 1 << 30},
				{Kind: "file_absent", Value: "etc/webstack/disabled"},
				{Kind: "file_sha256", Path: "/etc/os-release", SHA256: "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"},
				{Kind: "env", Name: "DEPLOY"},
				{Kind: "env", Name: "DEPLOY", EnvValue: ptr("")},
				{Kind: "command", Value: "test -d /opt", Timeout: 30 * time.Second},
				{Kind: "command", Value: "sleep 1", Timeout: 2 * time.Second},
				{Kind: "agent_version", Value: ">=0.3, <2"},
				{Kind: "arch", Value: "386"},
			},
			Components: []Component{
				{
					Name:          "binaries",
					To:            "opt/webstack/bin",
					Prerequisites: []Prerequisite{{Kind: "arch", Value: "amd64"}},
					Pre:           []string{"sh stop.sh"},
					Post:          []string{"sh start.sh"},
					Undo:          []string{"sh stop.sh"},
				},
				{
					Name:          "docs",
					To:            "opt/webstack/docs",
					Prerequisites: []Prerequisite{{Kind: "file_exists", Value: "/etc/webstack/enable-docs"}},
				},
			},
		},
		Scripts: filepath.Join(realDir, "scripts"),
		From: map[string]string{
			"binaries": filepath.Join(realDir, "bin"),
			"docs":     filepath.Join(realDir, "docs"),
		},
	}
	if !reflect.DeepEqual(spec, want) {
		t.Errorf("ParseSpec =\n%+v\nwant\n%+v", spec, want)
	}
}

func TestParseSpecScripts(t *testing.T) {
	dir := specTree(t)
	// No scripts folder and no scripts field: no scripts, and the post
	// commands run in the component's target, where its files are (pre
	// and undo commands may run in the subscriber's root: not checked).
	if err := os.RemoveAll(filepath.Join(dir, "scripts")); err != nil {
		t.Fatal(err)
	}
	file := writeSpec(t, dir, baseSpec)
	_, err := ParseSpec(file)
	if want := file + `:12: components[0].post[0]: "sh start.sh" runs start.sh, which is not in the component's files ./bin, where the commands run (the package has no scripts folder)`; err == nil || err.Error() != want {
		t.Errorf("a script without a scripts folder: %v\nwant %s", err, want)
	}
	writeFile(t, filepath.Join(dir, "bin/stop.sh"), "", 0o755)
	writeFile(t, filepath.Join(dir, "bin/start.sh"), "", 0o755)
	spec, err := ParseSpec(writeSpec(t, dir, baseSpec))
	if err != nil {
		t.Fatal(err)
	}
	if spec.Scripts != "" {
		t.Errorf("Scripts = %q, want none", spec.Scripts)
	}
	// A scripts field names another folder, where the commands' scripts
	// are looked for.
	writeFile(t, filepath.Join(dir, "tools/x.sh"), "", 0o755)
	file = writeSpec(t, dir, "scripts: tools\n"+baseSpec)
	_, err = ParseSpec(file)
	if want := file + `:12: components[0].pre[0]: "sh stop.sh" runs stop.sh, which is not in the package's scripts folder tools, where the commands run`; err == nil || err.Error() != want {
		t.Errorf("a script outside the named scripts folder: %v\nwant %s", err, want)
	}
	writeFile(t, filepath.Join(dir, "tools/stop.sh"), "", 0o755)
	writeFile(t, filepath.Join(dir, "tools/start.sh"), "", 0o755)
	spec, err = ParseSpec(writeSpec(t, dir, "scripts: tools\n"+baseSpec))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(spec.Scripts) != "tools" || !filepath.IsAbs(spec.Scripts) {
		t.Errorf("Scripts = %q, want the absolute tools folder", spec.Scripts)
	}
	// A default scripts folder that is a symlink out of the spec's folder.
	if err := os.Symlink("../outside", filepath.Join(dir, "scripts")); err != nil {
		t.Fatal(err)
	}
	_, err = ParseSpec(writeSpec(t, dir, baseSpec))
	if err == nil || !strings.Contains(err.Error(), "webstack.spk:1: scripts (default ./scripts): ./scripts: leaves the spec's folder") {
		t.Errorf("scripts symlinked out: %v", err)
	}
}

func TestParseSpecErrors(t *testing.T) {
	dir := specTree(t)
	writeFile(t, filepath.Join(dir, "plainfile"), "", 0o644)
	writeFile(t, filepath.Join(dir, "scripts/notes.sh"), "echo notes\n", 0o644)
	writeFile(t, filepath.Join(dir, "scripts/lib.d/common.sh"), "", 0o644)
	cases := []struct {
		name     string
		old, new string // replace old with new in baseSpec
		want     string // after "webstack.spk:"
	}{
		{"unknown field", "requires:", "requirez:", `3: requirez: unknown field`},
		{"unknown component field", "    pre:  ", "    prex: ", `11: components[0].prex: unknown field`},
		{"unknown files field", "{from: ./bin, to:", "{frm: ./bin, to:", `9: components[0].files.frm: unknown field`},
		{"repeated field", "version: 2.1.0\n", "version: 2.1.0\nname: again\n", `3: name: repeats the field of line 1`},
		{"missing field", "version: 2.1.0\n", "", `1: version: missing`},
		{"missing to", "{from: ./docs, to: opt/webstack/docs}", "{from: ./docs}", `15: components[1].files.to: missing`},
		{"missing component name", "  - name: docs\n    files:", "  - files:", `14: components[1].name: missing`},
		{"no components", baseSpec[strings.Index(baseSpec, "components:"):], "components: []\n", `7: components: 0 components, want 1 to 256`},
		{"wrong type", `requires: ["runtime >=1.0"]`, "requires: runtime", `3: requires: want a list, found "runtime"`},
		{"syntax", "version: 2.1.0", "version: 2.1.0: x", `2: mapping values are not allowed in this context`},
		{"bad requires", `["runtime >=1.0"]`, `["runtime >>1"]`, `3: requires[0]: requirement "runtime >>1": constraint ">>1"`},
		{"bad name", "name: webstack", "name: web stack", `1: name: name "web stack": use ASCII letters`},
		{"bad component name", "name: docs", "name: -docs", `14: components[1].name: component name "-docs": use ASCII letters`},
		{"duplicate component", "name: docs", "name: binaries", `14: components[1].name: "binaries" is a duplicate of line 8`},
		{"bad version", "version: 2.1.0", "version: two", `2: version: "two" is not a semantic version MAJOR.MINOR.PATCH (such as 1.0.0 or 2.1.0-rc.1)`},
		{"from missing", "./docs", "./nope", `15: components[1].files.from: ./nope: no such directory`},
		{"from a file", "./docs", "./plainfile", `15: components[1].files.from: ./plainfile: not a directory`},
		{"from outside", "./docs", "../outside", `15: components[1].files.from: ../outside: outside the spec's folder`},
		{"from absolute outside", "./docs", "/etc", `15: components[1].files.from: /etc: outside the spec's folder`},
		{"from through symlink", "./docs", "./out", `15: components[1].files.from: ./out: leaves the spec's folder ` + dir + ` through a symlink`},
		{"to absolute", "to: opt/webstack/docs", "to: /opt/webstack/docs", `15: components[1].files.to: /opt/webstack/docs: absolute path`},
		{"to dotdot", "to: opt/webstack/docs", "to: ../etc", `15: components[1].files.to: ../etc: path has a .. element`},
		{"to escaping", "to: opt/webstack/docs", "to: opt/../../etc", `15: components[1].files.to: opt/../../etc: path is not clean`},
		{"to dot", "to: opt/webstack/docs", "to: .", `15: components[1].files.to: .: empty path`},
		{"scripts missing", "name: webstack\n", "name: webstack\nscripts: ./nope\n", `2: scripts: ./nope: no such directory`},
		{"unknown kind", "- os: linux", "- kernel: 6.1", `5: prerequisites[0]: unknown prerequisite kind "kernel"`},
		{"two kinds", "[{arch: amd64}]", "[{arch: amd64, os: linux}]", `10: components[0].prerequisites[0]: want exactly one kind per item`},
		{"no kind", "  - os: linux\n", "  - {}\n", `5: prerequisites[0]: want exactly one kind per item`},
		{"prerequisite not a mapping", "  - os: linux\n", "  - linux\n", `5: prerequisites[0]: want a mapping, found "linux"`},
		{"unknown os", "os: linux", "os: linx", `5: prerequisites[0].os: "linx" is not a known operating system`},
		{"unknown arch", "{arch: amd64}", "{arch: x86}", `10: components[0].prerequisites[0].arch: "x86" is not a known architecture`},
		{"empty os", "os: linux", "os:", `5: prerequisites[0].os: want a value, found nothing`},
		{"bad size", "min: 100MiB", "min: 100 cats", `6: prerequisites[1].free_disk.min: "100 cats" is not a size with a unit`},
		{"size without unit", "min: 100MiB", "min: 100", `6: prerequisites[1].free_disk.min: "100" is not a size with a unit`},
		{"zero size", "min: 100MiB", "min: 0B", `6: prerequisites[1].free_disk.min: 0: must be more than 0`},
		{"free_disk without path", "{path: /, min: 100MiB}", "{min: 100MiB}", `6: prerequisites[1].free_disk.path: missing`},
		{"free_disk unknown field", "{path: /, min: 100MiB}", "{path: /, min: 100MiB, max: 1GiB}", `6: prerequisites[1].free_disk.max: unknown field`},
		{"free_disk relative dotdot", "{path: /, min: 100MiB}", "{path: ../x, min: 100MiB}", `6: prerequisites[1].free_disk.path: relative path "../x": path has a .. element`},
		{"bad sha256", "{file_exists: /etc/webstack/enable-docs}", "{file_sha256: {path: /etc/x, sha256: abc}}", `16: components[1].prerequisites[0].file_sha256.sha256: "abc" is not 64 hex digits`},
		{"bad timeout", "{arch: amd64}", `{command: {run: "true", timeout: fast}}`, `10: components[0].prerequisites[0].command.timeout: "fast" is not a duration`},
		{"negative timeout", "{arch: amd64}", `{command: {run: "true", timeout: -1s}}`, `10: components[0].prerequisites[0].command.timeout: -1s: want more than 0`},
		{"command without run", "{arch: amd64}", `{command: {timeout: 1s}}`, `10: components[0].prerequisites[0].command.run: missing`},
		{"bad agent_version", "{arch: amd64}", `{agent_version: ">>1"}`, `10: components[0].prerequisites[0].agent_version: ">>1" is not a version constraint`},
		{"env null value", "{arch: amd64}", `{env: {name: X, value: }}`, `10: components[0].prerequisites[0].env.value: want a value, found nothing`},
		{"env bad name", "{arch: amd64}", `{env: {name: "A=B"}}`, `10: components[0].prerequisites[0].env.name: "A=B": want a variable name`},
		{"empty action", `pre:  ["sh stop.sh"]`, `pre:  ["sh stop.sh", " "]`, `11: components[0].pre[1]: command " ": empty`},
		{"action not a list", `pre:  ["sh stop.sh"]`, `pre:  sh stop.sh`, `11: components[0].pre: want a list`},
		// A script the package does not hold: the commands run in its
		// scripts folder.
		{"script missing", `post: ["sh start.sh"]`, `post: ["systemctl start webstack", "sh health.sh"]`,
			`12: components[0].post[1]: "sh health.sh" runs health.sh, which is not in the package's scripts folder ./scripts, where the commands run`},
		{"script by the spec's path", `post: ["sh start.sh"]`, `post: ["sh scripts/start.sh"]`,
			`12: components[0].post[0]: "sh scripts/start.sh" runs scripts/start.sh, which is not in the package's scripts folder ./scripts, where the commands run; did you mean "sh start.sh"?`},
		{"script run directly", `undo: ["sh stop.sh"]`, `undo: ["./stop-now.sh --fast"]`,
			`13: components[0].undo[0]: "./stop-now.sh --fast" runs ./stop-now.sh, which is not in the package's scripts folder ./scripts, where the commands run`},
		{"script outside", `pre:  ["sh stop.sh"]`, `pre:  ["bash -e ../bin/webstack"]`,
			`11: components[0].pre[0]: "bash -e ../bin/webstack" runs ../bin/webstack, which is outside the package's scripts folder ./scripts, where the commands run`},
		{"script a folder", `pre:  ["sh stop.sh"]`, `pre:  ["sh lib.d/"]`,
			`11: components[0].pre[0]: "sh lib.d/" runs lib.d/, which is not a file in the package's scripts folder ./scripts, where the commands run`},
		{"script not executable", `pre:  ["sh stop.sh"]`, `pre:  ["./notes.sh"]`,
			`11: components[0].pre[0]: "./notes.sh" runs ./notes.sh directly, which is not executable (chmod +x ./notes.sh, or run it with sh)`},
		{"script after an operator", `post: ["sh start.sh"]`, `post: ["systemctl start webstack && python3 check.py >/dev/null 2>&1"]`,
			`12: components[0].post[0]: "systemctl start webstack && python3 check.py >/dev/null 2>&1" runs check.py, which is not in`},
		// The wording of every TED file's unknown field.
		{"unknown field near a known one", "requires:", "require:",
			`3: require: unknown field; did you mean requires? (known here: name, version, requires, scripts, prerequisites, components)`},
		{"unknown field far from any", "requires:", "colour:",
			`3: colour: unknown field (known here: name, version, requires, scripts, prerequisites, components)`},
		{"unknown component field near", "    pre:  ", "    post2: ",
			`11: components[0].post2: unknown field; did you mean post? (known here: name, files, prerequisites, pre, post, undo)`},
		// Versions are strict: what is written is what the revision says.
		{"version v1", "version: 2.1.0", "version: v1", `2: version: "v1" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`},
		{"version 1", "version: 2.1.0", "version: 1", `2: version: "1" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`},
		{"version 1.0", "version: 2.1.0", "version: 1.0", `2: version: "1.0" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`},
		{"name not ASCII", "name: webstack", "name: café", `1: name: name "café": use ASCII letters a-z A-Z, digits and . _ + - (starting with a letter or digit)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := strings.Replace(baseSpec, c.old, c.new, 1)
			if text == baseSpec {
				t.Fatalf("%q is not in the base spec", c.old)
			}
			file := writeSpec(t, dir, text)
			_, err := ParseSpec(file)
			if err == nil {
				t.Fatalf("no error; want %q", c.want)
			}
			var se *SpecError
			if !errors.As(err, &se) {
				t.Errorf("error %v is not a *SpecError", err)
			}
			if !strings.HasPrefix(err.Error(), file+":"+c.want) {
				t.Errorf("error\n%v\nwant it to start\n%s:%s", err, file, c.want)
			}
		})
	}
}

func TestParseSpecFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ParseSpec(filepath.Join(dir, "none.spk")); err == nil || !strings.Contains(err.Error(), "none.spk") {
		t.Errorf("missing file: %v", err)
	}
	file := writeSpec(t, dir, "# nothing\n")
	if _, err := ParseSpec(file); err == nil || err.Error() != file+": empty spec" {
		t.Errorf("empty file: %v", err)
	}
	file = writeSpec(t, dir, "name: a\n---\nname: b\n")
	if _, err := ParseSpec(file); err == nil || err.Error() != file+":2: more than one YAML document" {
		t.Errorf("two documents: %v", err)
	}
	file = writeSpec(t, dir, "- a\n")
	if _, err := ParseSpec(file); err == nil || err.Error() != file+":1: want a mapping, found a list" {
		t.Errorf("a list: %v", err)
	}
}

func TestParseSpecAliases(t *testing.T) {
	dir := specTree(t)
	text := `name: webstack
version: "2.1.0"
prerequisites: &common
  - os: linux
components:
  - name: binaries
    files: {from: ./bin, to: &to opt/webstack}
    prerequisites: *common
  - name: docs
    files: {from: ./docs, to: *to}
`
	spec, err := ParseSpec(writeSpec(t, dir, text))
	if err != nil {
		t.Fatal(err)
	}
	if spec.Version != "2.1.0" {
		t.Errorf("Version = %q, want 2.1.0", spec.Version)
	}
	want := []Prerequisite{{Kind: "os", Value: "linux"}}
	if !reflect.DeepEqual(spec.Prerequisites, want) || !reflect.DeepEqual(spec.Components[0].Prerequisites, want) {
		t.Errorf("prerequisites %+v, %+v", spec.Prerequisites, spec.Components[0].Prerequisites)
	}
	if spec.Components[1].To != "opt/webstack" {
		t.Errorf("docs to %q", spec.Components[1].To)
	}
}
