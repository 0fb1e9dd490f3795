package storetest

import (
	"crypto/ed25519"
	"math/rand/v2"
	"slices"
	"testing"

	"ted/distribution"
	"ted/store"
)

// Chunk is a chunk made for a test.
type Chunk struct {
	ID distribution.ChunkID
	// Size is the plain size, what a manifest's reference carries.
	Size uint32
	// Encoded is what a store holds (distribution.EncodeChunk).
	Encoded []byte
}

// RandomChunks returns n chunks of random bytes from src, each of minSize to
// maxSize plain bytes. Random bytes do not compress, so Encoded is one byte
// longer than the plain chunk.
func RandomChunks(src *rand.ChaCha8, n, minSize, maxSize int) []Chunk {
	sizes := rand.New(src)
	chunks := make([]Chunk, n)
	for i := range chunks {
		plain := make([]byte, minSize+sizes.IntN(maxSize-minSize+1))
		_, _ = src.Read(plain) // never fails
		chunks[i] = Chunk{
			ID:      distribution.SumChunk(plain),
			Size:    uint32(len(plain)),
			Encoded: distribution.EncodeChunk(plain),
		}
	}
	return chunks
}

// PutChunks stores chunks in s.
func PutChunks(t testing.TB, s store.Store, chunks []Chunk) {
	t.Helper()
	for _, c := range chunks {
		if err := s.PutChunk(c.ID, c.Encoded); err != nil {
			t.Fatal(err)
		}
	}
}

// Bytes is the encoded size of chunks.
func Bytes(chunks []Chunk) int64 {
	var n int64
	for _, c := range chunks {
		n += int64(len(c.Encoded))
	}
	return n
}

// testKey signs every test revision: a fixed seed, so runs are repeatable.
var testKey = ed25519.NewKeyFromSeed([]byte("ted store conformance test key!!"))

// SignedRevision returns revision rev of name, published into channels and
// signed with a test key. Its content is a directory holding two files that
// reference chunks in order (the first half, the rest; repeats allowed) and
// a symlink.
func SignedRevision(t testing.TB, name string, rev uint64, channels []string, chunks []Chunk) (*distribution.Signed, *distribution.Manifest) {
	t.Helper()
	half := len(chunks) / 2
	m := &distribution.Manifest{
		Format:   distribution.ManifestFormat,
		Name:     name,
		Revision: rev,
		Version:  "1.0.0",
		Channels: slices.Sorted(slices.Values(channels)),
		Kind:     distribution.KindFiles,
		Target:   "opt/" + name,
		Created:  1_700_000_000 + int64(rev),
		Entries: []distribution.Entry{
			{Path: "d", Type: distribution.TypeDir, Mode: 0o755},
			fileEntry("d/a", chunks[:half]),
			fileEntry("d/b", chunks[half:]),
			{Path: "link", Type: distribution.TypeSymlink, Mode: 0o777, Target: "d/a"},
		},
	}
	s, err := distribution.Sign(m, testKey)
	if err != nil {
		t.Fatalf("sign %s@%d: %v", name, rev, err)
	}
	return s, m
}

func fileEntry(path string, chunks []Chunk) distribution.Entry {
	e := distribution.Entry{Path: path, Type: distribution.TypeFile, Mode: 0o644}
	for _, c := range chunks {
		e.Chunks = append(e.Chunks, distribution.ChunkRef{ID: c.ID, Size: c.Size})
		e.Size += int64(c.Size)
	}
	return e
}
