package distribution

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"

	chunkers "github.com/PlakarKorp/go-cdc-chunkers"
	_ "github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc" // registers the algorithm
	"github.com/klauspost/compress/zstd"
)

// Chunk sizes. The average was chosen by bench/chunksize.sh on real upgrade
// pairs (see bench/README.md): 16 KiB sent 11% fewer bytes than 32 KiB for a
// library's source upgrade and 2% fewer for a rebuilt binary, for a build
// that costs about 15% more CPU and twice the chunk references; on slow,
// costly links the bytes on the wire come first.
const (
	ChunkAvgBytes = 16 << 10
	ChunkMinBytes = ChunkAvgBytes / 4
	ChunkMaxBytes = ChunkAvgBytes * 4
)

// chunkAlgorithm names the spec-faithful, versioned FastCDC variant of the
// library, so an upgrade of the library cannot silently move chunk
// boundaries (which would make every node fetch everything again).
const chunkAlgorithm = "fastcdc-v1.0.0"

// ChunkID is the SHA-256 of a chunk's plain bytes.
type ChunkID [sha256.Size]byte

// SumChunk returns the id of plain chunk bytes.
func SumChunk(plain []byte) ChunkID { return sha256.Sum256(plain) }

// String returns the id in hex.
func (id ChunkID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits, enough to name a chunk in a message.
func (id ChunkID) Short() string { return hex.EncodeToString(id[:6]) }

// UnmarshalCBOR accepts exactly 32 bytes: a shorter byte string would let a
// small manifest decode into a much larger one.
func (id *ChunkID) UnmarshalCBOR(b []byte) error {
	// A byte string of 32 bytes is encoded as 0x58 0x20 and the bytes.
	if len(b) != 2+len(id) || b[0] != 0x58 || b[1] != byte(len(id)) {
		return fmt.Errorf("chunk id: want a byte string of %d bytes", len(id))
	}
	copy(id[:], b[2:])
	return nil
}

// ParseChunkID parses the hex form produced by String.
func ParseChunkID(s string) (ChunkID, error) {
	var id ChunkID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("chunk id %q: want %d hex digits", s, 2*len(id))
	}
	copy(id[:], b)
	return id, nil
}

// ChunkSource gives the encoded bytes of a chunk (see EncodeChunk).
type ChunkSource interface {
	// Chunk returns the encoded chunk, or an error wrapping ErrChunkMissing.
	Chunk(id ChunkID) ([]byte, error)
}

// ChunkSink accepts encoded chunks.
type ChunkSink interface {
	HasChunk(id ChunkID) (bool, error)
	// PutChunk stores a chunk. It must not keep encoded after it returns:
	// callers reuse the buffer.
	PutChunk(id ChunkID, encoded []byte) error
}

// Chunk codecs: the first byte of an encoded chunk.
const (
	codecRaw  byte = 0
	codecZstd byte = 1
)

// Errors about chunks.
var (
	ErrChunkMissing = errors.New("chunk missing")
	ErrChunkCorrupt = errors.New("chunk corrupt")
)

// zstdEncoder and zstdDecoder are safe for concurrent use through EncodeAll
// and DecodeAll; they are created on first use, not at package init.
var (
	zstdOnce    sync.Once
	zstdEncoder *zstd.Encoder
	zstdDecoder *zstd.Decoder
)

func zstdCodecs() (*zstd.Encoder, *zstd.Decoder) {
	zstdOnce.Do(func() {
		var err error
		// SpeedFastest: chunks are compressed once per build on one core and
		// the budget is 300 MB/s; the better levels cost 2-4x the CPU for a
		// few percent of size.
		zstdEncoder, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true))
		if err != nil {
			panic(fmt.Sprintf("zstd encoder: %v", err)) // only on invalid options
		}
		zstdDecoder, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(2*ChunkMaxBytes), zstd.WithDecoderMaxWindow(2*ChunkMaxBytes))
		if err != nil {
			panic(fmt.Sprintf("zstd decoder: %v", err))
		}
	})
	return zstdEncoder, zstdDecoder
}

// EncodeChunk returns the stored and transmitted form of a plain chunk: one
// codec byte, then either the zstd frame or the plain bytes, whichever is
// smaller by at least 1/32 (compression that saves less does not pay for the
// decompression at every node).
func EncodeChunk(plain []byte) []byte {
	return AppendEncodedChunk(make([]byte, 0, len(plain)+1), plain)
}

// AppendEncodedChunk appends the encoded form of plain to dst, so a caller
// can reuse one buffer for every chunk.
func AppendEncodedChunk(dst, plain []byte) []byte {
	if out, ok := appendCompressed(dst, plain); ok {
		return out
	}
	return append(append(dst, codecRaw), plain...)
}

// encodeInPlace encodes the plain chunk held in buf[1:], whose first byte
// is free for the codec: raw chunks, most of the bytes of a typical
// distribution, are then encoded without a copy. A compressed chunk is
// appended to scratch instead.
func encodeInPlace(buf, scratch []byte) (encoded, newScratch []byte) {
	if out, ok := appendCompressed(scratch[:0], buf[1:]); ok {
		return out, out
	}
	buf[0] = codecRaw
	return buf, scratch
}

// appendCompressed appends the zstd encoding of plain to dst if it pays.
func appendCompressed(dst, plain []byte) ([]byte, bool) {
	if !probablyCompressible(plain) {
		return dst, false
	}
	enc, _ := zstdCodecs()
	out := enc.EncodeAll(plain, append(dst, codecZstd))
	if len(out)-len(dst)-1 <= len(plain)-len(plain)/32 {
		return out, true
	}
	return dst, false
}

// DecodeChunk returns the plain bytes of an encoded chunk and checks them
// against id. Any mismatch is ErrChunkCorrupt.
func DecodeChunk(id ChunkID, encoded []byte) ([]byte, error) {
	if len(encoded) == 0 || len(encoded) > MaxEncodedChunkBytes {
		return nil, fmt.Errorf("%w: chunk %s: encoded size %d", ErrChunkCorrupt, id.Short(), len(encoded))
	}
	var plain []byte
	switch encoded[0] {
	case codecRaw:
		plain = encoded[1:]
	case codecZstd:
		_, dec := zstdCodecs()
		var err error
		plain, err = dec.DecodeAll(encoded[1:], make([]byte, 0, ChunkAvgBytes))
		if err != nil {
			return nil, fmt.Errorf("%w: chunk %s: %v", ErrChunkCorrupt, id.Short(), err)
		}
		if len(plain) > ChunkMaxBytes {
			return nil, fmt.Errorf("%w: chunk %s: %d plain bytes", ErrChunkCorrupt, id.Short(), len(plain))
		}
	default:
		return nil, fmt.Errorf("%w: chunk %s: unknown codec %d", ErrChunkCorrupt, id.Short(), encoded[0])
	}
	if SumChunk(plain) != id {
		return nil, fmt.Errorf("%w: chunk %s: content does not match its id", ErrChunkCorrupt, id.Short())
	}
	return plain, nil
}

// probablyCompressible is a cheap test that skips zstd for data that looks
// random (already compressed archives, media, encrypted blobs), which is most
// of the bytes in a typical software distribution. It counts byte values in
// three 1 KiB samples (start, middle, end, so one compressible header does
// not decide for a whole chunk): in 3 KiB of random bytes each value appears
// about 12 times, rarely more than 30; text and machine code repeat a few
// values far more often.
func probablyCompressible(plain []byte) bool {
	const sample = 1024
	if len(plain) < 4*sample {
		return true // small chunks: let zstd decide
	}
	var seen [256]uint16
	for _, off := range [...]int{0, len(plain)/2 - sample/2, len(plain) - sample} {
		for _, b := range plain[off : off+sample] {
			seen[b]++
		}
	}
	var maxCount uint16
	for _, n := range seen {
		maxCount = max(maxCount, n)
	}
	return maxCount > 36
}

// Chunker cuts a stream into content-defined chunks. Its buffer is reused:
// a chunk returned by Next is valid only until the next call.
type Chunker struct {
	c    *chunkers.Chunker
	done bool
}

// chunkerBufferBytes is the chunker's read buffer. The library moves the
// unread tail to the front whenever it runs short of MaxSize bytes: a buffer
// much larger than that makes those moves and the read calls rare.
const chunkerBufferBytes = 4 << 20

// NewChunker returns a chunker reading r.
func NewChunker(r io.Reader) *Chunker {
	return newChunker(r, ChunkAvgBytes)
}

// newChunker returns a chunker with the given average size (minimum avg/4,
// maximum 4*avg); only the chunk-size benchmark uses another than
// ChunkAvgBytes.
func newChunker(r io.Reader, avg int) *Chunker {
	opts := &chunkers.ChunkerOpts{MinSize: avg / 4, NormalSize: avg, MaxSize: avg * 4}
	c, err := chunkers.NewChunkerBuffer(chunkAlgorithm, r, opts, make([]byte, max(chunkerBufferBytes, 2*avg*4)))
	if err != nil {
		panic(fmt.Sprintf("chunker %s, average %d: %v", chunkAlgorithm, avg, err)) // only on invalid sizes
	}
	return &Chunker{c: c}
}

// Reset makes the chunker read r from its start, keeping its buffer.
func (c *Chunker) Reset(r io.Reader) {
	c.c.Reset(r)
	c.done = false
}

// Next returns the next chunk, or io.EOF after the last one.
func (c *Chunker) Next() ([]byte, error) {
	if c.done {
		return nil, io.EOF
	}
	chunk, err := c.c.Next()
	switch {
	case err == io.EOF:
		// The library returns the final chunk together with io.EOF.
		c.done = true
		if len(chunk) == 0 {
			return nil, io.EOF
		}
		return chunk, nil
	case err != nil:
		return nil, err
	}
	return chunk, nil
}
