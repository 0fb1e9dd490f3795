package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"

	"github.com/quic-go/quic-go"

	"ted/pki"
)

// Dial connects to the node at addr ("host:port"), which must present a
// certificate of our CA with role want, and waits until that node has
// admitted us. A refusal, of our certificate, our version or our identity,
// is returned with the peer's reason.
//
// The session has a UDP socket of its own, closed when the session ends.
func Dial(ctx context.Context, addr string, cred *Credentials, want pki.Role, cfg QUICConfig) (Session, error) {
	return dial(ctx, addr, cred, want, cfg, ALPN)
}

// dial is Dial speaking protocol alpn, so tests can pretend to be another
// version.
func dial(ctx context.Context, addr string, cred *Credentials, want pki.Role, cfg QUICConfig, alpn string) (Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	raddr, tr, release, err := dialSocket(ctx, addr, cfg)
	if err != nil {
		return nil, err
	}
	conn, id, err := dialOn(ctx, tr, raddr, addr, cred, want, cfg, alpn)
	if err != nil {
		release()
		return nil, err
	}
	return newQUICSession(conn, id, release), nil
}

// dialSocket resolves addr and opens a UDP socket of its own, wrapped in a
// quic.Transport, to dial it from; release closes both, once.
func dialSocket(ctx context.Context, addr string, cfg QUICConfig) (*net.UDPAddr, *quic.Transport, func(), error) {
	raddr, err := resolveUDP(ctx, addr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	network, laddr := udpNetwork(raddr)
	udp, err := listenUDP(network, laddr, cfg.Logger)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	tr := &quic.Transport{Conn: &sizedConn{UDPConn: udp}}
	var once sync.Once
	release := func() {
		once.Do(func() {
			// Transport.Close leaves the socket open, since we created it.
			_ = tr.Close()
			_ = udp.Close()
		})
	}
	return raddr, tr, release, nil
}

// udpNetwork is the socket family that reaches raddr, and the unspecified
// local address of that family.
func udpNetwork(raddr *net.UDPAddr) (string, *net.UDPAddr) {
	if raddr.IP.To4() == nil {
		return "udp6", &net.UDPAddr{IP: net.IPv6unspecified}
	}
	return "udp4", &net.UDPAddr{IP: net.IPv4zero}
}

// dialOn runs the handshake with the node at raddr (addr as the caller
// gave it, for errors) over tr and waits for its admission: what Dial and
// Endpoint.Dial share. On failure the connection is closed; tr, whoever
// owns it, is left as it was.
func dialOn(ctx context.Context, tr *quic.Transport, raddr *net.UDPAddr, addr string, cred *Credentials, want pki.Role, cfg QUICConfig, alpn string) (*quic.Conn, Identity, error) {
	var failed verifyFailure
	conn, err := tr.Dial(ctx, raddr, cred.clientTLS(addr, want, alpn, &failed), cfg.quicConfig(true))
	if err != nil {
		if verr := failed.get(); verr != nil {
			return nil, Identity{}, fmt.Errorf("dial %s: %w", addr, verr)
		}
		// A refusal can overtake the end of our handshake: the listener
		// closes as soon as it has our certificate.
		if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote && ae.ErrorCode == codeRefused {
			return nil, Identity{}, fmt.Errorf("dial %s (%s): %w", addr, failed.peer(), &RefusedError{Message: ae.ErrorMessage})
		}
		return nil, Identity{}, fmt.Errorf("dial %s: %w", addr, explainDialError(err, alpn))
	}
	id, err := peerIdentity(conn)
	if err != nil {
		_ = conn.CloseWithError(codeProtocol, "cannot read your certificate")
		return nil, Identity{}, fmt.Errorf("dial %s: %w", addr, err)
	}
	if err := awaitAdmission(ctx, conn, cfg, alpn); err != nil {
		_ = conn.CloseWithError(codeProtocol, "not admitted")
		return nil, Identity{}, fmt.Errorf("dial %s (%s): %w", addr, id.Name, err)
	}
	return conn, id, nil
}

// awaitAdmission waits for the listener's admission notice, see admitted.
// The listener sends it as soon as it has the handshake, but a busy one
// first holds the end of the handshake for up to its handshake timeout
// (Listener.holdTicket): twice the handshake timeout covers both.
func awaitAdmission(ctx context.Context, conn *quic.Conn, cfg QUICConfig, alpn string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*cfg.HandshakeIdleTimeout)
	defer cancel()
	st, err := conn.AcceptUniStream(ctx)
	if err != nil {
		if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote && ae.ErrorCode == codeRefused {
			return &RefusedError{Message: ae.ErrorMessage}
		}
		if explained := explainDialError(err, alpn); explained != err {
			return explained
		}
		return fmt.Errorf("wait for admission: %w", err)
	}
	deadline, _ := ctx.Deadline()
	if err := st.SetReadDeadline(deadline); err != nil {
		return fmt.Errorf("wait for admission: %w", err)
	}
	// The notice is one byte and FIN: asking for two must end early.
	var notice [2]byte
	n, err := io.ReadFull(st, notice[:])
	if !errors.Is(err, io.ErrUnexpectedEOF) || n != 1 || notice[0] != admitted {
		return fmt.Errorf("wait for admission: got % x, %v; is the peer a TED node of this version?", notice[:n], err)
	}
	return nil
}

// resolveUDP resolves addr within ctx, which net.ResolveUDPAddr cannot.
func resolveUDP(ctx context.Context, addr string) (*net.UDPAddr, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return nil, err
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	// The resolver sorts by RFC 6724 preference; an IPv4 address is unmapped
	// so that it is dialled from an IPv4 socket.
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[0].Unmap(), uint16(p))), nil
}
