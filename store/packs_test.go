package store

import (
	"bytes"
	"path/filepath"
	"testing"

	"ted/distribution"
)

func testChunk(i int) (distribution.ChunkID, []byte) {
	plain := bytes.Repeat([]byte{byte(i), byte(i >> 8), 7}, 700+i%300)
	return distribution.SumChunk(plain), distribution.EncodeChunk(plain)
}

// A failed pack write loses only the chunks not yet durable: they are no
// longer reported as stored, later puts go to a new pack, and the store
// carries on without a restart.
func TestPackWriteFailureIsRecovered(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := s.engine.(*badgerEngine)

	durableID, durable := testChunk(1)
	if err := s.PutChunk(durableID, durable); err != nil {
		t.Fatal(err)
	}
	if err := e.flushIndex(); err != nil {
		t.Fatal(err)
	}
	lostID, lost := testChunk(2)
	if err := s.PutChunk(lostID, lost); err != nil {
		t.Fatal(err)
	}
	// Break the pack being written: its buffered tail cannot be written.
	failedPack := e.packs.curID
	e.packs.cur.Close()
	if err := e.flushIndex(); err == nil {
		t.Fatal("flushIndex succeeded with a closed pack")
	}
	if ok, _ := s.HasChunk(lostID); ok {
		t.Fatal("a chunk whose write failed is still reported as stored")
	}
	if e.packs.curID == failedPack {
		t.Fatal("no new pack after the failure")
	}
	// The store goes on: the lost chunk can be put again, and everything
	// durable before the failure is still there.
	if err := s.PutChunk(lostID, lost); err != nil {
		t.Fatal(err)
	}
	if err := e.flushIndex(); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[distribution.ChunkID][]byte{durableID: durable, lostID: lost} {
		got, err := s.Chunk(id)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("chunk %s after recovery: %v", id.Short(), err)
		}
	}
	if files, _ := filepath.Glob(filepath.Join(dir, packsDir, "*.pack")); len(files) != 2 {
		t.Fatalf("packs %v, want the failed one and its successor", files)
	}
}
