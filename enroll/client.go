package enroll

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"ted/pki"
	"ted/transport"
)

// Client is a new node's connection to a distributor whose CA it has
// pinned: Dial has checked the CA's fingerprint and the distributor's
// certificate before anything secret is sent.
type Client struct {
	conn *transport.EnrollConn
	// CA is the pinned CA certificate, Server the distributor's identity.
	CA     *x509.Certificate
	Server transport.Identity
	addr   string
}

// Dial connects to the distributor at addr, asks for its CA certificates
// and keeps the one whose fingerprint is fingerprint (pki.ParseFingerprint
// reads it), then checks that the distributor's own certificate chains to
// that CA with role distributor. A node that presents another CA, or a
// certificate of another CA, is an impostor or another fleet: the join
// token is never sent to it.
func Dial(ctx context.Context, addr, fingerprint string, cfg transport.QUICConfig) (*Client, error) {
	want, err := pki.ParseFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	conn, err := transport.DialEnroll(ctx, addr, nil, cfg)
	if err != nil {
		return nil, err
	}
	c, err := pin(ctx, conn, addr, want)
	if err != nil {
		_ = conn.Close(nil)
		return nil, err
	}
	return c, nil
}

func pin(ctx context.Context, conn *transport.EnrollConn, addr, want string) (*Client, error) {
	resp, err := exchange(ctx, conn, &request{Op: opCA})
	if err != nil {
		return nil, err
	}
	if err := resp.err(); err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	var ca *x509.Certificate
	var got []string
	for _, der := range resp.CA {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%s sent a malformed CA certificate: %w", addr, err)
		}
		got = append(got, pki.Fingerprint(cert))
		if pki.MatchFingerprint(cert, want) {
			ca = cert
		}
	}
	if ca == nil {
		return nil, fmt.Errorf("CA fingerprint mismatch: %s trusts the CA %v, not %s (another fleet, a stale fingerprint, or an impostor): nothing was sent",
			addr, got, want)
	}
	id, err := conn.VerifyServer([]*x509.Certificate{ca})
	if err != nil {
		return nil, fmt.Errorf("%w: nothing was sent", err)
	}
	return &Client{conn: conn, CA: ca, Server: id, addr: addr}, nil
}

// Close ends the connection.
func (c *Client) Close() error { return c.conn.Close(nil) }

// Peer names the distributor in messages: its name and address.
func (c *Client) Peer() string { return fmt.Sprintf("%s (%s)", c.addr, c.Server.Name) }

// Enroll asks for a certificate for name and the public key of key,
// with the join token. The answer is checked: signed by the pinned CA,
// for name and key.
func (c *Client) Enroll(ctx context.Context, token, name string, key crypto.Signer) (*x509.Certificate, error) {
	csr, err := newCSR(name, key)
	if err != nil {
		return nil, err
	}
	resp, err := exchange(ctx, c.conn, &request{Op: opEnroll, Token: token, CSR: csr})
	if err != nil {
		return nil, err
	}
	if err := resp.err(); err != nil {
		return nil, err
	}
	return checkIssued(resp.Cert, []*x509.Certificate{c.CA}, name, key.Public())
}

// checkIssued parses a certificate sent in answer and checks that it is
// what was asked for.
func checkIssued(der []byte, cas []*x509.Certificate, name string, pub crypto.PublicKey) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("the certificate sent is malformed: %w", err)
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("the certificate sent does not chain to the CA: %w", err)
	}
	if cert.Subject.CommonName != name {
		return nil, fmt.Errorf("the certificate sent is issued to %q, not %q", cert.Subject.CommonName, name)
	}
	if k, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(cert.PublicKey) {
		return nil, errors.New("the certificate sent is not for our key")
	}
	if _, err := pki.RoleOf(cert); err != nil {
		return nil, fmt.Errorf("the certificate sent: %w", err)
	}
	return cert, nil
}

// renewRequest asks for a certificate for newKey in place of current,
// proven by current's key.
func renewRequest(current tls.Certificate, newKey crypto.Signer) (*request, *x509.Certificate, error) {
	if len(current.Certificate) == 0 {
		return nil, nil, errors.New("no current certificate")
	}
	leaf, err := x509.ParseCertificate(current.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	key, ok := current.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("a %T key cannot sign", current.PrivateKey)
	}
	csr, err := newCSR(leaf.Subject.CommonName, newKey)
	if err != nil {
		return nil, nil, err
	}
	proof, err := signProof(key, csr)
	if err != nil {
		return nil, nil, fmt.Errorf("sign renewal proof: %w", err)
	}
	return &request{Op: opRenew, CSR: csr, Cert: leaf.Raw, Proof: proof}, leaf, nil
}

// Renew asks the distributor at addr, dialled with cred, for a new
// certificate for newKey in place of cred's, and returns it, checked
// against cas (the node's tls.ca).
func Renew(ctx context.Context, addr string, cred *transport.Credentials, cas []*x509.Certificate, newKey crypto.Signer, cfg transport.QUICConfig) (*x509.Certificate, error) {
	req, leaf, err := renewRequest(cred.Certificate(), newKey)
	if err != nil {
		return nil, err
	}
	conn, err := transport.DialEnroll(ctx, addr, cred, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close(nil)
	resp, err := exchange(ctx, conn, req)
	if err != nil {
		return nil, err
	}
	if err := resp.err(); err != nil {
		return nil, err
	}
	return checkIssued(resp.Cert, cas, leaf.Subject.CommonName, newKey.Public())
}

// RenewHere signs a renewal of cred's certificate for newKey with the
// handler's own CA: what a distributor with enroll.ca_dir does for itself.
func (h *Handler) RenewHere(cred *transport.Credentials, newKey crypto.Signer) (*x509.Certificate, error) {
	if h.cfg.CA == nil {
		return nil, errors.New("this distributor does not sign (no enroll.ca_dir)")
	}
	req, leaf, err := renewRequest(cred.Certificate(), newKey)
	if err != nil {
		return nil, err
	}
	resp := h.handle(context.Background(), req, "this node")
	if err := resp.err(); err != nil {
		return nil, err
	}
	return checkIssued(resp.Cert, []*x509.Certificate{h.cfg.CA.Cert}, leaf.Subject.CommonName, newKey.Public())
}

// RenewAt is when a certificate valid from notBefore to notAfter is due
// for renewal; see RenewBefore.
func RenewAt(notBefore, notAfter time.Time, renewBefore time.Duration) time.Time {
	d, _ := RenewBefore(notBefore, notAfter, renewBefore)
	return notAfter.Add(-d)
}

// RenewBefore is how long before its expiry a certificate valid from
// notBefore to notAfter is renewed: renewBefore (tls.renew_before), or, if
// it is 0, DefaultRenewBefore or a third of the lifetime, whichever is
// shorter. A renewBefore of more than half the lifetime is cut to half,
// and clamped says so: otherwise every renewed certificate would be due
// at once, and a node whose certificates are shorter than renew_before (a
// 7-day certificate, the default 720h) would renew at every check,
// forever.
func RenewBefore(notBefore, notAfter time.Time, renewBefore time.Duration) (d time.Duration, clamped bool) {
	life := notAfter.Sub(notBefore)
	if renewBefore <= 0 {
		return min(DefaultRenewBefore, life/3), false
	}
	if renewBefore > life/2 {
		return life / 2, true
	}
	return renewBefore, false
}

// DefaultRenewBefore is how long before expiry a node renews by default
// (tls.renew_before): a month leaves time to notice a renewal that keeps
// failing.
const DefaultRenewBefore = 30 * 24 * time.Hour
