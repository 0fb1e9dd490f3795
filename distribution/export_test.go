package distribution

import (
	"bytes"
	"io"
)

// ChunkWithAverage cuts r with the same algorithm as Chunker but another
// average size. It exists for the chunk-size benchmark that chose
// ChunkAvgBytes; distributions always use NewChunker.
func ChunkWithAverage(r io.Reader, avg int) [][]byte {
	c := newChunker(r, avg)
	var out [][]byte
	for {
		chunk, err := c.Next()
		if err != nil { // io.EOF: the reader is in memory
			return out
		}
		out = append(out, bytes.Clone(chunk))
	}
}
