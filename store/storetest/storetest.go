// Package storetest is the conformance suite of store.Store: every
// implementation runs Run, so they all behave the same. It also makes the
// chunks and signed revisions the suite stores, for other tests to use.
package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"ted/distribution"
	"ted/store"
)

// Run checks an implementation of store.Store. open returns a new, empty
// store and closes it when the test ends (t.Cleanup); Close must be
// idempotent, as some checks close the store themselves.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, s store.Store)
	}{
		{"Chunks", testChunks},
		{"ChunkMissing", testChunkMissing},
		{"RepairChunk", testRepairChunk},
		{"MissingChunks", testMissingChunks},
		{"AddRevisionIncomplete", testAddRevisionIncomplete},
		{"AddRevisionExists", testAddRevisionExists},
		{"AddRevisionMismatchedKey", testAddRevisionMismatchedKey},
		{"SignedRoundTrip", testSignedRoundTrip},
		{"Revisions", testRevisions},
		{"Distributions", testDistributions},
		{"ChannelRevisions", testChannelRevisions},
		{"NotFound", testNotFound},
		{"Prune", testPrune},
		{"PruneCollectsChunksOnceAdded", testPruneCollectsChunksOnceAdded},
		{"PruneArguments", testPruneArguments},
		{"Usage", testUsage},
		{"ManyChunks", testManyChunks},
		{"ConcurrentPutsSurvivePrune", testConcurrentPutsSurvivePrune},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, open(t)) })
	}
}

// chunks returns n random chunks of 100 bytes to 4 KiB (some stored inline
// by an engine, some not), from a seed of the test's own.
func chunks(t *testing.T, n int) []Chunk {
	return RandomChunks(rand.NewChaCha8(seed(t.Name())), n, 100, 4<<10)
}

func seed(name string) [32]byte { return sha256.Sum256([]byte(name)) }

func add(t *testing.T, s store.Store, name string, rev uint64, channels []string, cs []Chunk) (*distribution.Signed, store.RevisionInfo) {
	t.Helper()
	sig, m := SignedRevision(t, name, rev, channels, cs)
	info, err := s.AddRevision(sig, m)
	if err != nil {
		t.Fatal(err)
	}
	return sig, info
}

// revs lists name@rev of infos.
func revs(infos []store.RevisionInfo) []string {
	out := []string{}
	for _, r := range infos {
		out = append(out, fmt.Sprintf("%s@%d", r.Name, r.Revision))
	}
	return out
}

func wantErr(t *testing.T, err, target error, mention ...string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
	for _, s := range mention {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func wantChunks(t *testing.T, s store.Store, cs []Chunk, present bool) {
	t.Helper()
	for _, c := range cs {
		ok, err := s.HasChunk(c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ok != present {
			t.Errorf("HasChunk(%s) = %v, want %v", c.ID.Short(), ok, present)
		}
	}
}

func testChunks(t *testing.T, s store.Store) {
	c := chunks(t, 1)[0]
	if ok, err := s.HasChunk(c.ID); err != nil || ok {
		t.Fatalf("HasChunk before put = %v, %v; want false", ok, err)
	}
	put := bytes.Clone(c.Encoded)
	if err := s.PutChunk(c.ID, put); err != nil {
		t.Fatal(err)
	}
	put[0] ^= 0xff // the store must have kept its own copy
	if ok, err := s.HasChunk(c.ID); err != nil || !ok {
		t.Fatalf("HasChunk after put = %v, %v; want true", ok, err)
	}
	got, err := s.Chunk(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, c.Encoded) {
		t.Fatal("Chunk returned other bytes than were put")
	}
	if _, err := distribution.DecodeChunk(c.ID, got); err != nil {
		t.Fatal(err)
	}
	got[0] ^= 0xff // nor may a caller change what the store holds
	if err := s.PutChunk(c.ID, c.Encoded); err != nil {
		t.Fatalf("second put of a chunk: %v", err)
	}
	if again, err := s.Chunk(c.ID); err != nil || !bytes.Equal(again, c.Encoded) {
		t.Fatalf("Chunk after a second put: %v, equal %v", err, bytes.Equal(again, c.Encoded))
	}
	for _, bad := range [][]byte{nil, make([]byte, distribution.MaxEncodedChunkBytes+1)} {
		if err := s.PutChunk(c.ID, bad); err == nil {
			t.Errorf("PutChunk of %d bytes succeeded", len(bad))
		}
	}
}

func testMissingChunks(t *testing.T, s store.Store) {
	all := chunks(t, 10)
	PutChunks(t, s, all[:3])
	PutChunks(t, s, all[6:8])
	ids := make([]distribution.ChunkID, len(all))
	for i, c := range all {
		ids[i] = c.ID
	}
	missing, err := s.MissingChunks(ids)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]distribution.ChunkID{}, ids[3:6]...), ids[8:]...)
	if !slices.Equal(missing, want) {
		t.Fatalf("MissingChunks = %d ids, want the %d not put, in order", len(missing), len(want))
	}
	if missing, err := s.MissingChunks(ids[:3]); err != nil || len(missing) != 0 {
		t.Fatalf("MissingChunks of stored chunks = %v, %v; want none", missing, err)
	}
}

func testRepairChunk(t *testing.T, s store.Store) {
	c := chunks(t, 1)[0]
	bad := bytes.Clone(c.Encoded)
	bad[len(bad)-1] ^= 0xff
	if err := s.PutChunk(c.ID, bad); err != nil {
		t.Fatal(err)
	}
	if err := s.RepairChunk(c.ID, bad); !errors.Is(err, distribution.ErrChunkCorrupt) {
		t.Fatalf("repair with corrupt bytes: %v, want ErrChunkCorrupt", err)
	}
	if err := s.RepairChunk(c.ID, c.Encoded); err != nil {
		t.Fatal(err)
	}
	got, err := s.Chunk(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, c.Encoded) {
		t.Fatal("after RepairChunk the store still serves the corrupt copy")
	}
}

func testChunkMissing(t *testing.T, s store.Store) {
	c := chunks(t, 1)[0]
	_, err := s.Chunk(c.ID)
	wantErr(t, err, distribution.ErrChunkMissing, c.ID.Short())
}

func testAddRevisionIncomplete(t *testing.T, s store.Store) {
	cs := chunks(t, 4)
	PutChunks(t, s, []Chunk{cs[0], cs[3]})
	sig, m := SignedRevision(t, "web", 1, []string{"stable"}, cs)
	_, err := s.AddRevision(sig, m)
	// The first missing in reference order, which is cs[1].
	wantErr(t, err, store.ErrIncomplete, "web@1", "2 of 4", cs[1].ID.Short())

	if _, err := s.Revisions("web"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Revisions after a refused add: %v, want ErrNotFound", err)
	}
	if _, err := s.Signed("web", 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Signed after a refused add: %v, want ErrNotFound", err)
	}
	if names, err := s.Distributions(); err != nil || len(names) != 0 {
		t.Errorf("Distributions after a refused add = %v, %v; want none", names, err)
	}
	if infos, err := s.ChannelRevisions("stable"); err != nil || len(infos) != 0 {
		t.Errorf("ChannelRevisions after a refused add = %v, %v; want none", revs(infos), err)
	}
	if u, err := s.Usage(); err != nil || u.Revisions != 0 {
		t.Errorf("Usage after a refused add = %+v, %v; want no revisions", u, err)
	}

	PutChunks(t, s, cs[1:3])
	if _, err := s.AddRevision(sig, m); err != nil {
		t.Fatalf("add once complete: %v", err)
	}
}

func testAddRevisionExists(t *testing.T, s store.Store) {
	cs := chunks(t, 2)
	PutChunks(t, s, cs)
	first, _ := add(t, s, "web", 1, []string{"stable"}, cs)
	// Same name and revision, other content.
	sig, m := SignedRevision(t, "web", 1, []string{"beta"}, cs[:1])
	_, err := s.AddRevision(sig, m)
	wantErr(t, err, store.ErrExists, "web@1")
	got, err := s.Signed("web", 1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Encode(), first.Encode()) {
		t.Error("a refused add replaced the stored manifest")
	}
	if infos, err := s.ChannelRevisions("beta"); err != nil || len(infos) != 0 {
		t.Errorf("a refused add indexed channel beta: %v, %v", revs(infos), err)
	}
}

func testAddRevisionMismatchedKey(t *testing.T, s store.Store) {
	cs := chunks(t, 1)
	PutChunks(t, s, cs)
	sig, m := SignedRevision(t, "web", 1, []string{"stable"}, cs)
	other := *sig
	other.KeyID = "0123456789abcdef"
	if _, err := s.AddRevision(&other, m); err == nil {
		t.Fatal("AddRevision accepted an envelope whose key is not the manifest's")
	}
	if _, err := s.Revisions("web"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Revisions after a refused add: %v, want ErrNotFound", err)
	}
}

func testSignedRoundTrip(t *testing.T, s store.Store) {
	cs := chunks(t, 6)
	PutChunks(t, s, cs)
	sig1, _ := add(t, s, "web", 1, []string{"stable"}, cs[:3])
	sig2, _ := add(t, s, "web", 2, []string{"stable"}, cs[3:])
	for _, tc := range []struct {
		rev  uint64
		want *distribution.Signed
	}{{1, sig1}, {2, sig2}, {0, sig2}} {
		got, err := s.Signed("web", tc.rev)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Encode(), tc.want.Encode()) {
			t.Errorf("Signed(web, %d) is not the envelope that was added", tc.rev)
		}
	}
	got, err := s.Signed("web", 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := got.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Revision != 2 {
		t.Errorf("Signed(web, 0) holds revision %d, want the latest, 2", m.Revision)
	}
}

func testRevisions(t *testing.T, s store.Store) {
	cs := chunks(t, 6)
	PutChunks(t, s, cs)
	// Added out of order; revision 2 references cs[0] twice.
	add(t, s, "web", 3, []string{"stable"}, cs[4:])
	sig, m := SignedRevision(t, "web", 2, []string{"beta", "stable"}, []Chunk{cs[0], cs[1], cs[0], cs[2]})
	added, err := s.AddRevision(sig, m)
	if err != nil {
		t.Fatal(err)
	}
	add(t, s, "web", 1, []string{"stable"}, cs[3:4])

	want := store.RevisionInfo{
		Name: "web", Revision: 2, Version: "1.0.0", Channels: []string{"beta", "stable"},
		Kind: distribution.KindFiles, Files: 2,
		Bytes:  int64(2*cs[0].Size + cs[1].Size + cs[2].Size),
		Chunks: 3, Created: m.CreatedTime(), KeyID: sig.KeyID,
	}
	if !reflect.DeepEqual(added, want) {
		t.Errorf("AddRevision returned\n%+v, want\n%+v", added, want)
	}
	added.Channels[0] = "changed" // the store must not share it

	infos, err := s.Revisions("web")
	if err != nil {
		t.Fatal(err)
	}
	if got := revs(infos); !slices.Equal(got, []string{"web@1", "web@2", "web@3"}) {
		t.Fatalf("Revisions = %v, want ascending 1, 2, 3", got)
	}
	if !reflect.DeepEqual(infos[1], want) {
		t.Errorf("Revisions()[1] =\n%+v, want\n%+v", infos[1], want)
	}
	latest, err := s.Latest("web")
	if err != nil {
		t.Fatal(err)
	}
	if latest.Revision != 3 || !latest.Created.Equal(infos[2].Created) {
		t.Errorf("Latest = %+v, want revision 3", latest)
	}
}

func testDistributions(t *testing.T, s store.Store) {
	names, err := s.Distributions()
	if err != nil || len(names) != 0 {
		t.Fatalf("Distributions of an empty store = %v, %v", names, err)
	}
	cs := chunks(t, 1)
	PutChunks(t, s, cs)
	for _, name := range []string{"b", "a.b", "a", "c-d", "A", "a0"} {
		add(t, s, name, 1, []string{"stable"}, cs)
	}
	add(t, s, "a", 2, []string{"stable"}, cs)
	names, err = s.Distributions()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"A", "a", "a.b", "a0", "b", "c-d"}; !slices.Equal(names, want) {
		t.Errorf("Distributions = %q, want %q", names, want)
	}
}

func testChannelRevisions(t *testing.T, s store.Store) {
	cs := chunks(t, 1)
	PutChunks(t, s, cs)
	add(t, s, "web", 1, []string{"stable"}, cs)
	add(t, s, "web", 2, []string{"beta", "stable"}, cs)
	add(t, s, "web2", 1, []string{"stable"}, cs)
	add(t, s, "api", 1, []string{"beta"}, cs)
	add(t, s, "db", 1, []string{"stable", "stable2"}, cs)
	add(t, s, "cache", 1, []string{"stable2"}, cs)

	for channel, want := range map[string][]string{
		"stable":  {"db@1", "web@1", "web@2", "web2@1"},
		"beta":    {"api@1", "web@2"},
		"stable2": {"cache@1", "db@1"},
		"none":    {},
	} {
		infos, err := s.ChannelRevisions(channel)
		if err != nil {
			t.Fatal(err)
		}
		if got := revs(infos); !slices.Equal(got, want) {
			t.Errorf("ChannelRevisions(%s) = %v, want %v", channel, got, want)
		}
	}
	infos, err := s.ChannelRevisions("beta")
	if err != nil {
		t.Fatal(err)
	}
	if got := infos[1]; got.Version != "1.0.0" || !slices.Equal(got.Channels, []string{"beta", "stable"}) {
		t.Errorf("ChannelRevisions gives an incomplete entry: %+v", got)
	}

	if _, err := s.Prune("web", 1); err != nil {
		t.Fatal(err)
	}
	infos, err = s.ChannelRevisions("stable")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := revs(infos), []string{"db@1", "web@2", "web2@1"}; !slices.Equal(got, want) {
		t.Errorf("ChannelRevisions(stable) after pruning web@1 = %v, want %v", got, want)
	}
}

func testNotFound(t *testing.T, s store.Store) {
	_, err := s.Revisions("nope")
	wantErr(t, err, store.ErrNotFound, "nope")
	_, err = s.Latest("nope")
	wantErr(t, err, store.ErrNotFound, "nope")
	_, err = s.Signed("nope", 0)
	wantErr(t, err, store.ErrNotFound, "nope")
	_, err = s.Signed("nope", 3)
	wantErr(t, err, store.ErrNotFound, "nope")
	_, err = s.Prune("nope", 1)
	wantErr(t, err, store.ErrNotFound, "nope")
	_, err = s.Revisions("bad name")
	wantErr(t, err, store.ErrNotFound)

	cs := chunks(t, 1)
	PutChunks(t, s, cs)
	add(t, s, "web", 1, []string{"stable"}, cs)
	_, err = s.Signed("web", 2)
	wantErr(t, err, store.ErrNotFound, "web@2")
	// A name that only starts like a stored one.
	_, err = s.Revisions("we")
	wantErr(t, err, store.ErrNotFound, "we")
}

func testPrune(t *testing.T, s store.Store) {
	cs := chunks(t, 12)
	shared, keptOld, otherDist, pending := cs[0], cs[1], cs[2], cs[3]
	only1, only2, only3, only4 := cs[4:6], cs[6:8], cs[8:10], cs[10:12]
	PutChunks(t, s, cs[:3])
	PutChunks(t, s, cs[4:])

	add(t, s, "web", 1, []string{"stable"}, append([]Chunk{shared, keptOld}, only1...))
	add(t, s, "web", 2, []string{"stable"}, append([]Chunk{shared, otherDist}, only2...))
	add(t, s, "web", 3, []string{"stable"}, append([]Chunk{shared}, only3...))
	add(t, s, "web", 4, []string{"stable"}, append([]Chunk{shared, keptOld}, only4...))
	add(t, s, "api", 1, []string{"stable"}, []Chunk{otherDist})
	// Put after every add, so still pending: referenced by nothing.
	PutChunks(t, s, []Chunk{pending})

	res, err := s.Prune("web", 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.RemovedRevisions, []uint64{1, 2}) {
		t.Errorf("RemovedRevisions = %v, want [1 2]", res.RemovedRevisions)
	}
	removed := append(slices.Clone(only1), only2...)
	if res.RemovedChunks != len(removed) || res.FreedBytes != Bytes(removed) {
		t.Errorf("removed %d chunks, %d bytes; want %d, %d", res.RemovedChunks, res.FreedBytes, len(removed), Bytes(removed))
	}
	wantChunks(t, s, removed, false)
	wantChunks(t, s, []Chunk{shared, keptOld, otherDist, pending}, true)
	wantChunks(t, s, append(slices.Clone(only3), only4...), true)

	infos, err := s.Revisions("web")
	if err != nil {
		t.Fatal(err)
	}
	if got := revs(infos); !slices.Equal(got, []string{"web@3", "web@4"}) {
		t.Errorf("Revisions after Prune = %v, want web@3, web@4", got)
	}
	for _, rev := range []uint64{1, 2} {
		_, err := s.Signed("web", rev)
		wantErr(t, err, store.ErrNotFound, fmt.Sprintf("web@%d", rev))
	}
	if _, err := s.Latest("api"); err != nil {
		t.Errorf("pruning web touched api: %v", err)
	}

	// Nothing more to remove: keeping as many as there are is no change.
	res, err = s.Prune("web", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.RemovedRevisions) != 0 || res.RemovedChunks != 0 || res.FreedBytes != 0 {
		t.Errorf("second Prune removed %+v, want nothing", res)
	}
	wantChunks(t, s, []Chunk{pending}, true)
}

func testPruneCollectsChunksOnceAdded(t *testing.T, s store.Store) {
	cs := chunks(t, 3)
	PutChunks(t, s, cs)
	add(t, s, "web", 1, []string{"stable"}, cs[:2]) // cs[0] and cs[1] stop being pending
	add(t, s, "web", 2, []string{"stable"}, cs[1:2])
	res, err := s.Prune("web", 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.RemovedChunks != 1 {
		t.Errorf("RemovedChunks = %d, want 1", res.RemovedChunks)
	}
	wantChunks(t, s, cs[:1], false)
	wantChunks(t, s, cs[1:], true) // cs[2]: pending
}

func testPruneArguments(t *testing.T, s store.Store) {
	cs := chunks(t, 1)
	PutChunks(t, s, cs)
	add(t, s, "web", 1, []string{"stable"}, cs)
	for _, keep := range []int{0, -1} {
		_, err := s.Prune("web", keep)
		if err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Prune(web, %d) = %v, want an error that is not ErrNotFound", keep, err)
		}
	}
	if _, err := s.Latest("web"); err != nil {
		t.Errorf("a refused Prune removed the revision: %v", err)
	}
}

func testUsage(t *testing.T, s store.Store) {
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Distributions != 0 || u.Revisions != 0 || u.Chunks != 0 || u.ChunkBytes != 0 || u.DiskBytes < 0 {
		t.Fatalf("Usage of an empty store = %+v", u)
	}
	cs := chunks(t, 5)
	PutChunks(t, s, cs)
	PutChunks(t, s, cs[:1]) // twice: counted once
	add(t, s, "web", 1, []string{"stable"}, cs[:2])
	add(t, s, "web", 2, []string{"stable"}, cs[2:4])
	add(t, s, "api", 1, []string{"beta"}, cs[4:])
	u, err = s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	want := store.Usage{Distributions: 2, Revisions: 3, Chunks: 5, ChunkBytes: Bytes(cs), DiskBytes: u.DiskBytes}
	if u != want || u.DiskBytes < 0 {
		t.Errorf("Usage = %+v, want %+v", u, want)
	}
	if _, err := s.Prune("web", 1); err != nil {
		t.Fatal(err)
	}
	u, err = s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	want = store.Usage{Distributions: 2, Revisions: 2, Chunks: 3, ChunkBytes: Bytes(cs[2:]), DiskBytes: u.DiskBytes}
	if u != want {
		t.Errorf("Usage after Prune = %+v, want %+v", u, want)
	}
}

// testManyChunks stores and collects a revision of 40,000 chunks: more than
// an engine can write or delete in one transaction of modest size.
func testManyChunks(t *testing.T, s store.Store) {
	const n = 40_000
	cs := RandomChunks(rand.NewChaCha8(seed(t.Name())), n+1, 16, 32)
	PutChunks(t, s, cs)
	info, _ := addInfo(t, s, "big", 1, cs[:n])
	if info.Chunks != n {
		t.Errorf("Chunks = %d, want %d", info.Chunks, n)
	}
	if _, err := s.Signed("big", 1); err != nil {
		t.Fatal(err)
	}
	addInfo(t, s, "big", 2, cs[n:])
	res, err := s.Prune("big", 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.RemovedChunks != n || res.FreedBytes != Bytes(cs[:n]) {
		t.Errorf("Prune removed %d chunks, %d bytes; want %d, %d", res.RemovedChunks, res.FreedBytes, n, Bytes(cs[:n]))
	}
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Chunks != 1 {
		t.Errorf("Usage().Chunks = %d after pruning, want 1", u.Chunks)
	}
}

func addInfo(t *testing.T, s store.Store, name string, rev uint64, cs []Chunk) (store.RevisionInfo, *distribution.Signed) {
	t.Helper()
	sig, info := add(t, s, name, rev, []string{"stable"}, cs)
	return info, sig
}

// testConcurrentPutsSurvivePrune puts chunks from several goroutines while
// revisions come and go and Prune collects (and reclaims space): every chunk
// put is pending, so none may be lost, and no put may fail.
func testConcurrentPutsSurvivePrune(t *testing.T, s store.Store) {
	const writers, each, revisions = 4, 100, 50
	cs := chunks(t, writers*each+revisions)
	put, churn := cs[:writers*each], cs[writers*each:]

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for _, c := range put[w*each : (w+1)*each] {
				if err := s.PutChunk(c.ID, c.Encoded); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// Each round adds a revision of its own chunk and prunes the one
	// before, so every Prune deletes a chunk and reclaims space.
	rounds := 0
	for running := true; running; rounds++ {
		select {
		case <-done:
			running = false
		default:
		}
		c := churn[rounds%len(churn)]
		PutChunks(t, s, []Chunk{c})
		add(t, s, "web", uint64(rounds+1), []string{"stable"}, []Chunk{c})
		if _, err := s.Prune("web", 1); err != nil {
			t.Fatal(err)
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wantChunks(t, s, put, true)
	// And a revision that needs them all can be added.
	add(t, s, "web", uint64(rounds+1), []string{"stable"}, put)
	t.Logf("%d revisions added and pruned alongside the puts", rounds)
}

func testClose(t *testing.T, s store.Store) {
	cs := chunks(t, 1)
	PutChunks(t, s, cs)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.HasChunk(cs[0].ID); err == nil {
		t.Error("HasChunk succeeded after Close")
	}
	if _, err := s.Chunk(cs[0].ID); err == nil {
		t.Error("Chunk succeeded after Close")
	}
	if err := s.PutChunk(cs[0].ID, cs[0].Encoded); err == nil {
		t.Error("PutChunk succeeded after Close")
	}
	sig, m := SignedRevision(t, "web", 1, []string{"stable"}, cs)
	if _, err := s.AddRevision(sig, m); err == nil {
		t.Error("AddRevision succeeded after Close")
	}
	if _, err := s.Distributions(); err == nil {
		t.Error("Distributions succeeded after Close")
	}
	if _, err := s.Usage(); err == nil {
		t.Error("Usage succeeded after Close")
	}
}
