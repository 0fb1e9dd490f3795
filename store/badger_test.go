package store_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"ted/distribution"
	"ted/store"
	"ted/store/storetest"
)

func openBadger(t *testing.T, dir string, opts store.Options) *store.Badger {
	t.Helper()
	s, err := store.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func TestBadgerConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openBadger(t, t.TempDir(), store.Options{Create: true})
	})
}

func randomChunks(name string, n, minSize, maxSize int) []storetest.Chunk {
	var seed [32]byte
	copy(seed[:], name)
	return storetest.RandomChunks(rand.NewChaCha8(seed), n, minSize, maxSize)
}

func TestBadgerReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir, store.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	cs := randomChunks(t.Name(), 7, 100, 64<<10)
	storetest.PutChunks(t, s, cs[:6])
	var added [][]byte
	for _, r := range []struct {
		name     string
		rev      uint64
		channels []string
		chunks   []storetest.Chunk
	}{
		{"web", 1, []string{"stable"}, cs[0:2]},
		{"web", 2, []string{"beta", "stable"}, cs[1:4]},
		{"api", 1, []string{"beta"}, cs[4:6]},
	} {
		sig, m := storetest.SignedRevision(t, r.name, r.rev, r.channels, r.chunks)
		if _, err := s.AddRevision(sig, m); err != nil {
			t.Fatal(err)
		}
		added = append(added, sig.Encode())
	}
	// Pending in this process only: the next one must collect it.
	storetest.PutChunks(t, s, cs[6:])
	before := snapshot(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openBadger(t, dir, store.Options{})
	if after := snapshot(t, s); !reflect.DeepEqual(after, before) {
		t.Errorf("after reopening:\n%+v\nbefore:\n%+v", after, before)
	}
	for i, ref := range []struct {
		name string
		rev  uint64
	}{{"web", 1}, {"web", 2}, {"api", 1}} {
		sig, err := s.Signed(ref.name, ref.rev)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(sig.Encode(), added[i]) {
			t.Errorf("%s@%d changed across reopening", ref.name, ref.rev)
		}
	}
	for _, c := range cs {
		got, err := s.Chunk(c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, c.Encoded) {
			t.Errorf("chunk %s changed across reopening", c.ID.Short())
		}
	}

	res, err := s.Prune("web", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.RemovedRevisions) != 0 || res.RemovedChunks != 1 || res.FreedBytes != int64(len(cs[6].Encoded)) {
		t.Errorf("Prune after reopening = %+v, want only the chunk pending before", res)
	}
	if ok, err := s.HasChunk(cs[6].ID); err != nil || ok {
		t.Errorf("the chunk pending before reopening is still there: %v, %v", ok, err)
	}
}

// storeSnapshot is what a store reports, but for disk use.
type storeSnapshot struct {
	Distributions []string
	Revisions     map[string][]store.RevisionInfo
	Channels      map[string][]store.RevisionInfo
	Usage         store.Usage
}

func snapshot(t *testing.T, s store.Store) storeSnapshot {
	t.Helper()
	var snap storeSnapshot
	var err error
	if snap.Distributions, err = s.Distributions(); err != nil {
		t.Fatal(err)
	}
	snap.Revisions = make(map[string][]store.RevisionInfo)
	for _, name := range snap.Distributions {
		if snap.Revisions[name], err = s.Revisions(name); err != nil {
			t.Fatal(err)
		}
	}
	snap.Channels = make(map[string][]store.RevisionInfo)
	for _, ch := range []string{"stable", "beta"} {
		if snap.Channels[ch], err = s.ChannelRevisions(ch); err != nil {
			t.Fatal(err)
		}
	}
	if snap.Usage, err = s.Usage(); err != nil {
		t.Fatal(err)
	}
	snap.Usage.DiskBytes = 0
	return snap
}

func TestBadgerLockedInProcess(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir, store.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Open(dir, store.Options{})
	if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open = %v, want ErrLocked naming %s", err, dir)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	openBadger(t, dir, store.Options{}) // free again
}

// holdLockEnv makes the test binary a helper process that holds a store
// open until its stdin closes.
const holdLockEnv = "TED_STORE_TEST_HOLD"

func TestBadgerLockedByAnotherProcess(t *testing.T) {
	if dir := os.Getenv(holdLockEnv); dir != "" {
		holdStore(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBadgerLockedByAnotherProcess$")
	cmd.Env = append(os.Environ(), holdLockEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "open\n" {
		t.Fatalf("helper said %q, %v; want open", line, err)
	}

	_, err = store.Open(dir, store.Options{Create: true})
	if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Errorf("Open while another process has the store = %v, want ErrLocked naming %s", err, dir)
	}

	stdin.Close()
	if _, err := io.Copy(io.Discard, stdout); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	openBadger(t, dir, store.Options{}) // free once the helper has gone
}

func holdStore(dir string) {
	s, err := store.Open(dir, store.Options{Create: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("open")
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func TestBadgerNotAStore(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, create := range []bool{false, true} {
		_, err := store.Open(dir, store.Options{Create: create})
		if !errors.Is(err, store.ErrNotAStore) || !strings.Contains(err.Error(), dir) {
			t.Errorf("Open(Create: %v) of a directory holding other files = %v, want ErrNotAStore naming it", create, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("Open wrote into a directory that is not a store: %v", entries)
	}

	file := filepath.Join(dir, "notes.txt")
	if _, err := store.Open(file, store.Options{Create: true}); !errors.Is(err, store.ErrNotAStore) {
		t.Errorf("Open of a file = %v, want ErrNotAStore", err)
	}
}

func TestBadgerMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "stores", "node1")
	_, err := store.Open(dir, store.Options{})
	switch {
	case err == nil:
		t.Fatal("Open without Create made a store")
	case errors.Is(err, store.ErrNotFound):
		t.Errorf("a missing store is ErrNotFound (which means a missing distribution): %v", err)
	case !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "does not exist"):
		t.Errorf("error %q does not say that %s does not exist", err, dir)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open without Create made the directory: %v", err)
	}

	openBadger(t, dir, store.Options{Create: true})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("store directory mode %o, want 700", perm)
	}
	if _, err := os.Stat(filepath.Join(dir, "TED-STORE")); err != nil {
		t.Errorf("no marker: %v", err)
	}
}

func TestBadgerEmptyDir(t *testing.T) {
	dir := t.TempDir()
	_, err := store.Open(dir, store.Options{})
	if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNotAStore) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Open of an empty directory without Create = %v, want a plain error naming it", err)
	}
	openBadger(t, dir, store.Options{Create: true})
}

func TestBadgerUnknownFormat(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "TED-STORE"), []byte(`{"format":99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := store.Open(dir, store.Options{Create: true})
	if err == nil || !strings.Contains(err.Error(), "format 99") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Open of a store of format 99 = %v, want an error naming the format and the directory", err)
	}
}

// TestBadgerDiskBounded replaces the whole content of a distribution with
// every revision and keeps 3: what badger holds on disk must follow the
// live data, not everything ever written.
func TestBadgerDiskBounded(t *testing.T) {
	const (
		revisions = 30
		keep      = 3
		chunkSize = 32 << 10
		perRev    = 256 // chunks: 8 MiB
		live      = keep * perRev * chunkSize
	)
	s := openBadger(t, t.TempDir(), store.Options{Create: true})
	src := rand.NewChaCha8([32]byte{1})
	var peak int64
	for rev := uint64(1); rev <= revisions; rev++ {
		cs := storetest.RandomChunks(src, perRev, chunkSize, chunkSize)
		storetest.PutChunks(t, s, cs)
		sig, m := storetest.SignedRevision(t, "bulk", rev, []string{"stable"}, cs)
		if _, err := s.AddRevision(sig, m); err != nil {
			t.Fatal(err)
		}
		res, err := s.Prune("bulk", keep)
		if err != nil {
			t.Fatal(err)
		}
		if rev > keep && res.RemovedChunks != perRev {
			t.Fatalf("revision %d: Prune removed %d chunks, want %d", rev, res.RemovedChunks, perRev)
		}
		u, err := s.Usage()
		if err != nil {
			t.Fatal(err)
		}
		peak = max(peak, u.DiskBytes)
		t.Logf("revision %2d: %3d MiB on disk, %2d MiB of chunks", rev, u.DiskBytes>>20, u.ChunkBytes>>20)
	}
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.ChunkBytes > live+live/100 {
		t.Errorf("%d chunk bytes kept, want about %d", u.ChunkBytes, live)
	}
	// Never reclaiming would hold all 240 MiB written. Badger may keep the
	// value log file being written (32 MiB) and files up to half garbage
	// beside the 24 MiB live.
	const bound = 4 * live
	if peak > bound {
		t.Errorf("disk use peaked at %d MiB, want at most %d MiB (%d MiB live)", peak>>20, bound>>20, live>>20)
	}
	t.Logf("final %d MiB, peak %d MiB, bound %d MiB, written %d MiB", u.DiskBytes>>20, peak>>20, bound>>20, revisions*perRev*chunkSize>>20)
}

// TestBadgerCompactsPartlyLivePacks drops half the chunks of a pack: the
// live half moves to a new pack, the old one goes, and every kept chunk
// reads back the same, also after a reopen.
func TestBadgerCompactsPartlyLivePacks(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir, store.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	src := rand.NewChaCha8([32]byte{2})
	all := storetest.RandomChunks(src, 256, 64<<10, 64<<10) // 16 MiB
	storetest.PutChunks(t, s, all)
	sig, m := storetest.SignedRevision(t, "half", 1, []string{"stable"}, all)
	if _, err := s.AddRevision(sig, m); err != nil {
		t.Fatal(err)
	}
	kept := all[:128]
	sig, m = storetest.SignedRevision(t, "half", 2, []string{"stable"}, kept)
	if _, err := s.AddRevision(sig, m); err != nil {
		t.Fatal(err)
	}
	packsBefore, _ := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	res, err := s.Prune("half", 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.RemovedChunks != 128 {
		t.Fatalf("Prune removed %d chunks, want 128", res.RemovedChunks)
	}
	packsAfter, _ := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	for _, p := range packsBefore {
		if slices.Contains(packsAfter, p) {
			t.Errorf("pack %s, half garbage, was not compacted (packs now %v)", filepath.Base(p), packsAfter)
		}
	}
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if live := storetest.Bytes(kept); u.ChunkBytes != live || u.DiskBytes > 2*live {
		t.Fatalf("after compaction: %d chunk bytes, %d on disk; want %d live", u.ChunkBytes, u.DiskBytes, live)
	}
	check := func(s store.Store) {
		t.Helper()
		for _, c := range kept {
			b, err := s.Chunk(c.ID)
			if err != nil || !bytes.Equal(b, c.Encoded) {
				t.Fatalf("chunk %s after compaction: %v", c.ID.Short(), err)
			}
		}
		for _, c := range all[128:] {
			if _, err := s.Chunk(c.ID); !errors.Is(err, distribution.ErrChunkMissing) {
				t.Fatalf("pruned chunk %s: %v, want missing", c.ID.Short(), err)
			}
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check(openBadger(t, dir, store.Options{}))
}

// TestBadgerReadsDuringCompaction reads kept chunks without pause while a
// prune compacts the pack they are in: every read succeeds with the right
// bytes.
func TestBadgerReadsDuringCompaction(t *testing.T) {
	s := openBadger(t, t.TempDir(), store.Options{Create: true})
	src := rand.NewChaCha8([32]byte{3})
	all := storetest.RandomChunks(src, 256, 64<<10, 64<<10)
	storetest.PutChunks(t, s, all)
	for rev, chunks := range [][]storetest.Chunk{all, all[:100]} {
		sig, m := storetest.SignedRevision(t, "busy", uint64(rev+1), []string{"stable"}, chunks)
		if _, err := s.AddRevision(sig, m); err != nil {
			t.Fatal(err)
		}
	}
	kept := all[:100]
	done := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		defer close(readErr)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			c := kept[i%len(kept)]
			b, err := s.Chunk(c.ID)
			if err == nil && !bytes.Equal(b, c.Encoded) {
				err = fmt.Errorf("chunk %s: wrong bytes", c.ID.Short())
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	_, err := s.Prune("busy", 1)
	close(done)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; err != nil {
		t.Fatalf("read during compaction: %v", err)
	}
}

// TestBadgerPutsDuringCompaction keeps putting chunks and adding revisions
// of one distribution while a prune of another empties and compacts packs:
// every chunk of every added revision must read back.
func TestBadgerPutsDuringCompaction(t *testing.T) {
	s := openBadger(t, t.TempDir(), store.Options{Create: true})
	src := rand.NewChaCha8([32]byte{4})
	old := storetest.RandomChunks(src, 256, 64<<10, 64<<10) // 16 MiB, all garbage after the prune
	storetest.PutChunks(t, s, old)
	for rev, chunks := range [][]storetest.Chunk{old, old[:1]} {
		sig, m := storetest.SignedRevision(t, "old", uint64(rev+1), []string{"stable"}, chunks)
		if _, err := s.AddRevision(sig, m); err != nil {
			t.Fatal(err)
		}
	}

	done := make(chan struct{})
	type added struct {
		chunks []storetest.Chunk
		err    error
	}
	result := make(chan added, 1)
	go func() {
		var all []storetest.Chunk
		newSrc := rand.NewChaCha8([32]byte{5})
		for rev := uint64(1); ; rev++ {
			select {
			case <-done:
				result <- added{chunks: all}
				return
			default:
			}
			cs := storetest.RandomChunks(newSrc, 32, 4<<10, 4<<10)
			for _, c := range cs {
				if err := s.PutChunk(c.ID, c.Encoded); err != nil {
					result <- added{err: err}
					return
				}
			}
			sig, m := storetest.SignedRevision(t, "new", rev, []string{"stable"}, cs)
			if _, err := s.AddRevision(sig, m); err != nil {
				result <- added{err: err}
				return
			}
			all = append(all, cs...)
		}
	}()
	_, err := s.Prune("old", 1)
	close(done)
	if err != nil {
		t.Fatal(err)
	}
	res := <-result
	if res.err != nil {
		t.Fatal(res.err)
	}
	for _, c := range res.chunks {
		b, err := s.Chunk(c.ID)
		if err != nil || !bytes.Equal(b, c.Encoded) {
			t.Fatalf("chunk %s put during compaction: %v (%d chunks put)", c.ID.Short(), err, len(res.chunks))
		}
	}
	t.Logf("%d chunks put during the prune, all readable", len(res.chunks))
}

// TestBadgerSyncSurvivesKill checks that chunks put and synced are found by
// a process that opens the store as a SIGKILL left it: the test copies the
// store's files while it is still open, as a crash would leave them.
func TestBadgerSyncSurvivesKill(t *testing.T) {
	dir := t.TempDir()
	s := openBadger(t, dir, store.Options{Create: true})
	chunks := randomChunks(t.Name(), 100, 1000, 20000) // far fewer than an index batch
	storetest.PutChunks(t, s, chunks)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	crashed := t.TempDir()
	if out, err := exec.Command("cp", "-a", dir+"/.", crashed).CombinedOutput(); err != nil {
		t.Fatalf("copy store: %v: %s", err, out)
	}
	os.Remove(filepath.Join(crashed, "LOCK"))
	after := openBadger(t, crashed, store.Options{})
	for _, c := range chunks {
		got, err := after.Chunk(c.ID)
		if err != nil {
			t.Fatalf("chunk %s after the crash: %v", c.ID.Short(), err)
		}
		if !bytes.Equal(got, c.Encoded) {
			t.Fatalf("chunk %s changed across the crash", c.ID.Short())
		}
	}
}
