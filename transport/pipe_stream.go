package transport

import (
	"io"
	"sync"
)

// halfPipe is one direction of an in-memory stream: writes never block
// (a QUIC stream buffers too, within its window), reads wait for data.
type halfPipe struct {
	mu   sync.Mutex
	cond *sync.Cond
	buf  []byte
	// eof: the writer closed; readers get what is buffered, then io.EOF.
	eof bool
	// gone: the reader closed; writes fail, reads fail (with cause, if
	// the session ended).
	gone  bool
	cause error
}

func newHalfPipe() *halfPipe {
	h := &halfPipe{}
	h.cond = sync.NewCond(&h.mu)
	return h
}

func (h *halfPipe) read(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.buf) == 0 && !h.eof && !h.gone {
		h.cond.Wait()
	}
	switch {
	case h.gone && h.cause != nil:
		return 0, h.cause
	case h.gone:
		return 0, io.ErrClosedPipe
	case len(h.buf) == 0:
		return 0, io.EOF
	}
	n := copy(p, h.buf)
	h.buf = h.buf[n:]
	if len(h.buf) == 0 {
		h.buf = nil // let a drained buffer go
	}
	return n, nil
}

func (h *halfPipe) write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gone && h.cause != nil {
		return 0, h.cause
	}
	if h.gone || h.eof {
		return 0, io.ErrClosedPipe
	}
	h.buf = append(h.buf, p...)
	h.cond.Broadcast()
	return len(p), nil
}

// closeWrite ends the direction after what is buffered.
func (h *halfPipe) closeWrite() {
	h.mu.Lock()
	h.eof = true
	h.cond.Broadcast()
	h.mu.Unlock()
}

// closeRead drops the direction: pending and later reads and writes fail,
// with cause if it is not nil.
func (h *halfPipe) closeRead(cause error) {
	h.mu.Lock()
	h.gone = true
	if h.cause == nil {
		h.cause = cause
	}
	h.buf = nil
	h.cond.Broadcast()
	h.mu.Unlock()
}

// memStream is one end of an in-memory stream pair.
type memStream struct {
	in, out   *halfPipe
	closeOnce sync.Once
}

// newMemStreams returns the two ends of a buffered in-memory stream.
func newMemStreams() (*memStream, *memStream) {
	ab, ba := newHalfPipe(), newHalfPipe()
	return &memStream{in: ba, out: ab}, &memStream{in: ab, out: ba}
}

func (s *memStream) Read(p []byte) (int, error)  { return s.in.read(p) }
func (s *memStream) Write(p []byte) (int, error) { return s.out.write(p) }

// Close ends both directions as a QUIC stream's Close does: what was
// written is still delivered, and this end reads no more.
func (s *memStream) Close() error {
	s.closeOnce.Do(func() {
		s.out.closeWrite()
		s.in.closeRead(nil)
	})
	return nil
}

// abort drops both directions at once, as a session that ends does: reads
// and writes then fail with cause, as a QUIC stream's do with the
// session's close reason.
func (s *memStream) abort(cause error) {
	s.out.closeRead(cause)
	s.in.closeRead(cause)
}
