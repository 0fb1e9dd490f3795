package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/quic-go/quic-go"
)

// QUICConfig tunes the QUIC adapter. A zero field takes its value from
// DefaultQUICConfig, so QUICConfig{} is the default configuration.
type QUICConfig struct {
	// HandshakeIdleTimeout gives up a handshake after this long without an
	// answer; the whole handshake may take at most twice as long, and so may
	// a dialled peer's admission after it (a busy listener holds the end of
	// a handshake until it can take the session: Listener.holdTicket).
	HandshakeIdleTimeout time.Duration
	// MaxIdleTimeout ends a session after this long without any packet from
	// the peer. Both sides use the smaller of their two values.
	MaxIdleTimeout time.Duration
	// KeepAlivePeriod is how often an idle session sends a packet. It must
	// be shorter than MaxIdleTimeout; keepalives cannot be turned off. Only
	// the dialling end sends them: with both ends on the same period, each
	// pinged the other at almost the same moment and an idle session cost
	// four packets a period instead of two (a PING and its ACK), which at
	// 10,000 children is most of an idle distributor's CPU. The dialler's
	// keepalives keep the session, and any NAT binding on the way, alive
	// for both ends.
	KeepAlivePeriod time.Duration
	// MaxIncomingStreams is how many bidirectional streams the peer may have
	// open at once; OpenStream on the peer waits when they are all in use.
	MaxIncomingStreams int64
	// MaxStreamReceiveWindow caps the flow-control window of one stream,
	// which bounds one stream's throughput to window / round-trip time.
	MaxStreamReceiveWindow uint64
	// MaxConnectionReceiveWindow caps the window shared by all streams of a
	// session: the most that a peer may have in flight towards us.
	MaxConnectionReceiveWindow uint64
	// Logger receives what the adapter cannot return as an error: refused
	// peers and undersized UDP buffers. Nil means slog.Default().
	Logger *slog.Logger
}

// DefaultQUICConfig returns the configuration that Listen and Dial use for
// every field left zero.
func DefaultQUICConfig() QUICConfig {
	return QUICConfig{
		// An unreachable parent is given up after 5 s of silence, so that a
		// child fails over to its next parent quickly; a live one answers
		// within a round trip.
		HandshakeIdleTimeout: 5 * time.Second,
		// A dead peer is noticed within 30 s, well inside the time a child
		// needs to fail over and before a window's worth of work is lost.
		MaxIdleTimeout: 30 * time.Second,
		// A parent pushes offers down the connection its child dialled, so
		// an idle link must stay open through NAT and stateful firewalls,
		// many of which forget a UDP flow after 30 s. One small packet and
		// its acknowledgement every 15 s (quic-go's most, half the idle
		// timeout) keeps it open without polling; at 10,000 children these
		// are most of an idle distributor's CPU, so no more often.
		KeepAlivePeriod: 15 * time.Second,
		// Chunks travel on many concurrent streams (the protocol asks for
		// at least 256 at once); 1024 leaves room for the control stream and
		// a burst of wants without making a fast peer wait for credit.
		MaxIncomingStreams: 1024,
		// Windows are a ceiling for quic-go's auto-tuning, not allocations:
		// a window only grows while the reader keeps up. A stream moves at
		// most one window per round trip: 16 MiB sustains 1 GB/s up to a
		// 16 ms round trip, where quic-go's 6 MiB default allows 375 MB/s.
		MaxStreamReceiveWindow: 16 << 20,
		// 64 MiB for the session lets four streams run at full window, and
		// bounds what a peer can make us buffer.
		MaxConnectionReceiveWindow: 64 << 20,
		Logger:                     nil,
	}
}

// DefaultKeepAlive is the keepalive period of a session whose idle
// timeout is idle and whose keepalive is not set: DefaultQUICConfig's, or
// half the idle timeout if that is shorter (quic-go never pings less often
// than that), so that any idle timeout works without a keepalive set.
func DefaultKeepAlive(idle time.Duration) time.Duration {
	return min(DefaultQUICConfig().KeepAlivePeriod, idle/2)
}

// Validate reports a configuration that cannot work.
func (c QUICConfig) Validate() error {
	switch {
	case c.HandshakeIdleTimeout < 0, c.MaxIdleTimeout < 0, c.KeepAlivePeriod < 0:
		return errors.New("quic config: timeouts must not be negative")
	case c.MaxIncomingStreams < 0:
		return errors.New("quic config: MaxIncomingStreams must not be negative")
	}
	c = c.withDefaults()
	if c.KeepAlivePeriod >= c.MaxIdleTimeout {
		return fmt.Errorf("quic config: KeepAlivePeriod %v must be shorter than MaxIdleTimeout %v", c.KeepAlivePeriod, c.MaxIdleTimeout)
	}
	if c.MaxConnectionReceiveWindow < c.MaxStreamReceiveWindow {
		return fmt.Errorf("quic config: MaxConnectionReceiveWindow %d is smaller than MaxStreamReceiveWindow %d", c.MaxConnectionReceiveWindow, c.MaxStreamReceiveWindow)
	}
	return nil
}

// withDefaults fills every zero field from DefaultQUICConfig.
func (c QUICConfig) withDefaults() QUICConfig {
	d := DefaultQUICConfig()
	if c.HandshakeIdleTimeout == 0 {
		c.HandshakeIdleTimeout = d.HandshakeIdleTimeout
	}
	if c.MaxIdleTimeout == 0 {
		c.MaxIdleTimeout = d.MaxIdleTimeout
	}
	if c.KeepAlivePeriod == 0 {
		c.KeepAlivePeriod = DefaultKeepAlive(c.MaxIdleTimeout)
	}
	if c.MaxIncomingStreams == 0 {
		c.MaxIncomingStreams = d.MaxIncomingStreams
	}
	if c.MaxStreamReceiveWindow == 0 {
		c.MaxStreamReceiveWindow = d.MaxStreamReceiveWindow
	}
	if c.MaxConnectionReceiveWindow == 0 {
		c.MaxConnectionReceiveWindow = d.MaxConnectionReceiveWindow
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// quicConfig translates c, which has its defaults filled in. Only the
// listener opens a unidirectional stream, the admission notice, so only the
// dialer accepts one.
func (c QUICConfig) quicConfig(dialer bool) *quic.Config {
	uni := int64(-1)
	if dialer {
		uni = 1
	}
	keepalive := time.Duration(0) // the dialler's keepalives do (KeepAlivePeriod)
	if dialer {
		keepalive = c.KeepAlivePeriod
	}
	return &quic.Config{
		HandshakeIdleTimeout:       c.HandshakeIdleTimeout,
		MaxIdleTimeout:             c.MaxIdleTimeout,
		KeepAlivePeriod:            keepalive,
		MaxIncomingStreams:         c.MaxIncomingStreams,
		MaxIncomingUniStreams:      uni,
		MaxStreamReceiveWindow:     c.MaxStreamReceiveWindow,
		MaxConnectionReceiveWindow: c.MaxConnectionReceiveWindow,
	}
}

// Application error codes of CONNECTION_CLOSE. The text that goes with them
// says what happened; the codes only tell a clean end from a failure.
const (
	codeClosed   quic.ApplicationErrorCode = 0 // Close(nil)
	codeError    quic.ApplicationErrorCode = 1 // Close(reason)
	codeRefused  quic.ApplicationErrorCode = 2 // the listener's accept refused the peer
	codeShutdown quic.ApplicationErrorCode = 3 // the listener was closed
	codeProtocol quic.ApplicationErrorCode = 4 // the admission notice was wrong
)

// streamClosed is the code of STOP_SENDING when Stream.Close gives up reading.
const streamClosed quic.StreamErrorCode = 0

// Admission: after the handshake and the listener's accept callback, the
// listener opens one unidirectional stream carrying admitted and its FIN.
// Dial returns only once it has read it, so a refusal, including one of our
// certificate, which TLS 1.3 only tells the client after its side of the
// handshake is done, reaches the dialer as Dial's error rather than at its
// first stream.
const admitted byte = 1

// maxReasonLen bounds the text of CONNECTION_CLOSE: it must fit in one
// packet together with the headers, and a log line needs no more.
const maxReasonLen = 512

// reasonText is what the peer is told when a session is closed.
func reasonText(reason error) string {
	if reason == nil {
		return "session closed"
	}
	return Truncate(reason.Error(), maxReasonLen)
}

// Truncate cuts s to at most n bytes, on a character boundary, ending
// with "..." when it cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "..."
	cut := n - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// quicSession adapts a *quic.Conn to Session.
type quicSession struct {
	conn *quic.Conn
	peer Identity
	// release frees what the session alone used, the dialer's socket; it is
	// also run when the connection ends for any other reason.
	release   func()
	closeOnce sync.Once
}

var _ Session = (*quicSession)(nil)

func newQUICSession(conn *quic.Conn, peer Identity, release func()) *quicSession {
	s := &quicSession{conn: conn, peer: peer, release: release}
	if release != nil {
		context.AfterFunc(conn.Context(), release)
	}
	return s
}

func (s *quicSession) Peer() Identity { return s.peer }

func (s *quicSession) RemoteAddr() string { return s.conn.RemoteAddr().String() }

func (s *quicSession) Context() context.Context { return s.conn.Context() }

func (s *quicSession) Protocol() string { return s.conn.ConnectionState().TLS.NegotiatedProtocol }

func (s *quicSession) OpenStream(ctx context.Context) (Stream, error) {
	st, err := s.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	return quicStream{st}, nil
}

func (s *quicSession) AcceptStream(ctx context.Context) (Stream, error) {
	st, err := s.conn.AcceptStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("accept stream: %w", err)
	}
	return quicStream{st}, nil
}

// Close sends CONNECTION_CLOSE with the reason's text, which the peer's
// pending and later calls return inside a *quic.ApplicationError. It is
// abrupt: stream data not yet acknowledged is lost.
func (s *quicSession) Close(reason error) error {
	s.closeOnce.Do(func() {
		code := codeClosed
		if reason != nil {
			code = codeError
		}
		// CloseWithError waits until the connection has ended; its error is
		// always nil.
		_ = s.conn.CloseWithError(code, reasonText(reason))
		if s.release != nil {
			// Also run by the AfterFunc; running it here makes Close return
			// only once the socket is closed.
			s.release()
		}
	})
	return nil
}

// quicStream adapts a *quic.Stream to Stream.
type quicStream struct{ s *quic.Stream }

func (q quicStream) Read(p []byte) (int, error) { return q.s.Read(p) }

func (q quicStream) Write(p []byte) (int, error) { return q.s.Write(p) }

// Close stops reading, which ends a pending Read here and tells the peer to
// stop writing, and sends FIN after the data already written, which quic-go
// keeps retransmitting until the peer has it.
//
// Closing the send side fails only once the peer has itself stopped reading
// (STOP_SENDING, from its own Close), when there is nothing left to deliver,
// or after the session has ended, when it returns nil; so Close has no error
// worth returning.
func (q quicStream) Close() error {
	q.s.CancelRead(streamClosed)
	_ = q.s.Close()
	return nil
}

// udpBufferSize is the socket buffer that quic-go asks for
// (desiredBufferSize in its sys_conn_buffers_nonopenbsd.go), compared, as
// quic-go does, with what getsockopt reports.
const udpBufferSize = 7 << 20

// bufferHint tells the operator how to give QUIC the buffers it needs.
const bufferHint = "sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000"

// listenUDP opens the UDP socket of a listener or dialer and sizes its
// buffers. It logs one warning, naming the sysctls, if the kernel keeps them
// smaller than QUIC needs for full speed.
func listenUDP(network string, laddr *net.UDPAddr, log *slog.Logger) (*net.UDPConn, error) {
	conn, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	rcv, snd, known := growSocketBuffers(conn, udpBufferSize)
	warnSmallBuffers(log, conn.LocalAddr().String(), rcv, snd, known)
	return conn, nil
}

// warnSmallBuffers logs one warning if either buffer is known to be smaller
// than QUIC needs.
func warnSmallBuffers(log *slog.Logger, addr string, rcv, snd int, known bool) {
	if !known || rcv >= udpBufferSize && snd >= udpBufferSize {
		return
	}
	log.Warn("UDP socket buffers are too small for full QUIC throughput; raise the kernel limits: "+bufferHint,
		"addr", addr, "receive_buffer", rcv, "send_buffer", snd, "want", udpBufferSize)
}

// sizedConn hands quic-go a UDP socket whose buffers listenUDP has already
// sized, so that quic-go neither sizes them again nor prints its own warning
// through the log package when the kernel refuses. That warning can only be
// silenced by the process-wide environment variable
// QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING, so sizedConn steers quic-go's
// setReceiveBuffer and setSendBuffer (sys_conn_buffers*.go, v0.65.0) into
// their branch for connections without a syscall.RawConn, where they only
// call SetReadBuffer and SetWriteBuffer and believe the result: SyscallConn
// fails until SetWriteBuffer, the last of the two, has been called.
// wrapConn (sys_conn.go) then asks for SyscallConn again to set the DF bit
// and enable GSO, ECN and batched reads, and gets the real one.
//
// If a later quic-go asks in another order, its first SyscallConn for DF
// fails and Listen and Dial fail loudly (TestSizedConnKeepsOptimisations
// covers this) rather than losing an optimisation silently.
type sizedConn struct {
	*net.UDPConn
	sized atomic.Bool
}

var errBuffersSized = errors.New("socket buffers already sized")

func (c *sizedConn) SetReadBuffer(int) error { return nil }

func (c *sizedConn) SetWriteBuffer(int) error {
	c.sized.Store(true)
	return nil
}

func (c *sizedConn) SyscallConn() (syscall.RawConn, error) {
	if !c.sized.Load() {
		return nil, errBuffersSized
	}
	return c.UDPConn.SyscallConn()
}
