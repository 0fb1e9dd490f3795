package transport

import (
	"bufio"
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
type Conn struct {
	stream Stream
	peer   string
	limit  int

	r *bufio.Reader
	// reuse: frames are read into rbuf, reused from one Receive to the
	// next (chunk streams: a Chunk's Data is valid until the next Receive),
	// so a transfer does not allocate a buffer per chunk.
	reuse bool
	rbuf  []byte

	wmu sync.Mutex
	w   *bufio.Writer
	buf []byte
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

func newConn(s Stream, peer string, limit int) *Conn {
	return &Conn{
		stream: s, peer: peer, limit: limit,
		r: bufio.NewReaderSize(s, 64<<10),
		w: bufio.NewWriterSize(s, 64<<10),
	}
}

// Close closes the stream.
func (c *Conn) Close() error { return c.stream.Close() }

// Peer names the peer in errors.
func (c *Conn) Peer() string { return c.peer }

// Send writes one message and flushes it.
func (c *Conn) Send(m Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.write(m); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("send %s to %s: %w", m.msgType(), c.peer, err)
	}
	return nil
}

// write buffers one message without flushing; the caller holds wmu.
func (c *Conn) write(m Message) error {
	if ch, ok := m.(*Chunk); ok {
		return c.writeChunk(ch)
	}
	body, err := m.appendBody(c.buf[:0])
	if err != nil {
		return fmt.Errorf("send %s to %s: %w", m.msgType(), c.peer, err)
	}
	// Keep the buffer for the next message only while it is small: one
	// large offer must not stay resident for the session's life.
	if cap(body) <= 64<<10 {
		c.buf = body[:0]
	} else {
		c.buf = nil
	}
	if len(body)+1 > c.limit {
		return fmt.Errorf("send %s to %s: %d bytes exceed the frame limit %d", m.msgType(), c.peer, len(body)+1, c.limit)
	}
	var hdr [frameHeader + 1]byte
	binary.BigEndian.PutUint32(hdr[:frameHeader], uint32(len(body)+1))
	hdr[frameHeader] = byte(m.msgType())
	if _, err := c.w.Write(hdr[:]); err != nil {
		return fmt.Errorf("send %s to %s: %w", m.msgType(), c.peer, err)
	}
	if _, err := c.w.Write(body); err != nil {
		return fmt.Errorf("send %s to %s: %w", m.msgType(), c.peer, err)
	}
	return nil
}

// writeChunk writes a chunk frame straight from its data: chunks are most
// of the bytes that travel, and copying each into a body first would cost
// a copy of everything.
func (c *Conn) writeChunk(ch *Chunk) error {
	n := 1 + len(ch.ID) + len(ch.Data)
	if n > c.limit {
		return fmt.Errorf("send chunk to %s: %d bytes exceed the frame limit %d", c.peer, n, c.limit)
	}
	var hdr [frameHeader + 1 + len(distribution.ChunkID{})]byte
	binary.BigEndian.PutUint32(hdr[:frameHeader], uint32(n))
	hdr[frameHeader] = byte(typeChunk)
	copy(hdr[frameHeader+1:], ch.ID[:])
	if _, err := c.w.Write(hdr[:]); err != nil {
		return fmt.Errorf("send chunk to %s: %w", c.peer, err)
	}
	if _, err := c.w.Write(ch.Data); err != nil {
		return fmt.Errorf("send chunk to %s: %w", c.peer, err)
	}
	return nil
}

// Receive reads the next message. io.EOF means the peer closed the stream
// cleanly between messages; a malformed frame is an error wrapping
// ErrProtocol that names the peer.
func (c *Conn) Receive() (Message, error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("receive from %s: %w", c.peer, err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || uint64(n) > uint64(c.limit) {
		return nil, fmt.Errorf("%w: receive from %s: frame of %d bytes (limit %d)", ErrProtocol, c.peer, n, c.limit)
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
		if cap(c.rbuf) < n {
			c.rbuf = make([]byte, n, max(n, 64<<10))
		}
		frame := c.rbuf[:n]
		_, err := io.ReadFull(c.r, frame)
		return frame, err
	}
	if n <= eagerFrame {
		frame := make([]byte, n)
		_, err := io.ReadFull(c.r, frame)
		return frame, err
	}
	var buf bytes.Buffer
	buf.Grow(eagerFrame)
	got, err := buf.ReadFrom(io.LimitReader(c.r, int64(n)))
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
