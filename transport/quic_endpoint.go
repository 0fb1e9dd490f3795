package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/quic-go/quic-go"

	"ted/pki"
)

// Endpoint dials many sessions over one UDP socket per address family, where
// Dial opens a socket per session: a process that keeps thousands of
// sessions (a load generator standing in for a fleet of subscribers) then
// needs a few sockets, not one file descriptor and one receive goroutine
// per session. quic-go tells the sessions of a socket apart by their
// connection IDs. Its methods are safe for concurrent use.
type Endpoint struct {
	cfg QUICConfig

	mu       sync.Mutex
	closed   bool
	sockets  map[string]*endpointSocket // by network: udp4, udp6
	sessions map[*quicSession]struct{}

	closeOnce sync.Once
	closeErr  error
}

// endpointSocket is one shared socket and the quic-go transport on it.
type endpointSocket struct {
	udp *net.UDPConn
	tr  *quic.Transport
}

// errEndpointClosed is returned by Dial once Close has begun.
var errEndpointClosed = fmt.Errorf("endpoint closed: %w", net.ErrClosed)

// NewEndpoint returns an endpoint that dials with cfg. Its sockets are
// opened at the first dial to an address of their family.
func NewEndpoint(cfg QUICConfig) (*Endpoint, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Endpoint{cfg: cfg.withDefaults(), sockets: map[string]*endpointSocket{}, sessions: map[*quicSession]struct{}{}}, nil
}

// Dial is the package's Dial over the endpoint's shared socket: it connects
// to the node at addr, which must present a certificate of our CA with role
// want, and waits until that node has admitted us. Each session may use
// its own credentials. A session's Close ends that session only; the
// socket stays open for the others until the endpoint is closed.
func (e *Endpoint) Dial(ctx context.Context, addr string, cred *Credentials, want pki.Role) (Session, error) {
	raddr, err := resolveUDP(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	sock, err := e.socket(udpNetwork(raddr))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn, id, err := dialOn(ctx, sock.tr, raddr, addr, cred, want, e.cfg, ALPN)
	if err != nil {
		return nil, err
	}
	sess := newQUICSession(conn, id, nil)
	if !e.track(sess) {
		_ = conn.CloseWithError(codeShutdown, errEndpointClosed.Error())
		return nil, fmt.Errorf("dial %s: %w", addr, errEndpointClosed)
	}
	return sess, nil
}

// socket returns the shared socket of network, opening it the first time.
func (e *Endpoint) socket(network string, laddr *net.UDPAddr) (*endpointSocket, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errEndpointClosed
	}
	if s, ok := e.sockets[network]; ok {
		return s, nil
	}
	udp, err := listenUDP(network, laddr, e.cfg.Logger)
	if err != nil {
		return nil, err
	}
	s := &endpointSocket{udp: udp, tr: &quic.Transport{Conn: &sizedConn{UDPConn: udp}}}
	e.sockets[network] = s
	return s, nil
}

// track records a session until it ends, so that Close can end it; it
// reports false once the endpoint is closed.
func (e *Endpoint) track(s *quicSession) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.sessions[s] = struct{}{}
	context.AfterFunc(s.conn.Context(), func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		delete(e.sessions, s)
	})
	return true
}

// LocalAddrs are the addresses of the sockets opened so far, one per
// address family dialled.
func (e *Endpoint) LocalAddrs() []net.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []net.Addr
	for _, s := range e.sockets {
		out = append(out, s.udp.LocalAddr())
	}
	return out
}

// Close ends every session dialled through the endpoint, telling each peer
// that this node is shutting down (Transport.Close alone would drop them
// silently and leave the peers waiting for their idle timeout), then
// closes the sockets. Dials still in progress fail. It is idempotent.
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		sessions := make([]*quicSession, 0, len(e.sessions))
		for s := range e.sessions {
			sessions = append(sessions, s)
		}
		e.mu.Unlock()

		var wg sync.WaitGroup
		for _, s := range sessions {
			wg.Go(func() { _ = s.Close(ErrStopping) })
		}
		wg.Wait()
		// No socket is opened once closed is set, so the map is stable.
		var errs []error
		for _, s := range e.sockets {
			// Transport.Close also ends dials still in their handshake.
			errs = append(errs, s.tr.Close(), s.udp.Close())
		}
		if err := errors.Join(errs...); err != nil {
			e.closeErr = fmt.Errorf("close endpoint: %w", err)
		}
	})
	return e.closeErr
}
