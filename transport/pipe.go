package transport

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// NewPipe returns two sessions connected in memory, a dialled by b's peer
// and b by a's: each stream is a buffered in-memory pipe. It is the test double of the QUIC
// adapter, kept in a non-test file so every package's tests can use it.
//
// The sessions speak the newest protocol, ALPN; NewPipeSpeaking another.
func NewPipe(a, b Identity) (Session, Session) {
	return NewPipeSpeaking(a, b, ALPN)
}

// NewPipeSpeaking is NewPipe with sessions that speak protocol, as if
// the handshake had agreed on it: a test's node of an older version.
func NewPipeSpeaking(a, b Identity, protocol string) (Session, Session) {
	sa := &pipeSession{self: a, peer: b, protocol: protocol, accept: make(chan Stream)}
	sb := &pipeSession{self: b, peer: a, protocol: protocol, accept: make(chan Stream)}
	sa.other, sb.other = sb, sa
	ctx, cancel := context.WithCancelCause(context.Background())
	sa.ctx, sb.ctx = ctx, ctx
	sa.cancel, sb.cancel = cancel, cancel
	shared := &pipeStreams{open: make(map[*memStream]struct{})}
	sa.streams, sb.streams = shared, shared
	return sa, sb
}

type pipeSession struct {
	self, peer Identity
	protocol   string
	other      *pipeSession
	accept     chan Stream
	ctx        context.Context
	cancel     context.CancelCauseFunc
	streams    *pipeStreams
}

// pipeStreams tracks the open pipes of both sessions, so Close can end them.
type pipeStreams struct {
	mu     sync.Mutex
	open   map[*memStream]struct{}
	closed bool
}

func (s *pipeSession) Peer() Identity     { return s.peer }
func (s *pipeSession) RemoteAddr() string { return "pipe:" + s.peer.Name }
func (s *pipeSession) Protocol() string   { return s.protocol }
func (s *pipeSession) Context() context.Context {
	return s.ctx
}

func (s *pipeSession) OpenStream(ctx context.Context) (Stream, error) {
	mine, theirs := newMemStreams()
	s.streams.mu.Lock()
	if s.streams.closed {
		s.streams.mu.Unlock()
		return nil, s.ended()
	}
	s.streams.open[mine] = struct{}{}
	s.streams.open[theirs] = struct{}{}
	s.streams.mu.Unlock()
	select {
	case s.other.accept <- &pipeStream{memStream: theirs, set: s.streams}:
		return &pipeStream{memStream: mine, set: s.streams}, nil
	case <-ctx.Done():
	case <-s.ctx.Done():
	}
	mine.Close()
	theirs.Close()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, s.ended()
}

func (s *pipeSession) AcceptStream(ctx context.Context) (Stream, error) {
	select {
	case st := <-s.accept:
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ctx.Done():
		return nil, s.ended()
	}
}

func (s *pipeSession) ended() error {
	return fmt.Errorf("session with %s ended: %w", s.peer.Name, context.Cause(s.ctx))
}

func (s *pipeSession) Close(reason error) error {
	if reason == nil {
		reason = errors.New("closed")
	}
	cause := fmt.Errorf("%s closed the session: %w", s.self.Name, reason)
	s.cancel(cause)
	s.streams.mu.Lock()
	s.streams.closed = true
	for c := range s.streams.open {
		c.abort(cause)
	}
	clear(s.streams.open)
	s.streams.mu.Unlock()
	return nil
}

type pipeStream struct {
	*memStream
	set *pipeStreams
}

func (p *pipeStream) Close() error {
	p.set.mu.Lock()
	delete(p.set.open, p.memStream)
	p.set.mu.Unlock()
	return p.memStream.Close()
}
