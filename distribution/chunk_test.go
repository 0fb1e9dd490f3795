package distribution

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func chunkAll(t interface{ Fatal(...any) }, data []byte) [][]byte {
	c := NewChunker(bytes.NewReader(data))
	var out [][]byte
	for {
		chunk, err := c.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(chunk))
	}
}

func TestEncodeDecodeChunk(t *testing.T) {
	tests := []struct {
		name  string
		plain []byte
		codec byte
	}{
		{"text compresses", []byte(strings.Repeat("all work and no play makes ted a dull boy\n", 800)), codecZstd},
		{"random stays raw", randomBytes(1, 64<<10), codecRaw},
		{"tiny random stays raw", randomBytes(2, 100), codecRaw},
		{"one byte", []byte{7}, codecRaw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := SumChunk(tt.plain)
			enc := EncodeChunk(tt.plain)
			if enc[0] != tt.codec {
				t.Fatalf("codec %d, want %d", enc[0], tt.codec)
			}
			if tt.codec == codecZstd && len(enc) >= len(tt.plain) {
				t.Fatalf("compressed %d bytes to %d", len(tt.plain), len(enc))
			}
			got, err := DecodeChunk(id, enc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.plain) {
				t.Fatal("round trip changed the bytes")
			}
			bad := bytes.Clone(enc)
			bad[len(bad)-1] ^= 1
			if _, err := DecodeChunk(id, bad); !errors.Is(err, ErrChunkCorrupt) {
				t.Fatalf("flipped byte: err %v, want ErrChunkCorrupt", err)
			}
		})
	}
}

func TestDecodeChunkRejects(t *testing.T) {
	id := SumChunk([]byte("x"))
	for name, enc := range map[string][]byte{
		"empty":         nil,
		"unknown codec": {9, 'x'},
		"bad zstd":      {codecZstd, 1, 2, 3, 4},
		"oversized":     make([]byte, MaxEncodedChunkBytes+1),
	} {
		if _, err := DecodeChunk(id, enc); !errors.Is(err, ErrChunkCorrupt) {
			t.Errorf("%s: err %v, want ErrChunkCorrupt", name, err)
		}
	}
}

func TestParseChunkID(t *testing.T) {
	id := SumChunk([]byte("hello"))
	got, err := ParseChunkID(id.String())
	if err != nil || got != id {
		t.Fatalf("ParseChunkID(%s) = %v, %v", id, got, err)
	}
	for _, bad := range []string{"", "zz", id.String()[:10]} {
		if _, err := ParseChunkID(bad); err == nil {
			t.Errorf("ParseChunkID(%q) accepted", bad)
		}
	}
}

// The chunks of any input concatenate back to it, and every chunk but the
// last respects the size bounds.
func TestChunkerConcatenatesProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, 3*ChunkMaxBytes).Draw(t, "size")
		data := randomBytes(rapid.Uint64().Draw(t, "seed"), n)
		if rapid.Bool().Draw(t, "low entropy") {
			for i := range data {
				data[i] &= 0x3
			}
		}
		chunks := chunkAll(t, data)
		if got := bytes.Join(chunks, nil); !bytes.Equal(got, data) {
			t.Fatalf("chunks of %d bytes concatenate to %d different bytes", n, len(got))
		}
		for i, c := range chunks {
			if len(c) > ChunkMaxBytes || (i < len(chunks)-1 && len(c) < ChunkMinBytes) {
				t.Fatalf("chunk %d of %d has %d bytes", i, len(chunks), len(c))
			}
		}
	})
}

// An insertion moves only the chunk boundaries near it: all chunks before
// it and all but a few after it are unchanged.
func TestChunkerInsertionIsLocalProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		data := randomBytes(rapid.Uint64().Draw(t, "seed"), 1<<20)
		at := rapid.IntRange(0, len(data)).Draw(t, "at")
		insert := randomBytes(rapid.Uint64().Draw(t, "insert seed"), rapid.IntRange(1, 512).Draw(t, "insert size"))
		changed := append(append(bytes.Clone(data[:at]), insert...), data[at:]...)

		before := make(map[ChunkID]bool)
		for _, c := range chunkAll(t, data) {
			before[SumChunk(c)] = true
		}
		// The chunk holding the insertion changes, and the cut points after
		// it may differ for a few chunks before they line up again; all new
		// chunks lie in that window and everything else is shared.
		lo, hi := at-ChunkMaxBytes, at+len(insert)+3*ChunkMaxBytes
		fresh, offset := 0, 0
		for _, c := range chunkAll(t, changed) {
			if !before[SumChunk(c)] {
				fresh++
				if offset < lo || offset+len(c) > hi {
					t.Fatalf("inserting %d bytes at %d changed the chunk at %d..%d", len(insert), at, offset, offset+len(c))
				}
			}
			offset += len(c)
		}
		if fresh == 0 {
			t.Fatalf("inserting %d bytes at %d changed no chunk", len(insert), at)
		}
	})
}

func TestProbablyCompressible(t *testing.T) {
	if probablyCompressible(randomBytes(3, ChunkAvgBytes)) {
		t.Error("random bytes judged compressible")
	}
	if !probablyCompressible(bytes.Repeat([]byte("ELF\x00\x01\x02 text and code "), ChunkAvgBytes/20)) {
		t.Error("repetitive bytes judged incompressible")
	}
}
