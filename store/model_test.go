package store_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"pgregory.net/rapid"

	"ted/store"
	"ted/store/storetest"
)

// TestBadgerMatchesMemory runs random sequences of puts, adds and prunes on
// both implementations and requires the same answers throughout: Memory is
// the double other packages test against, so it must not drift from Badger.
func TestBadgerMatchesMemory(t *testing.T) {
	pool := storetest.RandomChunks(rand.NewChaCha8([32]byte{7}), 10, 100, 3000)
	names := []string{"api", "web"}
	channels := []string{"beta", "stable"}

	rapid.Check(t, func(rt *rapid.T) {
		b, err := store.Open(t.TempDir(), store.Options{Create: true})
		if err != nil {
			rt.Fatal(err)
		}
		defer b.Close()
		m := store.NewMemory()
		defer m.Close()

		steps := rapid.IntRange(1, 25).Draw(rt, "steps")
		for range steps {
			switch rapid.IntRange(0, 2).Draw(rt, "op") {
			case 0:
				c := pool[rapid.IntRange(0, len(pool)-1).Draw(rt, "chunk")]
				same(rt, "PutChunk", nil, b.PutChunk(c.ID, c.Encoded), nil, m.PutChunk(c.ID, c.Encoded))
			case 1:
				name := rapid.SampledFrom(names).Draw(rt, "name")
				rev := rapid.Uint64Range(1, 4).Draw(rt, "rev")
				chs := rapid.SliceOfNDistinct(rapid.SampledFrom(channels), 1, 2, func(s string) string { return s }).Draw(rt, "channels")
				refs := rapid.SliceOfN(rapid.SampledFrom(pool), 0, 4).Draw(rt, "refs")
				sig, man := storetest.SignedRevision(t, name, rev, chs, refs)
				bi, berr := b.AddRevision(sig, man)
				mi, merr := m.AddRevision(sig, man)
				same(rt, fmt.Sprintf("AddRevision %s@%d", name, rev), bi, berr, mi, merr)
			case 2:
				name := rapid.SampledFrom(names).Draw(rt, "name")
				keep := rapid.IntRange(1, 3).Draw(rt, "keep")
				br, berr := b.Prune(name, keep)
				mr, merr := m.Prune(name, keep)
				same(rt, fmt.Sprintf("Prune %s %d", name, keep), br, berr, mr, merr)
			}
		}

		for _, name := range names {
			bs, berr := b.Revisions(name)
			ms, merr := m.Revisions(name)
			same(rt, "Revisions "+name, bs, berr, ms, merr)
		}
		for _, ch := range channels {
			bs, berr := b.ChannelRevisions(ch)
			ms, merr := m.ChannelRevisions(ch)
			same(rt, "ChannelRevisions "+ch, bs, berr, ms, merr)
		}
		bd, berr := b.Distributions()
		md, merr := m.Distributions()
		same(rt, "Distributions", bd, berr, md, merr)
		for _, c := range pool {
			bh, berr := b.HasChunk(c.ID)
			mh, merr := m.HasChunk(c.ID)
			same(rt, "HasChunk "+c.ID.Short(), bh, berr, mh, merr)
		}
		bu, berr := b.Usage()
		mu, merr := m.Usage()
		bu.DiskBytes = 0
		same(rt, "Usage", bu, berr, mu, merr)
	})
}

// same fails unless both implementations gave the same result, or errors of
// the same kind.
func same(t *rapid.T, what string, b any, berr error, m any, merr error) {
	t.Helper()
	if kind(berr) != kind(merr) {
		t.Fatalf("%s: badger error %v, memory error %v", what, berr, merr)
	}
	if berr == nil && !reflect.DeepEqual(b, m) {
		t.Fatalf("%s:\nbadger %+v\nmemory %+v", what, b, m)
	}
}

func kind(err error) string {
	for _, k := range []error{store.ErrNotFound, store.ErrExists, store.ErrIncomplete} {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return "nil"
}
