package store

import (
	"bytes"
	"cmp"
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"ted/distribution"
)

func TestSelectPruned(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		revs := rapid.SliceOfNDistinct(rapid.Uint64Range(1, 1000), 0, 20, func(r uint64) uint64 { return r }).Draw(t, "revs")
		slices.Sort(revs)
		keep := rapid.IntRange(1, 25).Draw(t, "keep")
		infos := make([]RevisionInfo, len(revs))
		for i, r := range revs {
			infos[i] = RevisionInfo{Name: "web", Revision: r}
		}
		doomed := selectPruned(infos, keep)
		kept := revs[len(doomed):]
		if len(kept) != min(len(revs), keep) {
			t.Fatalf("kept %v of %v, want the newest %d", kept, revs, keep)
		}
		if !slices.Equal(append(slices.Clone(doomed), kept...), revs) {
			t.Fatalf("pruned %v and kept %v: not the oldest of %v", doomed, kept, revs)
		}
	})
}

var nameGen = rapid.StringMatching(`[A-Za-z0-9][A-Za-z0-9._+-]{0,12}`)

// TestKeyOrder checks what listings rely on: keys order by name, then
// revision, and split back into what made them.
func TestKeyOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		names := []string{nameGen.Draw(t, "a"), nameGen.Draw(t, "b")}
		revs := []uint64{rapid.Uint64().Draw(t, "ra"), rapid.Uint64().Draw(t, "rb")}
		channel := nameGen.Draw(t, "channel")
		want := cmp.Or(strings.Compare(names[0], names[1]), cmp.Compare(revs[0], revs[1]))

		a, b := revisionKey(prefixRevision, names[0], revs[0]), revisionKey(prefixRevision, names[1], revs[1])
		if got := bytes.Compare(a, b); got != want {
			t.Fatalf("revision keys compare %d, names and revisions %d", got, want)
		}
		ca, cb := channelKey(channel, names[0], revs[0]), channelKey(channel, names[1], revs[1])
		if got := bytes.Compare(ca, cb); got != want {
			t.Fatalf("channel keys compare %d, names and revisions %d", got, want)
		}
		name, rev, ok := parseNameRev(a[2:])
		if !ok || name != names[0] || rev != revs[0] {
			t.Fatalf("parse %q = %q, %d, %v", a, name, rev, ok)
		}
		p := namePrefix(prefixChannel, channel)
		if !bytes.HasPrefix(ca, p) {
			t.Fatalf("channel key %q outside its channel's prefix %q", ca, p)
		}
		name, rev, ok = parseNameRev(ca[len(p):])
		if !ok || name != names[0] || rev != revs[0] {
			t.Fatalf("parse %q = %q, %d, %v", ca, name, rev, ok)
		}
		// A name that extends another is outside the other's prefix.
		if !bytes.HasPrefix(a, namePrefix(prefixRevision, names[0])) ||
			bytes.HasPrefix(revisionKey(prefixRevision, names[0]+"x", 1), namePrefix(prefixRevision, names[0])) {
			t.Fatal("name prefixes overlap")
		}
	})
}

func TestChunkKey(t *testing.T) {
	id := distribution.SumChunk([]byte("chunk"))
	got, ok := chunkIDOf(chunkKey(prefixChunk, id))
	if !ok || got != id {
		t.Fatalf("chunkIDOf(chunkKey(%s)) = %s, %v", id.Short(), got.Short(), ok)
	}
	if _, ok := chunkIDOf(chunkKey(prefixChunk, id)[:20]); ok {
		t.Fatal("chunkIDOf accepted a short key")
	}
}

// recorder keeps the records slog hands it.
type recorder struct{ records []slog.Record }

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.records = append(r.records, rec)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func TestBadgerLogger(t *testing.T) {
	rec := &recorder{}
	l := badgerLogger{slog.New(rec)}
	l.Infof("Compacting %d tables\n", 3)
	l.Debugf("noise")
	l.Warningf("value log %d is large\n", 7)
	l.Errorf("cannot sync: %v", "EIO")
	var got []string
	for _, r := range rec.records {
		got = append(got, r.Level.String()+" "+r.Message)
	}
	want := []string{"WARN badger: value log 7 is large", "ERROR badger: cannot sync: EIO"}
	if !slices.Equal(got, want) {
		t.Errorf("logged %q, want %q", got, want)
	}
}
