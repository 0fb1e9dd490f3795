package transport

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"ted/distribution"
)

// A frame is a 4-byte big-endian length n, then n bytes: one type byte and
// the message body. Chunk frames carry the chunk id and its encoded bytes
// as they are; every other body is canonical CBOR.
const frameHeader = 4

// Frame size limits, checked before a frame is allocated.
const (
	// maxControlFrame bounds a control-stream message: an offer carries a
	// compressed manifest envelope, which is at most a little more than
	// distribution.MaxManifestBytes.
	maxControlFrame = distribution.MaxManifestBytes + 1<<20
	// maxChunkFrame bounds a chunk-stream message: one encoded chunk with
	// its id, or a want of MaxWantIDs ids.
	maxChunkFrame = 1 + len(distribution.ChunkID{}) + distribution.MaxEncodedChunkBytes
)

// Conn reads and writes framed messages on one stream. Reads and writes may
// run concurrently with each other; concurrent writes are serialised.
//
// A Conn holds no buffer of its own while idle: a distributor keeps the
// control stream of every child open, and at 10,000 children a pair of
// buffers per Conn was most of its heap. QUIC streams buffer already, so a
// frame is read straight from the stream, header then body, and written
// with one Write from a pooled buffer (a chunk: its header, then its data
// as it is).
type Conn struct {
	stream Stream
	peer   string
	limit  int
	// recvLimit, if not 0, bounds what Receive takes, below limit: the
	// serving end of a chunk stream receives wants only.
	recvLimit int

	// hdr receives a frame's length; a field, not a local, so that
	// handing it to the stream's Read does not allocate per frame.
	hdr [frameHeader]byte
	// reuse: frames are read into rbuf, reused from one Receive to the
	// next (chunk streams: a Chunk's Data is valid until the next Receive),
	// so a transfer does not allocate a buffer per chunk.
	reuse bool
	rbuf  []byte

	wmu  sync.Mutex
	whdr [frameHeader + 1 + len(distribution.ChunkID{})]byte
}

// NewControlConn frames the control stream of a session with peer.
func NewControlConn(s Stream, peer string) *Conn { return newConn(s, peer, maxControlFrame) }

// NewChunkConn frames a chunk stream of a session with peer. The Data of a
// Chunk it receives is valid only until the next Receive: the buffer is
// reused.
func NewChunkConn(s Stream, peer string) *Conn {
	c := newConn(s, peer, maxChunkFrame)
	c.reuse = true
	return c
}

// newWantConn frames the serving end of a chunk stream: it sends chunks
// and receives wants, so a peer cannot make it take a frame larger than
// the largest want.
func newWantConn(s Stream, peer string) *Conn {
	c := NewChunkConn(s, peer)
	c.recvLimit = maxWantFrame
	return c
}

// maxWantFrame bounds a want's frame: its type byte and the CBOR of
// MaxWantIDs ids of 32 bytes (2 bytes of header each), with room for the
// array's and the message's own headers.
const maxWantFrame = 1 + MaxWantIDs*(2+len(distribution.ChunkID{})) + 64

func newConn(s Stream, peer string, limit int) *Conn {
	return &Conn{stream: s, peer: peer, limit: limit}
}

// Close closes the stream.
func (c *Conn) Close() error { return c.stream.Close() }

// Peer names the peer in errors.
func (c *Conn) Peer() string { return c.peer }

// Send writes one message.
func (c *Conn) Send(m Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch m := m.(type) {
	case *Chunk:
		return c.writeChunk(m)
	case *Prepared:
		return c.writeFrame(m.t, m.frame)
	}
	bp := framePool.Get().(*[]byte)
	defer putFrame(bp)
	frame, err := m.appendBody(append((*bp)[:0], make([]byte, frameHeader+1)...))
	if err != nil {
		return fmt.Errorf("send %s to %s: %w", m.msgType(), c.peer, err)
	}
	*bp = frame
	return c.writeFrame(m.msgType(), fillHeader(frame, m.msgType()))
}

// writeFrame writes a whole frame, header included; the caller holds wmu.
func (c *Conn) writeFrame(t msgType, frame []byte) error {
	if n := len(frame) - frameHeader; n > c.limit {
		return fmt.Errorf("send %s to %s: %d bytes exceed the frame limit %d", t, c.peer, n, c.limit)
	}
	if _, err := c.stream.Write(frame); err != nil {
		return fmt.Errorf("send %s to %s: %w", t, c.peer, err)
	}
	return nil
}

// fillHeader writes the length and type into the first frameHeader+1
// bytes of frame, which hold the body after them.
func fillHeader(frame []byte, t msgType) []byte {
	binary.BigEndian.PutUint32(frame[:frameHeader], uint32(len(frame)-frameHeader))
	frame[frameHeader] = byte(t)
	return frame
}

// framePool holds the buffers messages are encoded into, between sends.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooledFrame is the largest buffer kept for the next message: one large
// offer must not stay resident.
const maxPooledFrame = 64 << 10

func putFrame(bp *[]byte) {
	if cap(*bp) <= maxPooledFrame {
		*bp = (*bp)[:0]
		framePool.Put(bp)
	}
}

// Prepared is a message encoded once and sent as it is to any number of
// peers: a distributor offers one revision to every child, and encoding
// (zstd, for an offer) once per child would cost a compression per child
// per revision.
type Prepared struct {
	t     msgType
	frame []byte // header, type and body
}

// Prepare encodes m for Send.
func Prepare(m Message) (*Prepared, error) {
	if p, ok := m.(*Prepared); ok {
		return p, nil
	}
	frame, err := m.appendBody(make([]byte, frameHeader+1))
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.msgType(), err)
	}
	return &Prepared{t: m.msgType(), frame: fillHeader(frame, m.msgType())}, nil
}

func (p *Prepared) msgType() msgType { return p.t }

func (p *Prepared) appendBody(dst []byte) ([]byte, error) {
	return append(dst, p.frame[frameHeader+1:]...), nil
}

// Size is the encoded size of the frame in bytes.
func (p *Prepared) Size() int { return len(p.frame) }

// writeChunk writes a chunk frame straight from its data: chunks are most
// of the bytes that travel, and copying each into a body first would cost
// a copy of everything. The caller holds wmu.
func (c *Conn) writeChunk(ch *Chunk) error {
	n := 1 + len(ch.ID) + len(ch.Data)
	if n > c.limit {
		return fmt.Errorf("send chunk to %s: %d bytes exceed the frame limit %d", c.peer, n, c.limit)
	}
	hdr := c.whdr[:]
	binary.BigEndian.PutUint32(hdr[:frameHeader], uint32(n))
	hdr[frameHeader] = byte(typeChunk)
	copy(hdr[frameHeader+1:], ch.ID[:])
	if _, err := c.stream.Write(hdr); err != nil {
		return fmt.Errorf("send chunk to %s: %w", c.peer, err)
	}
	if _, err := c.stream.Write(ch.Data); err != nil {
		return fmt.Errorf("send chunk to %s: %w", c.peer, err)
	}
	return nil
}

// Receive reads the next message. io.EOF means the peer closed the stream
// cleanly between messages; a malformed frame is an error wrapping
// ErrProtocol that names the peer.
func (c *Conn) Receive() (Message, error) {
	hdr := c.hdr[:]
	if _, err := io.ReadFull(c.stream, hdr); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("receive from %s: %w", c.peer, err)
	}
	n := binary.BigEndian.Uint32(hdr)
	limit := c.limit
	if c.recvLimit > 0 {
		limit = c.recvLimit
	}
	if n == 0 || uint64(n) > uint64(limit) {
		return nil, fmt.Errorf("%w: receive from %s: frame of %d bytes (limit %d)", ErrProtocol, c.peer, n, limit)
	}
	frame, err := c.readFrame(int(n))
	if err != nil {
		return nil, fmt.Errorf("receive from %s: %w", c.peer, noEOF(err))
	}
	m, err := decodeMessage(msgType(frame[0]), frame[1:])
	if err != nil {
		return nil, fmt.Errorf("%w: receive from %s: %v", ErrProtocol, c.peer, err)
	}
	return m, nil
}

// eagerFrame is the largest frame allocated whole before its bytes arrive;
// a larger one (only offers can be) grows as its bytes come, so a peer that
// announces 256 MiB and sends nothing costs nothing.
const eagerFrame = 1 << 20

func (c *Conn) readFrame(n int) ([]byte, error) {
	if c.reuse && n <= eagerFrame {
		// Grown to the largest frame seen, not more: the stream that
		// serves wants holds a want's size, the one that fetches a
		// chunk's.
		if cap(c.rbuf) < n {
			c.rbuf = make([]byte, n)
		}
		frame := c.rbuf[:n]
		_, err := io.ReadFull(c.stream, frame)
		return frame, err
	}
	if n <= eagerFrame {
		frame := make([]byte, n)
		_, err := io.ReadFull(c.stream, frame)
		return frame, err
	}
	var buf bytes.Buffer
	buf.Grow(eagerFrame)
	got, err := buf.ReadFrom(io.LimitReader(c.stream, int64(n)))
	if err == nil && got < int64(n) {
		err = io.ErrUnexpectedEOF
	}
	return buf.Bytes(), err
}

// noEOF turns an EOF inside a frame into ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
