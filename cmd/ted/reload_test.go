package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ted/docs"
	"ted/pki"
	"ted/transport"
)

// TestConfigCheckMembers: children and publishers take names, group:NAME
// and patterns; each bad entry is one problem naming its field and line,
// and tls.crl is checked against the CA.
func TestConfigCheckMembers(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.InitCA(filepath.Join(dir, "pki"), false); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other")
	if _, err := pki.InitCA(other, false); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Revoke(nil); err != nil {
		t.Fatal(err)
	}
	example, err := docs.Example("distributor")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(example), "children: [dist-2, web-01, web-02]",
		`children: [dist-2, "group:", "*", "web/*", "dist-*", dist-2, group:web, "app-?"]`, 1)
	text = strings.Replace(text, "publishers: [pub-1]", "publishers: [group:publishers, pub-*]", 1)
	file := filepath.Join(dir, "dist-1.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = runConfigCheck(configCheckOptions{}, []string{file}, false, &out, &bytes.Buffer{})
	if exitCode(err) != exitUsage {
		t.Fatalf("exit %d (%v), want 2:\n%s", exitCode(err), err, &out)
	}
	for _, want := range []string{
		`: channels.web.children[1]: "group:": invalid group "": must be 1 to 64 characters`,
		`: channels.web.children[2]: pattern "*" matches every certificate`,
		`: channels.web.children[3]: pattern "web/*": use ASCII letters`,
		`: channels.web.children[4]: pattern "dist-*" matches this node's own name dist-1`,
		`: channels.web.children[5]: dist-2 is listed twice`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("config check said:\n%s\nwant a line with %q", &out, want)
		}
	}
	if n := strings.Count(strings.TrimSpace(out.String()), "\n") + 1; n != 5 {
		t.Errorf("%d problems, want 5:\n%s", n, &out)
	}
	// Every line names the file and the line of the field.
	for line := range strings.SplitSeq(strings.TrimSpace(out.String()), "\n") {
		if !strings.HasPrefix(line, file+":") || strings.HasPrefix(line, file+": ") {
			t.Errorf("%q does not name the file and a line", line)
		}
	}

	// The files it names are read once the file itself is valid: a list
	// of another CA is refused, as the daemon would at start.
	text = strings.Replace(string(example), "#crl: pki/revoked.crl", "crl: other/revoked.crl", 1)
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = runConfigCheck(configCheckOptions{}, []string{file}, false, &out, &bytes.Buffer{})
	want := `: tls.crl: ` + filepath.Join(other, "revoked.crl") + `: revocation list not signed by our CA`
	if exitCode(err) != exitUsage || !strings.Contains(out.String(), want) {
		t.Errorf("config check of a list of another CA: exit %d, said:\n%s\nwant a line with %q", exitCode(err), &out, want)
	}
	// A list that is not there (yet) is a note, like a certificate.
	text = strings.Replace(string(example), "#crl: pki/revoked.crl", "crl: pki/revoked.crl", 1)
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	var notes bytes.Buffer
	err = runConfigCheck(configCheckOptions{}, []string{file}, false, &out, &notes)
	if err != nil || !strings.Contains(notes.String(), "note: tls.crl: "+filepath.Join(dir, "pki", "revoked.crl")+" does not exist (yet)") {
		t.Errorf("config check of a list not there: %v\n%s%s", err, &out, &notes)
	}
}

// logBuffer is a log that tests read while daemons write it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func waitLog(t *testing.T, b *logBuffer, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for line := range strings.SplitSeq(b.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in:\n%s", parts, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reloadFixture makes a CA with a first, empty revocation list, a config
// file holding text, and a revocation keeper of the CA, for the reloader
// tests.
func reloadFixture(t *testing.T, text string) (ca *pki.CA, first *pki.Revocations, config string, keeper *transport.RevocationKeeper) {
	t.Helper()
	dir := t.TempDir()
	caDir := filepath.Join(dir, "pki")
	if _, err := pki.InitCA(caDir, false); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	if first, err = ca.Revoke(nil); err != nil {
		t.Fatal(err)
	}
	config = filepath.Join(dir, "d.yaml")
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return ca, first, config, transport.NewRevocationKeeper([]*x509.Certificate{ca.Cert}, "", nil)
}

// TestConfigReloader: a bad file changes nothing; a good one is applied
// and logged with its changes and the keys that take a restart; a change
// of the file or of the revocation list is seen by the watcher.
func TestConfigReloader(t *testing.T) {
	ca, first, config, keeper := reloadFixture(t, "one")
	var logs logBuffer
	var mu sync.Mutex
	var applied []string
	r := &configReloader{path: config, log: slog.New(slog.NewTextHandler(&logs, nil)), keeper: keeper,
		load: func() (*liveReload, error) {
			data, err := os.ReadFile(config)
			if err != nil {
				return nil, err
			}
			if string(data) == "bad config" {
				return nil, errors.New("d.yaml:1: channels: none")
			}
			return &liveReload{crl: ca.CRLPath(), revocations: first, restart: []string{"listen"}, apply: func() ([]string, error) {
				mu.Lock()
				defer mu.Unlock()
				applied = append(applied, string(data))
				return []string{"channels.web.children: [" + string(data) + "]"}, nil
			}}, nil
		}}

	r.reload("SIGHUP")
	waitLog(t, &logs, "config reloaded", "why=SIGHUP", "channels.web.children: [one]", "tls.crl: "+ca.CRLPath(), "revocation list "+first.Number.String())
	waitLog(t, &logs, "config keys changed that take a restart", "listen")
	if keeper.Current() != first {
		t.Error("the list of the reloaded file is not in force")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	watch := newFileWatch(r) // from here on, a change is seen
	go func() {
		defer close(done)
		watch.run(ctx, 5*time.Millisecond)
	}()
	defer func() {
		cancel()
		<-done
	}()
	// mtime granularity: a different size is a change whatever the clock.
	// Each edit through a rename, as an editor saves: never half a file.
	edit := func(text string) {
		t.Helper()
		if err := os.WriteFile(config+".new", []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(config+".new", config); err != nil {
			t.Fatal(err)
		}
	}
	edit("bad config")
	waitLog(t, &logs, "config not reloaded; the running config stays", `why="config file changed"`, "channels: none")
	edit("three")
	waitLog(t, &logs, "config reloaded", "channels.web.children: [three]")
	mu.Lock()
	if len(applied) != 2 || applied[1] != "three" {
		t.Errorf("applied %q, want one and three: never the bad file", applied)
	}
	mu.Unlock()

	// The list file changes: the newer list comes into force.
	second, err := ca.Revoke([]string{"1f"})
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, &logs, "revocation list reloaded", "number="+second.Number.String())
	if keeper.Current().Number.Cmp(second.Number) != 0 {
		t.Errorf("in force: list %v, want %v", keeper.Current().Number, second.Number)
	}
	if err := os.WriteFile(ca.CRLPath(), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitLog(t, &logs, "revocation list not reloaded; the list in force stays")
	if keeper.Current().Number.Cmp(second.Number) != 0 {
		t.Error("a bad list file replaced the list in force")
	}
}

// TestCRLWithBadConfigEditInOneTick: a bad config edit and a new
// revocation list seen in the same look: the reload fails, and the list
// is loaded all the same.
func TestCRLWithBadConfigEditInOneTick(t *testing.T) {
	ca, first, config, keeper := reloadFixture(t, "good")
	keeper.Update(first)
	var logs logBuffer
	r := &configReloader{path: config, log: slog.New(slog.NewTextHandler(&logs, nil)), keeper: keeper, crl: ca.CRLPath(),
		load: func() (*liveReload, error) {
			data, err := os.ReadFile(config)
			if err != nil {
				return nil, err
			}
			if string(data) != "good" {
				return nil, errors.New("d.yaml:1: channels: none")
			}
			list, err := pki.LoadRevocations(ca.CRLPath(), []*x509.Certificate{ca.Cert})
			if err != nil {
				return nil, err
			}
			return &liveReload{crl: ca.CRLPath(), revocations: list, apply: func() ([]string, error) { return nil, nil }}, nil
		}}
	watch := newFileWatch(r)
	// A different size is a change whatever the clock's granularity.
	if err := os.WriteFile(config, []byte("bad config"), 0o644); err != nil {
		t.Fatal(err)
	}
	second, err := ca.Revoke([]string{"1f"})
	if err != nil {
		t.Fatal(err)
	}
	watch.look()
	if !strings.Contains(logs.String(), "config not reloaded; the running config stays") {
		t.Errorf("the bad edit was not reported:\n%s", logs.String())
	}
	if cur := keeper.Current(); cur.Number.Cmp(second.Number) != 0 {
		t.Errorf("in force after the look: list %v, want %v (written with the bad edit)", cur.Number, second.Number)
	}
	// Both files are seen as they are now: nothing more to do.
	watch.look()
	if n := strings.Count(logs.String(), "config not reloaded"); n != 1 {
		t.Errorf("the bad edit was reloaded %d times, want once", n)
	}
}
