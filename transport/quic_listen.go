package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Listener accepts QUIC sessions from peers whose certificates chain to our
// CA. Its methods are safe for concurrent use.
type Listener struct {
	cred   *Credentials
	accept func(Identity) error
	log    *slog.Logger

	udp *net.UDPConn
	tr  *quic.Transport
	ql  *quic.Listener

	mu       sync.Mutex
	closed   bool
	sessions map[*quicSession]struct{}

	// The acceptors (acceptLoop) take every finished handshake from
	// quic-go at once and admit it; ready hands admitted sessions to
	// Accept. quic-go queues only 32 finished handshakes and refuses the
	// next (CONNECTION_REFUSED), so whoever calls Accept must never be
	// what takes them.
	ready    chan *quicSession
	stopLoop context.CancelFunc
	loopDone chan struct{}
	loopErr  error // why the acceptors ended, once ready is closed

	// tickets bounds the connections whose handshakes have passed the
	// certificate check and that the acceptors have not taken yet by
	// quic-go's accept queue (queueTickets): a handshake about to finish
	// waits for a ticket (holdTicket) rather than overflow the queue and
	// be refused. stopping is closed when the listener closes.
	tickets chan struct{}
	waiting atomic.Int32 // handshakes waiting for a ticket
	// ticketHold is the constant ticketHold, as a time.Duration.
	ticketHold atomic.Int64
	stopping   <-chan struct{}
	// ticketWait bounds that wait: the handshake timeout; the dialer
	// waits for admission twice as long (awaitAdmission).
	ticketWait time.Duration

	// enroll, if set (HandleEnroll), serves the connections that speak
	// EnrollALPN rather than ALPN; they never become sessions.
	enroll atomic.Pointer[enrollRoute]

	closeOnce sync.Once
	closeErr  error
}

// queueTickets is quic-go's accept queue's size (protocol.MaxAcceptQueueSize,
// internal to quic-go): it refuses a handshake that finishes while that
// many wait to be taken.
const queueTickets = 32

// maxAdmitted bounds the sessions admitted and not yet taken by Accept:
// a bound on memory when nothing calls Accept, not a rate.
const maxAdmitted = 256

// Listen listens for QUIC on the UDP address addr ("host:port", port 0 for
// any). accept is shown the identity of every peer whose certificate is
// valid, before Accept returns its session; an error refuses the peer and is
// told to it. A nil accept admits every valid certificate.
func Listen(addr string, cred *Credentials, accept func(Identity) error, cfg QUICConfig) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	laddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	resetKey, err := cred.statelessResetKey()
	if err != nil {
		return nil, err
	}
	udp, err := listenUDP("udp", laddr, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	l := &Listener{
		cred:       cred,
		accept:     accept,
		log:        cfg.Logger,
		udp:        udp,
		sessions:   make(map[*quicSession]struct{}),
		ready:      make(chan *quicSession, maxAdmitted),
		loopDone:   make(chan struct{}),
		tickets:    make(chan struct{}, queueTickets),
		ticketWait: cfg.HandshakeIdleTimeout,
	}
	l.ticketHold.Store(int64(ticketHold))
	ctx, stop := context.WithCancel(context.Background())
	l.stopLoop, l.stopping = stop, ctx.Done()
	l.tr = &quic.Transport{
		Conn:              &sizedConn{UDPConn: udp},
		StatelessResetKey: resetKey,
		ConnContext:       l.connContext,
	}
	l.ql, err = l.tr.Listen(cred.serverTLS(serverHooks{refused: l.refused, enrolls: l.enrolls, hold: l.holdTicket}), cfg.quicConfig(false))
	if err != nil {
		stop()
		err = errors.Join(err, l.tr.Close(), udp.Close())
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	go l.acceptLoop(ctx)
	return l, nil
}

// incoming is what the listener knows of one connection from its first
// packet until Accept takes it over. quic-go drops a connection whose
// handshake fails without a word, so this is how such a failure gets
// logged, once, with the best reason known.
type incoming struct {
	addr   string
	taken  atomic.Bool // Accept has it: failures are Accept's to log
	ticket atomic.Bool // it holds one of the listener's tickets
	// stop unregisters handshakeEnded once Accept has the connection: a
	// registration kept for the session's life costs memory per session.
	stop func() bool

	mu      sync.Mutex
	refusal error // why our TLS callbacks refused the peer
	quiet   bool  // the refusal is worth a debug line only
}

type incomingKey struct{}

// connContext is quic.Transport.ConnContext: the context it returns is the
// parent of the connection's, and of the one crypto/tls hands our
// callbacks, and it ends, with the cause, when the connection does.
func (l *Listener) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	in := &incoming{addr: info.RemoteAddr.String()}
	ctx = context.WithValue(ctx, incomingKey{}, in)
	in.stop = context.AfterFunc(ctx, func() { l.handshakeEnded(in, context.Cause(ctx)) })
	return ctx, nil
}

// holdTicket is called by the TLS handshake of the connection of ctx once
// its peer's certificate chain is checked (crypto/tls's VerifyConnection,
// which comes before the peer's CertificateVerify and Finished are read,
// usually from the same packet): it waits for one of the listener's
// tickets, which the connection holds until an acceptor takes it from
// quic-go, it ends, or ticketHold passes. quic-go queues 32 finished
// handshakes and refuses the next with CONNECTION_REFUSED; when thousands
// of peers dial at once and the acceptors wait their turn for the CPU
// behind them, that wastes whole handshakes on both ends. Waiting here
// instead holds the handshake (and, with it, quic-go's loop for that
// connection, nothing else; the connection's context cannot end while it
// waits) until the queue has room: admission at the rate the acceptors
// take sessions. After ticketWait it goes on without a ticket (quic-go may
// then refuse it, as before), so the dialer is admitted or refused before
// it gives up waiting (awaitAdmission).
//
// A peer that presents a copy of a valid chain and goes silent holds its
// ticket for ticketHold at most, not until its handshake times out: the
// tickets cannot be kept by a few such peers, at the cost of the bound
// when the acceptors are starved for longer than that.
func (l *Listener) holdTicket(ctx context.Context) {
	in, ok := ctx.Value(incomingKey{}).(*incoming)
	if !ok {
		return
	}
	select {
	case l.tickets <- struct{}{}:
		l.holding(in)
		return
	default:
	}
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	t := time.NewTimer(l.ticketWait)
	defer t.Stop()
	select {
	case l.tickets <- struct{}{}:
		l.holding(in)
	case <-t.C:
		l.log.Debug("handshake goes on without waiting longer for the accept queue", "addr", in.addr, "waited", l.ticketWait)
	case <-ctx.Done():
	case <-l.stopping:
	}
}

// ticketHold bounds how long a connection holds a ticket before an
// acceptor takes it (Listener.ticketHold, which tests change): a handshake
// holding one finishes at once unless its peer stalls, and the acceptors
// take finished ones within milliseconds unless the CPU is swamped.
const ticketHold = 2 * time.Second

// holding records that in holds a ticket, and gives it back after
// ticketHold if nothing has.
func (l *Listener) holding(in *incoming) {
	in.ticket.Store(true)
	time.AfterFunc(time.Duration(l.ticketHold.Load()), func() { l.releaseTicket(in) })
}

// releaseTicket gives back the ticket in holds, if it holds one.
func (l *Listener) releaseTicket(in *incoming) {
	if in.ticket.CompareAndSwap(true, false) {
		<-l.tickets
	}
}

// refused notes why the TLS callbacks refused a peer, for handshakeEnded.
func (l *Listener) refused(ctx context.Context, err error, quiet bool) {
	in, ok := ctx.Value(incomingKey{}).(*incoming)
	if !ok {
		// A quic-go that no longer hands our context to crypto/tls: the
		// reason must still be logged.
		l.log.Warn("refused peer", "err", err)
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.refusal == nil {
		in.refusal, in.quiet = err, quiet
	}
}

// handshakeEnded logs why a connection ended before Accept took it: our
// refusal, or what the peer or the network did.
func (l *Listener) handshakeEnded(in *incoming, cause error) {
	l.releaseTicket(in)
	if in.taken.Load() || l.isClosed() {
		return
	}
	in.mu.Lock()
	refusal, quiet := in.refusal, in.quiet
	in.mu.Unlock()
	if refusal != nil {
		level := slog.LevelWarn
		if quiet {
			level = slog.LevelDebug
		}
		l.log.Log(context.Background(), level, "refused peer", "addr", in.addr, "err", refusal)
		return
	}
	level, err := explainHandshakeFailure(cause)
	l.log.Log(context.Background(), level, "handshake failed", "addr", in.addr, "err", err)
}

// explainHandshakeFailure says why a peer's handshake failed when our own
// checks did not refuse it. A peer that goes silent is most likely a
// scanner or a client that gave up: a debug line.
func explainHandshakeFailure(cause error) (slog.Level, error) {
	if _, ok := errors.AsType[*quic.IdleTimeoutError](cause); ok {
		return slog.LevelDebug, fmt.Errorf("peer went silent: %w", cause)
	}
	if _, ok := errors.AsType[*quic.HandshakeTimeoutError](cause); ok {
		return slog.LevelDebug, fmt.Errorf("peer went silent: %w", cause)
	}
	te, ok := errors.AsType[*quic.TransportError](cause)
	if ok && te.Remote && te.ErrorCode.IsCryptoError() {
		switch te.ErrorCode - 0x100 {
		case alertBadCertificate, alertUnsupportedCertificate, alertCertificateExpired,
			alertCertificateUnknown, alertUnknownCA:
			return slog.LevelWarn, fmt.Errorf("peer refused our certificate (does it trust our CA, and want our role?): %w", cause)
		}
	}
	return slog.LevelWarn, cause
}

// Addr is the local address, with the port chosen if addr asked for 0.
func (l *Listener) Addr() net.Addr { return l.udp.LocalAddr() }

// Accept returns the next admitted session. A peer that fails the handshake
// or is refused is logged and skipped, never returned as an error: Accept
// returns an error only when ctx ends or the listener is closed (then one
// that wraps net.ErrClosed).
func (l *Listener) Accept(ctx context.Context) (Session, error) {
	select {
	case sess, ok := <-l.ready:
		if !ok {
			return nil, fmt.Errorf("accept on %s: %w", l.Addr(), l.loopErr)
		}
		return sess, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("accept on %s: %w", l.Addr(), ctx.Err())
	}
}

// acceptLoop runs the acceptors, which take finished handshakes from
// quic-go as they come and admit them, and closes ready, which hands the
// admitted to Accept, once the listener is closed and they have all ended.
func (l *Listener) acceptLoop(ctx context.Context) {
	var wg sync.WaitGroup
	var errOnce sync.Once
	for range acceptors {
		wg.Go(func() {
			err := l.acceptor(ctx, &wg)
			errOnce.Do(func() { l.loopErr = err })
		})
	}
	wg.Wait()
	close(l.ready)
	close(l.loopDone)
}

// acceptors is how many goroutines take finished handshakes from quic-go.
// Admission is quick and never blocks, so one would do, if it ran as soon
// as a handshake finished; but when thousands of handshakes share the
// CPU, a goroutine waits its turn behind them, and quic-go refuses the
// 33rd handshake that finishes before one runs. Several make that less
// likely than one.
const acceptors = 4

// acceptor takes finished handshakes and admits them, until the listener
// is closed; it returns why it ended.
func (l *Listener) acceptor(ctx context.Context, wg *sync.WaitGroup) error {
	for {
		conn, err := l.ql.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return net.ErrClosed
			}
			return err
		}
		if in, ok := conn.Context().Value(incomingKey{}).(*incoming); ok {
			in.taken.Store(true)
			in.stop()
			l.releaseTicket(in)
		}
		if l.routeEnroll(ctx, conn, wg) {
			continue
		}
		id, sess, err := l.admit(conn)
		if err != nil {
			l.log.Warn("refused peer", "peer", id.Name, "addr", conn.RemoteAddr().String(), "err", err)
			continue
		}
		select {
		case l.ready <- sess:
		case <-ctx.Done():
			// Close ends the session: it is tracked.
			return net.ErrClosed
		}
	}
}

// admit runs the accept callback on the peer of a finished handshake and
// tells the peer the outcome; a refused connection is closed.
func (l *Listener) admit(conn *quic.Conn) (Identity, *quicSession, error) {
	id, err := peerIdentity(conn)
	if err != nil {
		// verifyPeer has passed, so this is a bug rather than a peer's fault.
		_ = conn.CloseWithError(codeRefused, "internal error reading the certificate")
		return id, nil, err
	}
	if err := l.cred.CheckRevoked(id); err != nil {
		// The handshake let it through so that it hears why (serverTLS).
		_ = conn.CloseWithError(codeRefused, Truncate(err.Error(), maxReasonLen))
		return id, nil, err
	}
	if l.accept != nil {
		if err := l.accept(id); err != nil {
			// The dialer's error names us; the text is the reason alone.
			_ = conn.CloseWithError(codeRefused, Truncate(err.Error(), maxReasonLen))
			return id, nil, err
		}
	}
	if err := sendAdmission(conn); err != nil {
		_ = conn.CloseWithError(codeProtocol, "cannot send admission")
		return id, nil, err
	}
	sess := newQUICSession(conn, id, nil)
	if !l.track(sess) {
		_ = conn.CloseWithError(codeShutdown, l.cred.Self().Name+" is shutting down")
		return id, nil, errors.New("listener closed")
	}
	return id, sess, nil
}

// sendAdmission opens the unidirectional stream that Dial waits for. None
// of it blocks: the dialer grants one such stream, and one byte fits in any
// flow-control window.
func sendAdmission(conn *quic.Conn) error {
	st, err := conn.OpenUniStream()
	if err != nil {
		return fmt.Errorf("open admission stream: %w", err)
	}
	if _, err := st.Write([]byte{admitted}); err != nil {
		return fmt.Errorf("send admission: %w", err)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("send admission: %w", err)
	}
	return nil
}

// track records an admitted session until it ends, so that Close can end
// it; it reports false once the listener is closed.
func (l *Listener) track(s *quicSession) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.sessions[s] = struct{}{}
	context.AfterFunc(s.conn.Context(), func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.sessions, s)
	})
	return true
}

func (l *Listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops accepting and ends every session that Accept returned,
// telling their peers that this node is shutting down: they share the
// listener's socket, which Close closes. It is idempotent.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		sessions := make([]*quicSession, 0, len(l.sessions))
		for s := range l.sessions {
			sessions = append(sessions, s)
		}
		l.mu.Unlock()

		l.stopLoop()
		errs := []error{l.ql.Close()}
		// Admissions under way end first: those tracked before closed was
		// set are in sessions, later ones track refuses.
		<-l.loopDone
		// CONNECTION_CLOSE lets peers fail over at once, not after their
		// idle timeout; Transport.Close would drop sessions silently.
		var wg sync.WaitGroup
		for _, s := range sessions {
			wg.Go(func() {
				_ = s.conn.CloseWithError(codeShutdown, l.cred.Self().Name+" is shutting down")
			})
		}
		wg.Wait()
		errs = append(errs, l.tr.Close(), l.udp.Close())
		if err := errors.Join(errs...); err != nil {
			l.closeErr = fmt.Errorf("close listener %s: %w", l.udp.LocalAddr(), err)
		}
	})
	return l.closeErr
}
