package distribution

import (
	"bytes"
	"fmt"
	"io"

	chunkers "github.com/PlakarKorp/go-cdc-chunkers"
)

// ChunkWithAverage cuts r with the same algorithm as Chunker but another
// average size (minimum avg/4, maximum 4*avg). It exists for the chunk-size
// benchmark that chose ChunkAvgBytes; distributions always use Chunker.
func ChunkWithAverage(r io.Reader, avg int) [][]byte {
	opts := &chunkers.ChunkerOpts{MinSize: avg / 4, NormalSize: avg, MaxSize: avg * 4}
	c, err := chunkers.NewChunker(chunkAlgorithm, r, opts)
	if err != nil {
		panic(fmt.Sprintf("chunker with average %d: %v", avg, err))
	}
	var out [][]byte
	for {
		chunk, err := c.Next()
		if len(chunk) > 0 {
			out = append(out, bytes.Clone(chunk))
		}
		if err != nil {
			return out
		}
	}
}
