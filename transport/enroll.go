package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"ted/pki"
)

// EnrollALPN is the application protocol of enrollment and renewal
// (package enroll): a node asking a distributor for a certificate speaks
// it on the distributor's own QUIC port. It is never admitted as a
// session, and a ted/1 session never reaches the enrollment handler.
const EnrollALPN = "ted-enroll/1"

// maxEnrolling bounds the enrollment connections served at once; more are
// refused at once with a reason, so that a burst of new servers (or a
// flood of bogus ones) cannot tie up a distributor's memory.
const maxEnrolling = 64

// maxEnrollingPerSource bounds those from one source address (IP), so
// that one host cannot take every slot: a few, since a host enrolling or
// renewing several nodes at once (or a distributor passing its children's
// requests on) is rare and is told to try again.
const maxEnrollingPerSource = 4

// enrollRoute is a listener's enrollment handler.
type enrollRoute struct {
	handle func(context.Context, *EnrollConn)
	slots  chan struct{}

	mu       sync.Mutex
	bySource map[string]int // connections served, by source IP
}

// take reserves a slot for a connection from source, or says why not.
func (r *enrollRoute) take(source string) (ok bool, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bySource[source] >= maxEnrollingPerSource {
		return false, fmt.Sprintf("%d enrollments from %s", maxEnrollingPerSource, source)
	}
	select {
	case r.slots <- struct{}{}:
	default:
		return false, fmt.Sprintf("%d enrollments", maxEnrolling)
	}
	r.bySource[source]++
	return true, ""
}

// give returns the slot of a connection from source.
func (r *enrollRoute) give(source string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	<-r.slots
	if r.bySource[source]--; r.bySource[source] <= 0 {
		delete(r.bySource, source)
	}
}

// sourceOf is the IP of a peer's address, which is what one host has
// one of; the port is its to choose.
func sourceOf(addr net.Addr) string {
	if u, ok := addr.(*net.UDPAddr); ok {
		return u.IP.String()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

// HandleEnroll makes the listener serve every connection that speaks
// EnrollALPN with h, each in a goroutine of its own, instead of refusing
// it. h must return soon after ctx ends (the listener is closing); the
// connection is closed when it returns. Call it before peers dial: until
// then, such a handshake fails for want of a common protocol. Nil stops
// serving enrollment.
func (l *Listener) HandleEnroll(h func(ctx context.Context, conn *EnrollConn)) {
	if h == nil {
		l.enroll.Store(nil)
		return
	}
	l.enroll.Store(&enrollRoute{handle: h, slots: make(chan struct{}, maxEnrolling), bySource: map[string]int{}})
}

// enrolls tells serverTLS whether to offer EnrollALPN.
func (l *Listener) enrolls() bool { return l.enroll.Load() != nil }

// routeEnroll takes conn, fresh from its handshake, if it speaks
// EnrollALPN: it is served by the handler in a goroutine of wg, or refused
// if too many are, and never admitted as a session.
func (l *Listener) routeEnroll(ctx context.Context, conn *quic.Conn, wg *sync.WaitGroup) bool {
	if conn.ConnectionState().TLS.NegotiatedProtocol != EnrollALPN {
		return false
	}
	r := l.enroll.Load()
	if r == nil {
		_ = conn.CloseWithError(codeRefused, l.cred.Self().Name+" does not serve enrollment")
		return true
	}
	source := sourceOf(conn.RemoteAddr())
	if ok, why := r.take(source); !ok {
		l.log.Warn("refused enrollment: too many at once", "addr", conn.RemoteAddr().String(), "max", why)
		_ = conn.CloseWithError(codeRefused, fmt.Sprintf("%s is serving %s already; try again in a minute", l.cred.Self().Name, why))
		return true
	}
	wg.Go(func() {
		defer r.give(source)
		ec := &EnrollConn{conn: conn}
		stop := context.AfterFunc(ctx, func() {
			_ = conn.CloseWithError(codeShutdown, l.cred.Self().Name+" is shutting down")
		})
		defer stop()
		r.handle(ctx, ec)
		ec.finish()
	})
	return true
}

// EnrollConn is one enrollment connection, on either side: a handful of
// request and answer streams, no admission, no session.
type EnrollConn struct {
	conn    *quic.Conn
	release func() // the dialer's socket
}

// enrollLinger is how long the side that answered waits for the asking
// side to close, so that its last answer is delivered: CONNECTION_CLOSE
// would drop what is not yet acknowledged.
const enrollLinger = 5 * time.Second

// finish ends a served connection once the peer has closed it, or after
// enrollLinger.
func (c *EnrollConn) finish() {
	t := time.NewTimer(enrollLinger)
	defer t.Stop()
	select {
	case <-c.conn.Context().Done():
	case <-t.C:
	}
	_ = c.conn.CloseWithError(codeClosed, "enrollment done")
}

// RemoteAddr is the peer's address.
func (c *EnrollConn) RemoteAddr() string { return c.conn.RemoteAddr().String() }

// Context ends when the connection does.
func (c *EnrollConn) Context() context.Context { return c.conn.Context() }

// PeerCertificates are the certificates the peer presented, if any. On
// the listener's side nothing has checked them: whoever relies on them
// verifies them. On the dialer's side, DialEnroll with credentials has
// checked them; without, VerifyServer does.
func (c *EnrollConn) PeerCertificates() []*x509.Certificate {
	return c.conn.ConnectionState().TLS.PeerCertificates
}

// VerifyServer checks, on the dialer's side, that the server's certificate
// chains to one of cas and has role distributor: what DialEnroll without
// credentials has not checked, since the new node learns its CA only over
// this connection.
func (c *EnrollConn) VerifyServer(cas []*x509.Certificate) (Identity, error) {
	certs := c.PeerCertificates()
	addr := c.RemoteAddr()
	if len(certs) == 0 {
		return Identity{}, fmt.Errorf("peer %s presented no certificate", addr)
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	leaf := certs[0]
	opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	for _, ic := range certs[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return Identity{}, fmt.Errorf("peer %s: certificate %q is not signed by the CA it sent: %w", addr, leaf.Subject.CommonName, err)
	}
	id, err := identityOf(leaf)
	if err != nil {
		return Identity{}, fmt.Errorf("peer %s: %w", addr, err)
	}
	if id.Role != pki.RoleDistributor {
		return Identity{}, fmt.Errorf("peer %s at %s has role %s, want %s: %w", id.Name, addr, id.Role, pki.RoleDistributor, pki.ErrWrongRole)
	}
	return id, nil
}

// EnrollStream is one request and its answer: a Stream with a deadline.
type EnrollStream interface {
	Stream
	// SetDeadline makes reads and writes fail after t.
	SetDeadline(t time.Time) error
	// CloseWrite sends FIN after what was written, and keeps reading.
	CloseWrite() error
}

type enrollStream struct{ quicStream }

func (s enrollStream) SetDeadline(t time.Time) error { return s.s.SetDeadline(t) }

func (s enrollStream) CloseWrite() error { return s.s.Close() }

// Read and Write say who ended the connection, in their words.
func (s enrollStream) Read(p []byte) (int, error) {
	n, err := s.s.Read(p)
	return n, explainEnrollError(err)
}

func (s enrollStream) Write(p []byte) (int, error) {
	n, err := s.s.Write(p)
	return n, explainEnrollError(err)
}

// explainEnrollError gives the peer's reason for closing the connection.
func explainEnrollError(err error) error {
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote && ae.ErrorCode != codeClosed {
		return fmt.Errorf("closed by the peer: %s", ae.ErrorMessage)
	}
	return err
}

// OpenStream opens a stream for one request.
func (c *EnrollConn) OpenStream(ctx context.Context) (EnrollStream, error) {
	st, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream to %s: %w", c.RemoteAddr(), explainEnrollError(err))
	}
	return enrollStream{quicStream{st}}, nil
}

// AcceptStream waits for the peer's next request stream.
func (c *EnrollConn) AcceptStream(ctx context.Context) (EnrollStream, error) {
	st, err := c.conn.AcceptStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("accept stream from %s: %w", c.RemoteAddr(), explainEnrollError(err))
	}
	return enrollStream{quicStream{st}}, nil
}

// Close ends the connection, telling the peer why if reason is not nil.
// The dialer closes once it has its answer.
func (c *EnrollConn) Close(reason error) error {
	code := codeClosed
	if reason != nil {
		code = codeError
	}
	_ = c.conn.CloseWithError(code, reasonText(reason))
	if c.release != nil {
		c.release()
	}
	return nil
}

// DialEnroll connects to the distributor at addr speaking EnrollALPN.
//
// With credentials (a renewing node, a distributor passing a request on to
// its parent) it presents our certificate and checks the distributor's as
// Dial does: our CA, role distributor, not revoked. Without (a new node,
// which has neither a certificate nor, yet, the CA), it presents none and
// checks nothing: the caller must pin the CA it is sent and call
// VerifyServer before it sends anything secret.
func DialEnroll(ctx context.Context, addr string, cred *Credentials, cfg QUICConfig) (*EnrollConn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	raddr, tr, release, err := dialSocket(ctx, addr, cfg)
	if err != nil {
		return nil, err
	}
	var failed verifyFailure
	var conf *tls.Config
	if cred != nil {
		conf = cred.clientTLS(addr, pki.RoleDistributor, EnrollALPN, &failed)
	} else {
		conf = &tls.Config{
			MinVersion: tls.VersionTLS13,
			NextProtos: []string{EnrollALPN},
			// Checked by VerifyServer against the CA the caller pins.
			InsecureSkipVerify: true,
		}
	}
	qc := cfg.quicConfig(true)
	// No admission notice: the answer comes on the request's stream.
	qc.MaxIncomingUniStreams = -1
	conn, err := tr.Dial(ctx, raddr, conf, qc)
	if err != nil {
		release()
		if verr := failed.get(); verr != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, verr)
		}
		if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote {
			return nil, fmt.Errorf("dial %s: refused: %s", addr, ae.ErrorMessage)
		}
		return nil, fmt.Errorf("dial %s: %w", addr, explainDialError(err, EnrollALPN))
	}
	context.AfterFunc(conn.Context(), release)
	return &EnrollConn{conn: conn, release: release}, nil
}
