package transport

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"

	"ted/pki"
)

// Credentials are what a node proves itself with and what it trusts: its
// certificate and key, and the CA that signs every TED node.
type Credentials struct {
	pool *x509.CertPool
	// own is our certificate, its key and what it says, swapped whole when
	// the node renews it (Replace): every handshake reads it afresh.
	own atomic.Pointer[ownCert]
	// revoked is the CA's revocation list in force (SetRevocations), or
	// nil: read at every handshake, swapped whole when a newer list comes.
	revoked atomic.Pointer[pki.Revocations]
}

// LoadCredentials loads the CA certificates of caFile, which every peer
// must chain to, and this node's certificate and PKCS #8 key as written by
// `ted pki issue`. It checks that our own certificate chains to that CA and
// carries role want, so a daemon started with the wrong files says so at
// once rather than at its first peer.
func LoadCredentials(caFile, certFile, keyFile string, want pki.Role) (*Credentials, error) {
	pool, err := pki.LoadCertPool(caFile)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", caFile, err)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load cert: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cert %s, key %s: %w", certFile, keyFile, err)
	}
	// X509KeyPair fills Leaf since Go 1.23, unless GODEBUG turns it off.
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("cert %s: %w", certFile, err)
		}
	}
	role, err := pki.RoleOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("cert %s: %w", certFile, err)
	}
	// Checked against its own role: this is the chain check; the role
	// comparison below gives the clearer message.
	if err := pki.VerifyRole(leaf, pool, role); err != nil {
		return nil, fmt.Errorf("cert %s (CA %s): %w", certFile, caFile, err)
	}
	if role != want {
		return nil, fmt.Errorf("cert %s: role %s, this daemon needs %s: %w", certFile, role, want, pki.ErrWrongRole)
	}
	self, err := identityOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("cert %s: %w", certFile, err)
	}
	return newCredentials(pool, cert, self), nil
}

// ownCert is a node's certificate with its key, and the identity it proves.
type ownCert struct {
	cert tls.Certificate
	self Identity
}

func newCredentials(pool *x509.CertPool, cert tls.Certificate, self Identity) *Credentials {
	c := &Credentials{pool: pool}
	c.own.Store(&ownCert{cert: cert, self: self})
	return c
}

// Self is the identity that our certificate proves to peers: the one in
// force now, which a renewal replaces.
func (c *Credentials) Self() Identity { return c.own.Load().self }

// Certificate is our certificate and key in force now.
func (c *Credentials) Certificate() tls.Certificate { return c.own.Load().cert }

// Replace makes cert, a renewed certificate with its new key, the one that
// every later handshake presents; sessions already up keep the old one
// until they end, which is fine as long as it has not expired. It must
// chain to our CA and carry the same name and role as the certificate it
// replaces.
func (c *Credentials) Replace(cert tls.Certificate) error {
	old := c.Self()
	next, err := NewCredentials(c.pool, cert, old.Role)
	if err != nil {
		return err
	}
	self := next.Self()
	if self.Name != old.Name {
		return fmt.Errorf("new certificate is issued to %q, not %q", self.Name, old.Name)
	}
	c.own.Store(next.own.Load())
	return nil
}

// ReplaceFiles loads a renewed certificate and its key from files, as
// LoadCredentials does, and puts them in force (Replace).
func (c *Credentials) ReplaceFiles(certFile, keyFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("cert %s, key %s: %w", certFile, keyFile, err)
	}
	if err := c.Replace(cert); err != nil {
		return fmt.Errorf("cert %s: %w", certFile, err)
	}
	return nil
}

// ErrRevoked marks a certificate that the CA's revocation list names.
var ErrRevoked = errors.New("revoked")

// SetRevocations makes r the revocation list that every later handshake,
// on both sides, is checked against; nil checks none. Sessions already up
// are the caller's to close (CheckRevoked says which).
func (c *Credentials) SetRevocations(r *pki.Revocations) { c.revoked.Store(r) }

// Revocations is the list in force, nil if none.
func (c *Credentials) Revocations() *pki.Revocations { return c.revoked.Load() }

// CheckRevoked refuses the identity of a verified certificate that the
// list in force names, with the reason both ends log.
func (c *Credentials) CheckRevoked(id Identity) error {
	return RevokedError(c.revoked.Load(), id)
}

// RevokedError is the refusal of id if r revokes its certificate, nil
// otherwise (and for a nil r).
func RevokedError(r *pki.Revocations, id Identity) error {
	if r == nil || !r.RevokedSerial(id.Serial) {
		return nil
	}
	return fmt.Errorf("certificate %s (serial %s) is %w by the CA (revocation list %s)", id.Name, id.Serial, ErrRevoked, r.Number)
}

// verifyPeer checks the certificates a peer presented at addr: the first
// must chain to our CA, carry a TED role and not be revoked. It says who
// the peer is.
//
// Only the chain and the role are checked, never the host name: children
// dial parents by IP:port, which a certificate need not list, and a node's
// identity is its certificate's common name and role, not its address. So
// the client side sets InsecureSkipVerify and calls this instead.
func (c *Credentials) verifyPeer(certs []*x509.Certificate, addr string) (Identity, error) {
	if len(certs) == 0 {
		return Identity{}, fmt.Errorf("peer %s presented no certificate", addr)
	}
	leaf := certs[0]
	name := leaf.Subject.CommonName
	opts := x509.VerifyOptions{
		Roots:         c.pool,
		Intermediates: x509.NewCertPool(),
		// pki.Issue sets both server and client use; VerifyRole accepts any.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, ic := range certs[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if _, err := leaf.Verify(opts); err != nil {
		if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
			return Identity{}, fmt.Errorf("peer %s: certificate %q not signed by our CA", addr, name)
		}
		return Identity{}, fmt.Errorf("peer %s: certificate %q: %w", addr, name, err)
	}
	id, err := identityOf(leaf)
	if err != nil {
		return Identity{}, fmt.Errorf("peer %s: %w", addr, err)
	}
	if err := c.CheckRevoked(id); err != nil {
		// The identity goes with the error: a listener admits a revoked
		// peer's handshake only to refuse it in words (Listener.admit),
		// which a TLS alert cannot carry.
		return id, fmt.Errorf("peer %s: %w", addr, err)
	}
	return id, nil
}

// baseTLS is what both sides share: TLS 1.3 (QUIC requires it), our
// certificate, and the application protocols offered (the server's in its
// order of preference: crypto/tls picks the first the client offers too).
// Session tickets are off on the
// server and no session cache is set on the client, so every handshake
// presents and verifies a full certificate chain.
//
// Our certificate is read at each handshake rather than fixed in the
// config, so that a renewed one (Replace) is presented from then on.
func (c *Credentials) baseTLS(alpns []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert := c.Certificate()
			return &cert, nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert := c.Certificate()
			return &cert, nil
		},
		NextProtos:             alpns,
		SessionTicketsDisabled: true,
	}
}

// serverHooks are the listener's parts in a server handshake: refused is
// told why the handshake refuses a peer; enrolls says whether enrollments
// are served; hold is called once the peer's certificate is checked, and
// may wait (Listener.holdTicket).
type serverHooks struct {
	refused func(ctx context.Context, err error, quiet bool)
	enrolls func() bool
	hold    func(context.Context)
}

// serverTLS requires a client certificate and verifies it ourselves. The
// per-connection config from GetConfigForClient knows the peer's address
// for the error. quic-go never returns a failed handshake from Accept, so
// each refusal is handed to refused, with the handshake's context, to be
// logged.
//
// A client that offers EnrollALPN, when enrolls says the listener has an
// enrollment handler, speaks that protocol instead: a new node has no
// certificate yet, and one that presents its own (a renewing node, a
// forwarding distributor) proves itself in the request, which the
// handler checks. So its certificate is asked for but not required, and
// not checked here.
func (c *Credentials) serverTLS(h serverHooks) *tls.Config {
	refused, enrolls, hold := h.refused, h.enrolls, h.hold
	base := c.baseTLS(protocols)
	base.ClientAuth = tls.RequireAnyClientCert
	conf := base.Clone()
	conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		ctx := hello.Context()
		addr := "unknown address"
		if hello.Conn != nil {
			addr = hello.Conn.RemoteAddr().String()
		}
		if enrolls() && slices.Contains(hello.SupportedProtos, EnrollALPN) {
			perConn := base.Clone()
			perConn.NextProtos = []string{EnrollALPN}
			perConn.ClientAuth = tls.RequestClientCert
			// Not held for a ticket (Listener.holdTicket): a peer with no
			// certificate must not hold the queue, and enrollments are few
			// (and bounded by the enrollment handler).
			return perConn, nil
		}
		if !slices.ContainsFunc(hello.SupportedProtos, func(p string) bool { return slices.Contains(protocols, p) }) {
			// Returning the config lets crypto/tls refuse with the
			// no_application_protocol alert, which the dialer translates;
			// an error here would send internal_error instead.
			err, quiet := alpnMismatch(addr, hello.SupportedProtos)
			refused(ctx, err, quiet)
			return nil, nil
		}
		perConn := base.Clone()
		perConn.VerifyConnection = func(cs tls.ConnectionState) error {
			if _, err := c.verifyPeer(cs.PeerCertificates, addr); err != nil {
				if errors.Is(err, ErrRevoked) {
					hold(ctx)
					return nil // refused by Listener.admit, with the reason
				}
				refused(ctx, err, false)
				return err
			}
			hold(ctx)
			return nil
		}
		return perConn, nil
	}
	return conf
}

// alpnMismatch says why a handshake will fail for lack of a common
// protocol. Another TED version is an operator's business; anything else is
// most likely a scanner, quiet: not worth more than a debug line.
func alpnMismatch(addr string, offered []string) (err error, quiet bool) {
	var ted []string
	for _, p := range offered {
		if strings.HasPrefix(p, "ted/") {
			ted = append(ted, p)
		}
	}
	ours := strings.Join(protocols, ", ")
	if len(ted) > 0 {
		return fmt.Errorf("peer %s speaks %s, this node speaks %s", addr, strings.Join(ted, ", "), ours), false
	}
	return fmt.Errorf("peer %s does not speak %s (offered %q)", addr, ours, offered), true
}

// clientTLS verifies the server at addr ourselves, see verifyPeer, and
// requires role want; it offers alpn and the older versions (offers). The first failure is kept in *failed, so that Dial
// returns it rather than quic-go's rendering of a TLS alert.
func (c *Credentials) clientTLS(addr string, want pki.Role, alpn string, failed *verifyFailure) *tls.Config {
	conf := c.baseTLS(offers(alpn))
	// See verifyPeer for why the host name is not checked.
	conf.InsecureSkipVerify = true
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		id, err := c.verifyPeer(cs.PeerCertificates, addr)
		if err == nil && id.Role != want {
			err = fmt.Errorf("peer %s at %s has role %s, want %s: %w", id.Name, addr, id.Role, want, pki.ErrWrongRole)
		}
		failed.set(err)
		if err == nil {
			failed.setPeer(id.Name)
		}
		return err
	}
	return conf
}

// verifyFailure keeps the error of the client's certificate check, which
// runs on quic-go's handshake goroutine.
type verifyFailure struct {
	mu   sync.Mutex
	err  error
	name string // the peer's name, once its certificate checked out
}

func (f *verifyFailure) setPeer(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.name = name
}

func (f *verifyFailure) peer() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.name
}

func (f *verifyFailure) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *verifyFailure) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// TLS alerts that a peer sends when it refuses our certificate or our
// protocol (RFC 8446 section 6).
const (
	alertBadCertificate         = 42
	alertUnsupportedCertificate = 43
	alertCertificateExpired     = 45
	alertCertificateUnknown     = 46
	alertUnknownCA              = 48
	alertCertificateRequired    = 116
	alertNoApplicationProtocol  = 120
)

// explainDialError turns the way a handshake with a peer ended into what
// an operator can act on: the TLS alert with which the peer refused us, or
// its silence. It returns err unchanged for anything else. alpn is what we
// spoke, with the older versions it offers (offers).
func explainDialError(err error, alpn string) error {
	if _, ok := errors.AsType[*quic.IdleTimeoutError](err); ok {
		return fmt.Errorf("no answer (is the node up and its UDP port open?): %w", err)
	}
	if _, ok := errors.AsType[*quic.HandshakeTimeoutError](err); ok {
		return fmt.Errorf("no answer (is the node up and its UDP port open?): %w", err)
	}
	te, ok := errors.AsType[*quic.TransportError](err)
	if !ok || !te.Remote || !te.ErrorCode.IsCryptoError() {
		return err
	}
	switch te.ErrorCode - 0x100 {
	case alertNoApplicationProtocol:
		return fmt.Errorf("peer does not speak %s, it runs another TED version: %w", strings.Join(offers(alpn), " or "), err)
	case alertBadCertificate, alertUnsupportedCertificate, alertCertificateExpired,
		alertCertificateUnknown, alertUnknownCA, alertCertificateRequired:
		return fmt.Errorf("peer refused our certificate (is it issued by the peer's CA, with a TED role, and still valid?): %w", err)
	}
	return err
}

// peerIdentity reads who the peer is from a finished handshake, whose
// VerifyConnection has already checked the certificate.
func peerIdentity(conn *quic.Conn) (Identity, error) {
	certs := conn.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		return Identity{}, errors.New("peer presented no certificate")
	}
	return identityOf(certs[0])
}

// statelessResetKey derives the key of stateless resets from our private
// key, so that it survives a restart: a restarted parent then answers its
// children's packets for a connection it no longer knows with a reset, and
// they reconnect at once instead of after MaxIdleTimeout.
func (c *Credentials) statelessResetKey() (*quic.StatelessResetKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.Certificate().PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("derive stateless reset key: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("ted/1 QUIC stateless reset key\x00"))
	h.Write(der)
	var key quic.StatelessResetKey
	copy(key[:], h.Sum(nil))
	return &key, nil
}
