package integration

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"ted/distribution"
	"ted/store"
)

type buildResult struct {
	Name      string `json:"name"`
	Revision  uint64 `json:"revision"`
	Version   string `json:"version"`
	Files     int    `json:"files"`
	Bytes     int64  `json:"bytes"`
	Chunks    int    `json:"chunks"`
	NewChunks int    `json:"new_chunks"`
	Unchanged bool   `json:"unchanged"`
	Skipped   []struct {
		Path   string `json:"path"`
		Reason string `json:"reason"`
	} `json:"skipped"`
	Pruned []uint64 `json:"pruned"`
}

type listResult struct {
	Distributions []struct {
		Name      string `json:"name"`
		Revisions []struct {
			Revision uint64   `json:"revision"`
			Version  string   `json:"version"`
			Channels []string `json:"channels"`
			Files    int      `json:"files"`
			Bytes    int64    `json:"bytes"`
		} `json:"revisions"`
	} `json:"distributions"`
}

type verifyResult struct {
	Verified []struct {
		Name     string `json:"name"`
		Revision uint64 `json:"revision"`
	} `json:"verified"`
	Failures []struct {
		Name     string `json:"name"`
		Revision uint64 `json:"revision"`
		Path     string `json:"path"`
		Chunk    string `json:"chunk"`
		Error    string `json:"error"`
	} `json:"failures"`
}

// fixture is a signing key, a source tree and a store path.
type fixture struct {
	dir, key, pub, src, store string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: dir, key: filepath.Join(dir, "publisher.key"), src: filepath.Join(dir, "src"), store: filepath.Join(dir, "store")}
	f.pub = f.key + ".pub"
	mustTed(t, "pki", "signing-key", "--out", f.key)
	big := make([]byte, 3<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(f.src, "bin/server"), big, 0o755)
	writeFile(t, filepath.Join(f.src, "etc/server.conf"), []byte("port = 80\n"), 0o640)
	writeFile(t, filepath.Join(f.src, "share/doc/README"), bytes.Repeat([]byte("documentation\n"), 5000), 0o644)
	if err := os.Symlink("bin/server", filepath.Join(f.src, "current")); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) build(t *testing.T, version string, extra ...string) buildResult {
	t.Helper()
	var res buildResult
	args := append([]string{"dist", "build", "--store", f.store, "--name", "app", "--from", f.src,
		"--version", version, "--channel", "web", "--sign-key", f.key}, extra...)
	tedJSON(t, &res, args...)
	return res
}

// openRevision opens the fixture's store in this process (no ted may run
// on it meanwhile) and returns it with the signed manifest of app@rev.
func (f *fixture) openRevision(t *testing.T, rev uint64) (*store.Badger, *distribution.Signed) {
	t.Helper()
	st, err := store.Open(f.store, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := st.Signed("app", rev)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	return st, signed
}

func listing(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		line := rel + " " + info.Mode().String()
		if info.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			line += " -> " + target
		} else if info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			line += " " + distribution.SumChunk(b).Short()
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestBuildListShowVerifyExtract(t *testing.T) {
	f := newFixture(t)
	first := f.build(t, "1.0.0")
	if first.Revision != 1 || first.Unchanged || first.Files != 3 || first.NewChunks == 0 || first.NewChunks > first.Chunks {
		t.Fatalf("first build: %+v", first)
	}

	again := f.build(t, "1.0.0")
	if !again.Unchanged || again.Revision != 1 || again.NewChunks != 0 {
		t.Fatalf("unchanged rebuild: %+v", again)
	}

	// A one-byte change in the 3 MiB binary stores a few chunks: usually
	// one or two, a few more when the changed boundary takes a few chunks
	// to fall back in step (content-defined chunking skips min-size spans,
	// so on random data that happens in some runs). Never more than 5 % of
	// the chunks.
	bin := filepath.Join(f.src, "bin/server")
	b, _ := os.ReadFile(bin)
	b[len(b)/2] ^= 1
	writeFile(t, bin, b, 0o755)
	second := f.build(t, "1.0.1")
	if second.Revision != 2 || second.Unchanged || second.NewChunks < 1 || second.NewChunks > second.Chunks/20 {
		t.Fatalf("one-byte change: %+v", second)
	}

	var list listResult
	tedJSON(t, &list, "dist", "list", "--store", f.store)
	if len(list.Distributions) != 1 || list.Distributions[0].Name != "app" || len(list.Distributions[0].Revisions) != 2 {
		t.Fatalf("list: %+v", list)
	}
	if r := list.Distributions[0].Revisions[1]; r.Revision != 2 || r.Version != "1.0.1" || r.Files != 3 || r.Channels[0] != "web" {
		t.Fatalf("list revision 2: %+v", r)
	}

	var show struct {
		Name     string `json:"name"`
		Revision uint64 `json:"revision"`
		Target   string `json:"target"`
		Entries  []struct {
			Path   string `json:"path"`
			Type   string `json:"type"`
			Target string `json:"target"`
		} `json:"entries"`
	}
	tedJSON(t, &show, "dist", "show", "--store", f.store, "app@1")
	if show.Revision != 1 || show.Target != "app" || len(show.Entries) != 8 {
		t.Fatalf("show app@1: %+v", show)
	}

	var verify verifyResult
	tedJSON(t, &verify, "dist", "verify", "--store", f.store, "--trust", f.pub)
	if len(verify.Verified) != 2 || len(verify.Failures) != 0 {
		t.Fatalf("verify: %+v", verify)
	}

	out := filepath.Join(f.dir, "out")
	mustTed(t, "dist", "extract", "--store", f.store, "app", "--to", out, "--trust", f.pub)
	if got, want := listing(t, out), listing(t, f.src); got != want {
		t.Fatalf("extracted tree differs:\n%s\nwant\n%s", got, want)
	}

	// Not found is exit 4 and names what was asked for.
	if r := ted(t, "dist", "show", "--store", f.store, "app@9"); r.code != 4 || !strings.Contains(r.stderr, "app@9") {
		t.Fatalf("show app@9: %s", r)
	}
	if r := ted(t, "dist", "show", "--store", f.store, "nope"); r.code != 4 || !strings.Contains(r.stderr, "nope") {
		t.Fatalf("show nope: %s", r)
	}
}

func TestRetentionKeepsNewest(t *testing.T) {
	f := newFixture(t)
	for i := range 5 {
		writeFile(t, filepath.Join(f.src, "rev.txt"), []byte{byte('0' + i)}, 0o644)
		f.build(t, "1.0."+string(rune('0'+i)), "--keep", "2")
	}
	var list listResult
	tedJSON(t, &list, "dist", "list", "--store", f.store)
	revs := list.Distributions[0].Revisions
	if len(revs) != 2 || revs[0].Revision != 4 || revs[1].Revision != 5 {
		t.Fatalf("after 5 builds with --keep 2: %+v", revs)
	}
	// The kept revisions are whole.
	var verify verifyResult
	tedJSON(t, &verify, "dist", "verify", "--store", f.store, "--trust", f.pub)
	if len(verify.Verified) != 2 || len(verify.Failures) != 0 {
		t.Fatalf("verify after pruning: %+v", verify)
	}
}

func TestVerifyFindsTamperedChunk(t *testing.T) {
	f := newFixture(t)
	f.build(t, "1.0.0")

	// Flip a byte of a stored chunk of bin/server on disk, as a bad disk
	// would.
	st, signed := f.openRevision(t, 1)
	m, err := signed.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var victim distribution.ChunkID
	var needle []byte
	for _, e := range m.Entries {
		if e.Path == "bin/server" {
			victim = e.Chunks[1].ID
			enc, err := st.Chunk(victim)
			if err != nil {
				t.Fatal(err)
			}
			needle = enc[len(enc)/2 : len(enc)/2+64]
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// Wherever the store keeps chunk bytes (pack files today), flip one.
	flipped := false
	err = filepath.WalkDir(f.store, func(name string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		if i := bytes.Index(b, needle); i >= 0 {
			b[i] ^= 0xff
			flipped = true
			return os.WriteFile(name, b, 0o600)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !flipped {
		t.Fatalf("chunk %s not found in the files of %s", victim.Short(), f.store)
	}

	r := ted(t, "dist", "verify", "--store", f.store, "--trust", f.pub)
	if r.code != 3 {
		t.Fatalf("verify of a tampered chunk: %s", r)
	}
	for _, want := range []string{"app@1", "bin/server", victim.String()} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("verify output does not name %s: %s", want, r)
		}
	}
	// Extraction refuses it too, and writes no half file.
	out := filepath.Join(f.dir, "out")
	if r := ted(t, "dist", "extract", "--store", f.store, "app", "--to", out); r.code != 3 || !strings.Contains(r.stderr, "bin/server") {
		t.Fatalf("extract of a tampered chunk: %s", r)
	}
	if _, err := os.Stat(filepath.Join(out, "bin/server")); !os.IsNotExist(err) {
		t.Fatalf("tampered file was written: %v", err)
	}
}

func TestVerifyFindsTamperedManifestAndUntrustedKey(t *testing.T) {
	f := newFixture(t)
	f.build(t, "1.0.0")

	// A relay that edits a manifest keeps its signature; put such a copy
	// into a second store.
	st, signed := f.openRevision(t, 1)
	forged := *signed
	forged.Body = bytes.Replace(signed.Body, []byte("port"), []byte("pORT"), 1)
	forged.Body = bytes.Replace(forged.Body, []byte("1.0.0"), []byte("9.0.0"), 1)
	m, err := forged.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	other, err := store.Open(filepath.Join(f.dir, "forged"), store.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range m.ChunkIDs() {
		enc, err := st.Chunk(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := other.PutChunk(id, enc); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := other.AddRevision(&forged, m); err != nil {
		t.Fatal(err)
	}
	st.Close()
	other.Close()

	r := ted(t, "dist", "verify", "--store", filepath.Join(f.dir, "forged"), "--trust", f.pub)
	if r.code != 3 || !strings.Contains(r.stdout, "app@1") || !strings.Contains(r.stdout, "bad signature") {
		t.Fatalf("verify of a forged manifest: %s", r)
	}

	// The genuine store checked against someone else's key.
	otherKey := filepath.Join(f.dir, "other.key")
	mustTed(t, "pki", "signing-key", "--out", otherKey)
	r = ted(t, "dist", "verify", "--store", f.store, "--trust", otherKey+".pub")
	if r.code != 3 || !strings.Contains(r.stdout, "untrusted key") {
		t.Fatalf("verify with an untrusted key: %s", r)
	}
}

func TestBadSourceTrees(t *testing.T) {
	f := newFixture(t)
	if err := syscall.Mkfifo(filepath.Join(f.src, "etc/control.fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(f.src, "etc/shadow")); err != nil {
		t.Fatal(err)
	}
	args := []string{"dist", "build", "--store", f.store, "--name", "app", "--from", f.src,
		"--version", "1.0.0", "--channel", "web", "--sign-key", f.key}
	r := ted(t, args...)
	if r.code != 1 || !strings.Contains(r.stderr, "etc/control.fifo") || !strings.Contains(r.stderr, "named pipe") {
		t.Fatalf("build with a named pipe: %s", r)
	}
	// Nothing was stored: the store has no distribution.
	var list listResult
	tedJSON(t, &list, "dist", "list", "--store", f.store)
	if len(list.Distributions) != 0 {
		t.Fatalf("a refused build left %+v", list)
	}

	var res buildResult
	tedJSON(t, &res, append(args, "--skip-unsupported")...)
	if len(res.Skipped) != 2 || res.Skipped[0].Path != "etc/control.fifo" || res.Skipped[1].Path != "etc/shadow" || res.Files != 3 {
		t.Fatalf("build with --skip-unsupported: %+v", res)
	}
}

func TestBadStores(t *testing.T) {
	f := newFixture(t)
	missing := filepath.Join(f.dir, "missing")
	if r := ted(t, "dist", "list", "--store", missing); r.code != 1 || !strings.Contains(r.stderr, missing) {
		t.Fatalf("missing store: %s", r)
	}
	notStore := filepath.Join(f.dir, "src")
	if r := ted(t, "dist", "list", "--store", notStore); r.code != 1 || !strings.Contains(r.stderr, "not a TED store") {
		t.Fatalf("not a store: %s", r)
	}
	if r := ted(t, "dist", "build", "--store", notStore, "--name", "app", "--from", f.src, "--version", "1.0.0",
		"--channel", "web", "--sign-key", f.key); r.code != 1 || !strings.Contains(r.stderr, "not a TED store") {
		t.Fatalf("build into a non-store: %s", r)
	}

	f.build(t, "1.0.0")
	held, err := store.Open(f.store, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if r := ted(t, "dist", "list", "--store", f.store); r.code != 1 || !strings.Contains(r.stderr, "in use") || !strings.Contains(r.stderr, f.store) {
		t.Fatalf("locked store: %s", r)
	}
}

func TestUsageErrors(t *testing.T) {
	f := newFixture(t)
	for _, args := range [][]string{
		{"dist", "build", "--store", f.store, "--name", "app", "--from", f.src, "--version", "not-a-version", "--channel", "web", "--sign-key", f.key},
		{"dist", "build", "--store", f.store, "--name", "app", "--from", f.src, "--version", "1.0.0", "--sign-key", f.key},
		{"dist", "build", "--store", f.store, "--name", "app", "--from", f.src, "--version", "1.0.0", "--channel", "web", "--sign-key", f.key, "--requires", "runtime >>2"},
		{"dist", "show", "--store", f.store, "app@zero"},
		{"dist", "verify", "--store", f.store},
		{"dist", "list", "--no-such-flag"},
		{"dist", "show", "--store", f.store},
		{"dist", "build", "--store", f.store, "--name", "bad/name", "--from", f.src, "--version", "1.0.0", "--channel", "web", "--sign-key", f.key},
		{"dist", "build", "--store", f.store, "--name", "app", "--from", f.src, "--version", "1.0.0", "--channel", "web", "--sign-key", f.key, "--target", "../up"},
		{"dist", "no-such-command"},
		{"no-such-command"},
		{"pki", "issue", "--dir", f.dir, "--name", "web-01", "--role", "emperor"},
	} {
		if r := ted(t, args...); r.code != 2 {
			t.Errorf("want exit 2: %s", r)
		}
	}
	// None of them created the store.
	if _, err := os.Stat(f.store); !os.IsNotExist(err) {
		t.Fatalf("a refused command created the store: %v", err)
	}
}
