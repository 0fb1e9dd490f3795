package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ted/distribution"
)

// memChunks is a ChunkSource in memory.
type memChunks map[distribution.ChunkID][]byte

func (m memChunks) Chunk(id distribution.ChunkID) ([]byte, error) {
	if b, ok := m[id]; ok {
		return b, nil
	}
	return nil, distribution.ErrChunkMissing
}

// agentRevision is a signed build of "ted" (its content: body) for this
// platform.
func agentRevision(t *testing.T, key ed25519.PrivateKey, rev uint64, version, body string) (*distribution.Signed, *distribution.Manifest, memChunks) {
	t.Helper()
	id := distribution.SumChunk([]byte(body))
	src := memChunks{id: distribution.EncodeChunk([]byte(body))}
	m := &distribution.Manifest{
		Format: distribution.ManifestFormat, Name: distribution.AgentName(Platform()), Revision: rev, Version: version,
		Channels: []string{"agents"}, Kind: distribution.KindAgent, Platform: Platform(), Created: 1_700_000_000,
		Target: distribution.AgentName(Platform()),
		Entries: []distribution.Entry{{Path: distribution.AgentFile, Type: distribution.TypeFile, Mode: 0o755, Size: int64(len(body)),
			Chunks: []distribution.ChunkRef{{ID: id, Size: uint32(len(body))}}}},
	}
	s, err := distribution.Sign(m, key)
	if err != nil {
		t.Fatal(err)
	}
	return s, m, src
}

// A pack written by the active node reads back whole on another node,
// verified with its trust; one signed by another key, or whose chunk was
// changed, does not serve; only the newest packs are kept.
func TestPacks(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	trust := distribution.NewTrust(key.Public().(ed25519.PublicKey))
	dir := filepath.Join(t.TempDir(), "agent")
	name := distribution.AgentName(Platform())
	for rev := uint64(1); rev <= 3; rev++ {
		s, m, src := agentRevision(t, key, rev, "1.0."+string(rune('0'+rev)), "build "+string(rune('0'+rev)))
		if _, err := WritePack(dir, s, m, src, "1.0.0", 2, noFence); err != nil {
			t.Fatal(err)
		}
	}
	packs, bad := Packs(dir, name, trust)
	if len(bad) != 0 || len(packs) != 2 || packs[0].Manifest.Revision != 3 || packs[1].Manifest.Revision != 2 {
		t.Fatalf("packs %v, bad %v: want revisions 3 and 2", packs, bad)
	}
	if packs[0].ParentAgent != "1.0.0" || packs[0].Written.IsZero() {
		t.Errorf("pack info %+v", packs[0])
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := distribution.Materialize(context.Background(), packs[0].Manifest, packs[0], out, distribution.MaterializeOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, distribution.AgentFile)); string(b) != "build 3" {
		t.Errorf("materialized %q", b)
	}

	// Written again with another parent version: the same pack, its
	// first time kept.
	s, m, src := agentRevision(t, key, 3, "1.0.3", "build 3")
	p, err := WritePack(dir, s, m, src, "1.0.1", 2, noFence)
	if err != nil || p.ParentAgent != "1.0.1" || !p.Written.Equal(packs[0].Written) {
		t.Errorf("rewritten pack %+v, %v; first written %v", p, err, packs[0].Written)
	}

	// Another key: not trusted.
	_, other, _ := ed25519.GenerateKey(nil)
	s, m, src = agentRevision(t, other, 4, "1.0.4", "build 4")
	if _, err := WritePack(dir, s, m, src, "", 3, noFence); err != nil {
		t.Fatal(err)
	}
	packs, bad = Packs(dir, name, trust)
	if len(packs) != 2 || len(bad) != 1 || !strings.Contains(bad[0].Error(), "@4") {
		t.Errorf("with an untrusted pack: packs %d, bad %v", len(packs), bad)
	}

	// A chunk changed on the shared directory: the build does not
	// materialize.
	chunks, _ := filepath.Glob(filepath.Join(packs[0].Dir, "chunks", "*"))
	if err := os.WriteFile(chunks[0], distribution.EncodeChunk([]byte("build X")), 0o644); err != nil {
		t.Fatal(err)
	}
	err = distribution.Materialize(context.Background(), packs[0].Manifest, packs[0], filepath.Join(t.TempDir(), "x"), distribution.MaterializeOptions{})
	if !errors.Is(err, distribution.ErrChunkCorrupt) {
		t.Errorf("a changed chunk materialized: %v", err)
	}
}

func noFence() error { return nil }

// A pack is written only while the fence holds; a pack there but not
// whole (a chunk gone) is written again whole; what a crashed writer left
// is not taken for a pack.
func TestPackFencedAndRepaired(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	trust := distribution.NewTrust(key.Public().(ed25519.PublicKey))
	dir := filepath.Join(t.TempDir(), "agent")
	s, m, src := agentRevision(t, key, 1, "1.0.1", "build 1")
	fenced := errors.New("fenced")
	if _, err := WritePack(dir, s, m, src, "", 2, func() error { return fenced }); !errors.Is(err, fenced) {
		t.Fatalf("written past the fence: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left %d entries past the fence", len(entries))
	}
	p, err := WritePack(dir, s, m, src, "", 2, noFence)
	if err != nil {
		t.Fatal(err)
	}
	chunks, _ := filepath.Glob(filepath.Join(p.Dir, "chunks", "*"))
	if err := os.Remove(chunks[0]); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.Dir+".new-deadbeef/chunks", 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := WritePack(dir, s, m, src, "", 2, noFence); err != nil {
		t.Fatal(err)
	}
	packs, bad := Packs(dir, m.Name, trust)
	if len(packs) != 1 || len(bad) != 0 {
		t.Fatalf("packs %d, bad %v: want the one pack", len(packs), bad)
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := distribution.Materialize(context.Background(), m, packs[0], out, distribution.MaterializeOptions{}); err != nil {
		t.Errorf("the repaired pack does not materialize: %v", err)
	}
}
