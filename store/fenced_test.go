package store

import (
	"errors"
	"testing"

	"ted/distribution"
)

// TestFenced checks that every change to a fenced store asks the fence
// first and makes no change when it refuses, and that reads still work.
func TestFenced(t *testing.T) {
	st, err := Open(t.TempDir(), Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	errStale := errors.New("stale")
	var refuse bool
	calls := 0
	f := Fenced(st, func() error {
		calls++
		if refuse {
			return errStale
		}
		return nil
	})
	plain := []byte("chunk content")
	enc, id := distribution.EncodeChunk(plain), distribution.SumChunk(plain)
	if err := f.PutChunk(id, enc); err != nil || calls != 1 {
		t.Fatalf("put while allowed: %v, %d fence calls", err, calls)
	}
	refuse = true
	plain2 := []byte("another chunk")
	enc2, id2 := distribution.EncodeChunk(plain2), distribution.SumChunk(plain2)
	checks := []struct {
		name string
		do   func() error
	}{
		{"PutChunk", func() error { return f.PutChunk(id2, enc2) }},
		{"AddRevision", func() error { _, err := f.AddRevision(&distribution.Signed{}, &distribution.Manifest{}); return err }},
		{"Prune", func() error { _, err := f.Prune("app", 1); return err }},
		{"RepairChunk", func() error { return f.RepairChunk(id, enc) }},
		{"Sync", func() error { return f.Sync() }},
		{"Close", func() error { return f.Close() }},
	}
	for _, c := range checks {
		if err := c.do(); !errors.Is(err, errStale) {
			t.Errorf("%s while fenced: %v, want the fence's error", c.name, err)
		}
	}
	if ok, err := st.HasChunk(id2); err != nil || ok {
		t.Fatalf("a refused PutChunk stored its chunk (%v, %v)", ok, err)
	}
	// Reads pass, and the refused Close left the store open.
	if ok, err := f.HasChunk(id); err != nil || !ok {
		t.Fatalf("read through the fence: %v, %v", ok, err)
	}
}
