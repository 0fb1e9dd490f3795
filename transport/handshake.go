package transport

import (
	"context"
	"fmt"
	"time"
)

// HandshakeTimeout bounds the hello/welcome exchange, so a peer that
// connects and says nothing does not hold a slot.
const HandshakeTimeout = 15 * time.Second

// closeOnDone closes c when ctx ends before stop is called: stream reads do
// not take a context.
func closeOnDone(ctx context.Context, c *Conn) (stop func() bool) {
	return context.AfterFunc(ctx, func() { c.Close() })
}

// ClientHello opens the control stream of a dialled session and introduces this
// node. It returns the control stream and the peer's welcome, or the peer's
// refusal as an error naming the peer.
func ClientHello(ctx context.Context, sess Session, hello *Hello) (*Conn, *Welcome, error) {
	ctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	peer := sess.Peer().Name
	st, err := sess.OpenStream(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open control stream to %s: %w", peer, err)
	}
	c := NewControlConn(st, peer)
	stop := closeOnDone(ctx, c)
	defer stop()
	if err := c.Send(hello); err != nil {
		c.Close()
		return nil, nil, handshakeFailed(ctx, peer, err)
	}
	m, err := c.Receive()
	if err != nil {
		c.Close()
		return nil, nil, handshakeFailed(ctx, peer, err)
	}
	switch m := m.(type) {
	case *Welcome:
		if m.Name != peer {
			c.Close()
			return nil, nil, fmt.Errorf("%w: %s welcomed us as %q", ErrProtocol, peer, m.Name)
		}
		if err := CheckAgents(hello.Name, hello.Agent, m.Name, m.Agent); err != nil {
			// A parent of an older version may not check: the child does.
			c.Close()
			return nil, nil, err
		}
		if !stop() {
			// The deadline fired as the welcome arrived and closed the
			// stream: this handshake failed after all.
			return nil, nil, handshakeFailed(ctx, peer, context.DeadlineExceeded)
		}
		return c, m, nil
	case *Error:
		c.Close()
		return nil, nil, remote(peer, m)
	default:
		c.Close()
		return nil, nil, fmt.Errorf("%w: %s answered hello with %s", ErrProtocol, peer, m.msgType())
	}
}

// ServerHello accepts the control stream of a session that a peer dialled,
// reads its hello, and answers with welcome if check accepts it, or with
// check's error, which is then returned too. The hello's name must be the
// name in the peer's certificate.
func ServerHello(ctx context.Context, sess Session, welcome *Welcome, check func(*Hello) error) (*Conn, *Hello, error) {
	ctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	peer := sess.Peer().Name
	st, err := sess.AcceptStream(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("accept control stream from %s: %w", peer, err)
	}
	c := NewControlConn(st, peer)
	stop := closeOnDone(ctx, c)
	defer stop()
	m, err := c.Receive()
	if err != nil {
		c.Close()
		return nil, nil, handshakeFailed(ctx, peer, err)
	}
	hello, ok := m.(*Hello)
	if !ok {
		err := fmt.Errorf("%w: %s opened with %s, not hello", ErrProtocol, peer, m.msgType())
		refuse(c, err)
		return nil, nil, err
	}
	if hello.Name != peer {
		err := fmt.Errorf("%w: %s introduced itself as %q", ErrUnauthorized, peer, hello.Name)
		refuse(c, err)
		return nil, nil, err
	}
	if err := CheckAgents(welcome.Name, welcome.Agent, hello.Name, hello.Agent); err != nil {
		refuse(c, err)
		return nil, nil, err
	}
	if err := check(hello); err != nil {
		refuse(c, err)
		return nil, nil, err
	}
	if err := c.Send(welcome); err != nil {
		c.Close()
		return nil, nil, handshakeFailed(ctx, peer, err)
	}
	if !stop() {
		return nil, nil, handshakeFailed(ctx, peer, context.DeadlineExceeded)
	}
	return c, hello, nil
}

// handshakeFailed reports a failed read or write of the handshake, as the
// deadline if that is what closed the stream under it (closeOnDone).
func handshakeFailed(ctx context.Context, peer string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("handshake with %s: %w", peer, ctx.Err())
	}
	return fmt.Errorf("handshake: %w", err)
}

// refuse tells the peer why and closes the stream.
func refuse(c *Conn, err error) {
	_ = c.Send(ErrorOf(err))
	c.Close()
}
