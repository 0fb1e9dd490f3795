package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"ted/transport"
	"testing"
	"time"

	"ted/docs"
	"ted/pki"
	"ted/schedule"
	"ted/swpkg"
)

// writeExample writes `ted config example KIND`'s output into dir under
// name, as a reader would redirect it.
func writeExample(t *testing.T, dir, kind, name string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := newRootCommand()
	cmd.SetArgs([]string{"config", "example", kind})
	cmd.SetOut(&out)
	if err := cmd.Execute(); err != nil {
		t.Fatalf("config example %s: %v", kind, err)
	}
	if !strings.HasPrefix(out.String(), "# ") {
		t.Errorf("config example %s does not start with a comment: %.60q", kind, out.String())
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestConfigExamplesAreValid loads every example, as printed, with the
// loader the daemon or command uses, and checks it with config check.
func TestConfigExamplesAreValid(t *testing.T) {
	dir := t.TempDir()
	// A package spec needs the folders it names.
	for _, d := range []string{"bin", "conf", "scripts"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "scripts", "health.sh"), []byte("exit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, kind := range docs.Kinds {
		files[kind] = writeExample(t, dir, kind, "ex-"+docs.ExampleFile(kind))
	}
	if _, err := loadDistributorConfig(files["distributor"]); err != nil {
		t.Errorf("distributor example: %v", err)
	}
	if _, err := loadSubscriberConfig(files["subscriber"]); err != nil {
		t.Errorf("subscriber example: %v", err)
	}
	if _, err := loadPublisherConfig(files["publisher"]); err != nil {
		t.Errorf("publisher example: %v", err)
	}
	if f, err := schedule.Load(files["schedules"]); err != nil {
		t.Errorf("schedules example: %v", err)
	} else if len(f.Names()) == 0 {
		t.Error("the schedules example defines no schedule")
	}
	if _, err := swpkg.ParseSpec(files["package"]); err != nil {
		t.Errorf("package example: %v", err)
	}
	for _, kind := range docs.Kinds {
		var out, errOut bytes.Buffer
		err := runConfigCheck(configCheckOptions{}, []string{files[kind]}, true, &out, &errOut)
		if err != nil {
			t.Errorf("config check of the %s example: %v", kind, err)
			continue
		}
		var res configCheckResult
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatal(err)
		}
		if len(res.Files) != 1 || res.Files[0].Kind != kind || !res.Files[0].Valid {
			t.Errorf("config check --json of the %s example: %s", kind, out.String())
		}
	}
}

func TestConfigExampleUnknownKind(t *testing.T) {
	cmd := newRootCommand()
	cmd.SetArgs([]string{"config", "example", "proxy"})
	cmd.SetOut(&bytes.Buffer{})
	err := cmd.Execute()
	if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "distributor, subscriber, publisher, schedules, package") {
		t.Errorf("config example proxy: exit %d, %v; want exit 2 listing the kinds", exitCode(err), err)
	}
	cmd = newRootCommand()
	cmd.SetArgs([]string{"config", "example"})
	cmd.SetOut(&bytes.Buffer{})
	err = cmd.Execute()
	if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "distributor, subscriber, publisher, schedules, package") {
		t.Errorf("config example: exit %d, %v; want exit 2 listing the kinds", exitCode(err), err)
	}
}

// TestConfigCheckReportsEveryProblem: every problem of a file, one a line,
// FILE:LINE: FIELD: message, in line order, exit 2; one per field.
func TestConfigCheckReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "dist-1.yaml")
	bad := `name: dist 1
listen: 127.0.0.1:99999
data_dir: var/d
tls: {ca: a, cert: b}
trust: [k]
keep_revisions: zero
min_free_disk: 10
channels:
  web:
    publishers: [pub-1]
    chidlren: [web-01]
    send: nights
link:
  keepalive: 1m
`
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := runConfigCheck(configCheckOptions{}, []string{file}, false, &out, &bytes.Buffer{})
	if exitCode(err) != exitUsage {
		t.Fatalf("exit %d (%v), want 2", exitCode(err), err)
	}
	want := []string{
		`:1: name: invalid node name "dist 1"`,
		`:2: listen: "127.0.0.1:99999": the port must be a number from 0 to 65535`,
		`:4: tls.key: missing`,
		`:6: keep_revisions: "zero" is not a whole number`,
		`:7: min_free_disk: "10" is not a size with a unit`,
		`:11: channels.web.chidlren: unknown field; did you mean children? (known here: send, publishers, children, waves)`,
		`:12: channels.web.send: no schedule file: schedule "nights": unknown schedule`,
		`:14: link.keepalive: 1m0s must be shorter than the idle timeout 30s`,
	}
	if err.Error() != "1 of 1 files are not valid" {
		t.Errorf("error %q, want a count of the files not valid", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d problems, want %d:\n%s", len(lines), len(want), &out)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], file+w) {
			t.Errorf("problem %d: %q, want %q", i+1, lines[i], file+w)
		}
	}
}

func TestConfigCheckKinds(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return file
	}
	sched := write("s.yaml", "schedules:\n  x:\n    cron: \"0 1 * * *\"\n")
	weird := write("w.yaml", "colour: blue\n")
	var out bytes.Buffer
	err := runConfigCheck(configCheckOptions{}, []string{sched, weird}, false, &out, &bytes.Buffer{})
	if exitCode(err) != exitUsage {
		t.Fatalf("exit %d (%v), want 2", exitCode(err), err)
	}
	for _, w := range []string{
		sched + `:3: schedules.x.cron: unknown field (known here: windows, blackouts, timezone, jitter, max_rate, always, never)`,
		weird + `: cannot tell what kind of file this is; say --kind distributor|subscriber|publisher|schedules|package`,
	} {
		if !strings.Contains(out.String(), w+"\n") {
			t.Errorf("config check said:\n%s\nwant a line %q", &out, w)
		}
	}
	// --kind overrides the guess: as a subscriber config, w.yaml lacks
	// what a subscriber needs and has an unknown field.
	out.Reset()
	err = runConfigCheck(configCheckOptions{kind: "subscriber"}, []string{weird}, false, &out, &bytes.Buffer{})
	if err == nil || !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(weird)+`:1: colour: unknown field \(known here: name, data_dir`).MatchString(out.String()) {
		t.Errorf("config check --kind subscriber: %v\n%s", err, &out)
	}
	// A publisher's sign_key that is the public half is caught before
	// the daemon starts.
	if _, err := pki.GenerateSigningKey(filepath.Join(dir, "publisher.key"), false); err != nil {
		t.Fatal(err)
	}
	example, err := docs.Example("publisher")
	if err != nil {
		t.Fatal(err)
	}
	pub := write("p.yaml", strings.Replace(string(example), "sign_key: pki/publisher.key", "sign_key: publisher.key.pub", 1))
	out.Reset()
	_ = runConfigCheck(configCheckOptions{}, []string{pub}, false, &out, &bytes.Buffer{})
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(pub) + `:\d+: sign_key: .*publisher.key.pub is a public key; sign_key wants the private signing key`).MatchString(out.String()) {
		t.Errorf("a public sign_key: config check said:\n%s", &out)
	}
	// A key given twice is reported, not a reason not to tell the kind.
	twice := write("t.yaml", "schedules:\n  x: {always: true}\nschedules: {}\n")
	out.Reset()
	_ = runConfigCheck(configCheckOptions{}, []string{twice}, false, &out, &bytes.Buffer{})
	if !strings.Contains(out.String(), twice+":3: schedules: repeats the field of line 1") {
		t.Errorf("a repeated key: config check said:\n%s", &out)
	}
	if err := runConfigCheck(configCheckOptions{kind: "proxy"}, []string{weird}, false, &out, &bytes.Buffer{}); exitCode(err) != exitUsage {
		t.Errorf("--kind proxy: %v, want exit 2", err)
	}
}

// What one problem must not hide, and what the check must not let through:
// a cluster address without a host (each node would gossip alone), and a
// publisher distribution's channel names behind a bad version.
func TestConfigCheckClusterHostAndPublisherMetadata(t *testing.T) {
	dir := t.TempDir()
	example := func(kind string) string {
		data, err := docs.Example(kind)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	sub := filepath.Join(dir, "web-01a.yaml")
	text := strings.Replace(example("subscriber"), "#cluster:\n#  name: web-cluster\n#  node: web-01a\n", "cluster:\n  name: web-cluster\n  node: web-01a\n  bind: :7946\n  join: [\"10.0.0.12:7946\", \":7947\"]\n  secret_file: cluster.key\n  shared_dir: /mnt/shared\n", 1)
	if !strings.Contains(text, "bind: :7946") {
		t.Fatal("the subscriber example no longer has its commented cluster block")
	}
	pub := filepath.Join(dir, "pub-1.yaml")
	ptext := strings.Replace(example("publisher"), "channels: [web]", `channels: ["bad channel!"]`, 1)
	ptext = strings.Replace(ptext, "version: 1.0.0", "version: 1.4", 1)
	for file, text := range map[string]string{sub: text, pub: ptext} {
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	err := runConfigCheck(configCheckOptions{}, []string{sub, pub}, false, &out, &bytes.Buffer{})
	if exitCode(err) != exitUsage {
		t.Fatalf("exit %d (%v), want 2", exitCode(err), err)
	}
	for _, want := range []string{
		`: cluster.bind: ":7946": name the host (an address the other nodes reach)`,
		`: cluster.join[1]: ":7947": name the host (an address the other nodes reach)`,
		`.version: "1.4" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.4.0"?`,
		`channel "bad channel!": use ASCII letters`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("config check said:\n%s\nwant %q", &out, want)
		}
	}
	if strings.Contains(out.String(), "cluster.join[0]") {
		t.Errorf("a join address with a host was refused:\n%s", &out)
	}
}

// The files a config names that are there are read as the daemon reads
// them: a name that is not the certificate's, a certificate of another
// role, a certificate given as a trusted key and a short cluster secret
// are problems before anything starts.
func TestConfigCheckReadsNamedFiles(t *testing.T) {
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	if _, err := pki.InitCA(pkiDir, false); err != nil {
		t.Fatal(err)
	}
	for name, role := range map[string]pki.Role{"web-01": pki.RoleSubscriber, "dist-1": pki.RoleDistributor} {
		if _, err := pki.Issue(pkiDir, name, role, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pki.GenerateSigningKey(filepath.Join(pkiDir, "publisher.key"), false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cluster.key"), []byte("c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	example, err := docs.Example("subscriber")
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "web-01.yaml")
	if err := os.WriteFile(good, example, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runConfigCheck(configCheckOptions{}, []string{good}, false, &out, &bytes.Buffer{}); err != nil {
		t.Fatalf("the example with its files: %v\n%s", err, &out)
	}
	for _, tt := range []struct{ name, from, to, want string }{
		{"name", "name: web-01", "name: web-09", `: name: "web-09" does not match the certificate`},
		{"role", "cert: pki/web-01.crt\n  key: pki/web-01.key", "cert: pki/dist-1.crt\n  key: pki/dist-1.key", `pki/dist-1.crt: role distributor, this daemon needs subscriber`},
		{"trust", "trust: [pki/publisher.key.pub]", "trust: [pki/ca.crt]", `pki/ca.crt: PEM block is "CERTIFICATE", want "PUBLIC KEY"`},
		{"secret", "#cluster:\n#  name: web-cluster\n#  node: web-01a\n", "cluster:\n  name: web-cluster\n  node: web-01a\n  bind: 10.0.0.11:7946\n  secret_file: cluster.key\n  shared_dir: /mnt/shared\n", `cluster.key: a key of 5 bytes, want 16, 24 or 32`},
	} {
		text := strings.Replace(string(example), tt.from, tt.to, 1)
		if text == string(example) {
			t.Fatalf("%s: the example no longer has %q", tt.name, tt.from)
		}
		file := filepath.Join(dir, tt.name+".yaml")
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out.Reset()
		err := runConfigCheck(configCheckOptions{}, []string{file}, false, &out, &bytes.Buffer{})
		field := map[string]string{"name": "name", "role": "tls", "trust": "trust[0]", "secret": "cluster.secret_file"}[tt.name]
		if exitCode(err) != exitUsage || !strings.Contains(out.String(), ": "+field+": ") || !strings.Contains(out.String(), tt.want) {
			t.Errorf("%s: exit %d, said:\n%s\nwant %q", tt.name, exitCode(err), &out, tt.want)
		}
	}
}

// A relative root, in a config named by a relative path, is made absolute:
// actions see it (TED_TARGET) from inside the target.
func TestSubscriberRootIsAbsolute(t *testing.T) {
	dir := t.TempDir()
	writeExample(t, dir, "subscriber", "web-01.yaml")
	t.Chdir(dir)
	f, err := loadSubscriberConfig("web-01.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "srv", "web-01"); f.Root != want {
		t.Errorf("root %q, want %q", f.Root, want)
	}
}

// TestConfigCheckShortIdleTimeout: an idle timeout with no keepalive set
// takes half of it as its keepalive when that is shorter than the
// default, rather than being refused for a keepalive nobody wrote.
func TestConfigCheckShortIdleTimeout(t *testing.T) {
	example, err := docs.Example("subscriber")
	if err != nil {
		t.Fatal(err)
	}
	for _, idle := range []string{"12s", "4s"} {
		file := filepath.Join(t.TempDir(), "s.yaml")
		if err := os.WriteFile(file, append(example, []byte("link:\n  idle_timeout: "+idle+"\n")...), 0o644); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		_ = runConfigCheck(configCheckOptions{}, []string{file}, false, &out, &bytes.Buffer{})
		if strings.Contains(out.String(), "link.") {
			t.Errorf("idle_timeout %s alone: config check said:\n%s", idle, &out)
		}
		// And the daemon takes it as the check did: what it runs with
		// validates.
		d, _ := time.ParseDuration(idle)
		q, parents := transport.DefaultQUICConfig(), transport.DefaultParentsConfig()
		(&linkFile{IdleTimeout: d}).apply(&q, &parents)
		if err := q.Validate(); err != nil {
			t.Errorf("idle_timeout %s alone: the daemon's QUIC config: %v", idle, err)
		}
	}
}

// The agent block: its channel is required, its upgrade policy one of
// always, never or a schedule's name, and a distributor must carry its
// channel.
func TestConfigCheckAgent(t *testing.T) {
	for _, tc := range []struct {
		kind, add, want string
	}{
		{"subscriber", "agent:\n  channel: agents\n", ""},
		{"subscriber", "agent:\n  upgrade: always\n", "agent.channel"},
		{"subscriber", "agent:\n  channel: agents\n  upgrade: \"at night\"\n", "agent.upgrade"},
		{"subscriber", "agent:\n  channel: agents\n  probation: -1s\n", "agent.probation"},
		{"distributor", "agent:\n  channel: agents\n", "agent.channel"},
	} {
		example, err := docs.Example(tc.kind)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(file, append(example, []byte(tc.add)...), 0o644); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		_ = runConfigCheck(configCheckOptions{}, []string{file}, false, &out, &bytes.Buffer{})
		got := out.String()
		if tc.want == "" && strings.Contains(got, "agent") || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s with %q: config check said:\n%s", tc.kind, tc.add, got)
		}
	}
}

// A subscriber takes its agent channel beside its channels, at start and
// at every reload (both read channelsWithAgent).
func TestChannelsWithAgent(t *testing.T) {
	f := &subscriberFile{Channels: []string{"web"}}
	if got := f.channelsWithAgent(); !slices.Equal(got, []string{"web"}) {
		t.Errorf("no agent block: %v", got)
	}
	f.Agent = &agentFile{Channel: "agents"}
	if got := f.channelsWithAgent(); !slices.Equal(got, []string{"web", "agents"}) || !slices.Equal(f.Channels, []string{"web"}) {
		t.Errorf("with an agent block: %v (channels %v)", got, f.Channels)
	}
	f.Agent.Channel = "web"
	if got := f.channelsWithAgent(); !slices.Equal(got, []string{"web"}) {
		t.Errorf("the agent channel among the channels: %v", got)
	}
}

// A channel's waves: a first wave as a share or a pattern.
func TestConfigCheckWaves(t *testing.T) {
	example, err := docs.Example("distributor")
	if err != nil {
		t.Fatal(err)
	}
	base := strings.Replace(string(example), "    #send: nights\n", "    #send: nights\n    waves: WAVES\n", 1)
	for waves, want := range map[string]string{
		`{canary: "10%", soak: 30m}`: "",
		`{canary: "web-0*"}`:         "",
		`{canary: "150%"}`:           "channels.web.waves.canary",
		`{canary: ""}`:               "channels.web.waves.canary",
		`{canary: "5%", soak: -1m}`:  "channels.web.waves.soak",
	} {
		file := filepath.Join(t.TempDir(), "d.yaml")
		if err := os.WriteFile(file, []byte(strings.Replace(base, "WAVES", waves, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		_ = runConfigCheck(configCheckOptions{}, []string{file}, false, &out, &bytes.Buffer{})
		got := out.String()
		if want == "" && strings.Contains(got, "waves") || want != "" && !strings.Contains(got, want) {
			t.Errorf("waves %s: config check said:\n%s", waves, got)
		}
	}
}
