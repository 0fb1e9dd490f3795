package agent

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"ted/distribution"
)

// A pack is one agent revision laid out as files, for the nodes of a
// cluster subscriber: only the active node has the cluster's store open,
// so it copies each build of ted it receives into the shared directory
// (PackDir) and every node, the standbys first, upgrades from there.
//
//	PACKDIR/NAME@REV/manifest      the signed manifest, as stored
//	PACKDIR/NAME@REV/chunks/ID     its encoded chunks
//	PACKDIR/NAME@REV/pack.json     when it was written, the parent's agent
//
// A pack is written beside and renamed into place, so a reader sees it
// whole or not at all (a pack pruned under a reader fails its install,
// which is tried again: ErrNotWritten); a reader verifies the signature with its own trust
// and every chunk against the manifest (Materialize), so a pack is no
// more trusted than the network it came from.
type Pack struct {
	Dir      string                 `json:"-"`
	Manifest *distribution.Manifest `json:"-"`
	// Written is when the active node wrote it; ParentAgent is the version
	// the cluster's parent ran then (agent.follow_parent).
	Written     time.Time `json:"written"`
	ParentAgent string    `json:"parent_agent,omitempty"`
}

// Chunk reads an encoded chunk of the pack (distribution.ChunkSource).
func (p *Pack) Chunk(id distribution.ChunkID) ([]byte, error) {
	b, err := readLimited(filepath.Join(p.Dir, "chunks", id.String()), distribution.MaxEncodedChunkBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s in %s", distribution.ErrChunkMissing, id.Short(), p.Dir)
	}
	return b, err
}

// packName is the directory of revision rev of name.
func packName(name string, rev uint64) string { return name + "@" + strconv.FormatUint(rev, 10) }

// WritePack copies agent revision signed (m, its manifest) from src into
// packDir, unless it is there whole already; parentAgent is recorded (and
// updated in a pack already there). check is called before each step
// that writes (the fence of a cluster's active node: nothing is written
// past its lease). Each writer writes its own temporary directory, so
// two writers of one pack (a node that lost the lease and the next one)
// never mix their files; the last rename wins, and each is whole. It
// keeps only the newest keep packs of each name.
func WritePack(packDir string, signed *distribution.Signed, m *distribution.Manifest, src distribution.ChunkSource, parentAgent string, keep int, check func() error) (*Pack, error) {
	final := filepath.Join(packDir, packName(m.Name, m.Revision))
	p := &Pack{Dir: final, Manifest: m, Written: time.Now().UTC(), ParentAgent: parentAgent}
	if err := check(); err != nil {
		return nil, err
	}
	if packWhole(final, signed, m) {
		var was Pack
		if b, err := os.ReadFile(filepath.Join(final, "pack.json")); err == nil && json.Unmarshal(b, &was) == nil {
			p.Written = was.Written // when it was first there for the nodes
			if was.ParentAgent == parentAgent || parentAgent == "" {
				p.ParentAgent = was.ParentAgent
				return p, nil
			}
		}
		return p, writePackInfo(final, *p)
	}
	if err := os.MkdirAll(packDir, 0o755); err != nil {
		return nil, err
	}
	tmp := final + ".new-" + randomSuffix()
	done := false
	defer func() {
		if !done {
			_ = os.RemoveAll(tmp)
		}
	}()
	if err := os.MkdirAll(filepath.Join(tmp, "chunks"), 0o755); err != nil {
		return nil, err
	}
	for i, id := range m.ChunkIDs() {
		if i%64 == 0 {
			if err := check(); err != nil {
				return nil, err
			}
		}
		b, err := src.Chunk(id)
		if err != nil {
			return nil, fmt.Errorf("agent pack %s: %w", packName(m.Name, m.Revision), err)
		}
		if err := writeSynced(filepath.Join(tmp, "chunks", id.String()), b); err != nil {
			return nil, err
		}
	}
	if err := writeSynced(filepath.Join(tmp, "manifest"), signed.Encode()); err != nil {
		return nil, err
	}
	if err := writePackInfo(tmp, *p); err != nil {
		return nil, err
	}
	for _, d := range []string{filepath.Join(tmp, "chunks"), tmp} {
		if err := syncDir(d); err != nil {
			return nil, err
		}
	}
	if err := check(); err != nil {
		return nil, err
	}
	// A pack there but not whole (a writer that crashed between renames
	// leaves none: this is one damaged since) is moved aside first.
	if _, err := os.Stat(final); err == nil {
		if packWhole(final, signed, m) {
			return p, nil // another writer was first
		}
		aside := final + ".old-" + randomSuffix()
		if err := os.Rename(final, aside); err != nil {
			return nil, err
		}
		defer os.RemoveAll(aside)
	}
	if err := os.Rename(tmp, final); err != nil {
		if packWhole(final, signed, m) {
			return p, nil // another writer was first
		}
		return nil, err
	}
	done = true
	if err := syncDir(packDir); err != nil {
		return nil, err
	}
	prunePacks(packDir, m.Name, keep)
	return p, nil
}

// packWhole reports whether the pack in dir holds signed and every chunk
// of m.
func packWhole(dir string, signed *distribution.Signed, m *distribution.Manifest) bool {
	b, err := readLimited(filepath.Join(dir, "manifest"), distribution.MaxManifestBytes+1024)
	if err != nil || !bytes.Equal(b, signed.Encode()) {
		return false
	}
	for _, id := range m.ChunkIDs() {
		if fi, err := os.Stat(filepath.Join(dir, "chunks", id.String())); err != nil || fi.Size() == 0 {
			return false
		}
	}
	return true
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func writePackInfo(dir string, p Pack) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "pack.json.new")
	if err := writeSynced(tmp, b); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "pack.json"))
}

func writeSynced(name string, b []byte) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// prunePacks removes all but the newest keep packs of name, and what
// writers left behind more than staleLeftover ago (a crash mid-write).
func prunePacks(packDir, name string, keep int) {
	entries, err := os.ReadDir(packDir)
	if err != nil {
		return
	}
	var revs []uint64
	for _, e := range entries {
		n, rev, ok := strings.Cut(e.Name(), "@")
		if !ok || n != name {
			continue
		}
		if strings.Contains(rev, ".") {
			// Another writer's, under way, or a crash's.
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleLeftover {
				_ = os.RemoveAll(filepath.Join(packDir, e.Name()))
			}
			continue
		}
		if r, err := strconv.ParseUint(rev, 10, 64); err == nil {
			revs = append(revs, r)
		}
	}
	slices.Sort(revs)
	for len(revs) > max(keep, 1) {
		_ = os.RemoveAll(filepath.Join(packDir, packName(name, revs[0])))
		revs = revs[1:]
	}
}

// staleLeftover is how old a writer's temporary directory must be before
// it is taken for a crash's and removed.
const staleLeftover = time.Hour

// Packs returns the packs of name in packDir, newest first, each verified
// with trust; a pack that does not verify is skipped and said in bad.
func Packs(packDir, name string, trust *distribution.Trust) (packs []*Pack, bad []error) {
	entries, err := os.ReadDir(packDir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			bad = append(bad, err)
		}
		return nil, bad
	}
	for _, e := range entries {
		n, rev, ok := strings.Cut(e.Name(), "@")
		if !ok || n != name || strings.Contains(rev, ".") {
			continue // a writer's temporary directory
		}
		dir := filepath.Join(packDir, e.Name())
		p, err := readPack(dir, trust)
		if err != nil {
			bad = append(bad, fmt.Errorf("agent pack %s: %w", dir, err))
			continue
		}
		packs = append(packs, p)
	}
	slices.SortFunc(packs, func(a, b *Pack) int { return cmp.Compare(b.Manifest.Revision, a.Manifest.Revision) })
	return packs, bad
}

// maxPackInfo bounds pack.json.
const maxPackInfo = 4096

func readPack(dir string, trust *distribution.Trust) (*Pack, error) {
	b, err := readLimited(filepath.Join(dir, "manifest"), distribution.MaxManifestBytes+1024)
	if err != nil {
		return nil, err
	}
	s, err := distribution.DecodeSigned(b)
	if err != nil {
		return nil, err
	}
	m, err := trust.Verify(s)
	if err != nil {
		return nil, err
	}
	if m.Kind != distribution.KindAgent || filepath.Base(dir) != packName(m.Name, m.Revision) {
		return nil, fmt.Errorf("holds %s@%d (kind %s), not what its name says", m.Name, m.Revision, m.Kind)
	}
	p := &Pack{Dir: dir}
	if b, err := readLimited(filepath.Join(dir, "pack.json"), maxPackInfo); err == nil {
		if err := json.Unmarshal(b, p); err != nil {
			return nil, fmt.Errorf("pack.json: %w", err)
		}
	}
	p.Dir, p.Manifest = dir, m
	return p, nil
}

func readLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: over %d bytes", name, limit)
	}
	return b, nil
}
