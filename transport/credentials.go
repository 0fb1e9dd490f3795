package transport

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"ted/pki"
)

// NewCredentials makes credentials from a CA pool and a certificate with its
// key held in memory, as a program that signs many certificates itself (a
// load generator's simulated fleet) has them; LoadCredentials reads them
// from files. The same checks apply: the certificate must chain to pool and
// carry role want.
func NewCredentials(pool *x509.CertPool, cert tls.Certificate, want pki.Role) (*Credentials, error) {
	if pool == nil {
		return nil, errors.New("credentials: no CA pool")
	}
	if len(cert.Certificate) == 0 || cert.PrivateKey == nil {
		return nil, errors.New("credentials: the certificate or its key is missing")
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
		cert.Leaf = leaf
	}
	name := leaf.Subject.CommonName
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("credentials for %s: a %T key cannot sign", name, cert.PrivateKey)
	}
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("credentials for %s: the key does not belong to the certificate", name)
	}
	role, err := pki.RoleOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", name, err)
	}
	// Checked against its own role: this is the chain check; the role
	// comparison below gives the clearer message.
	if err := pki.VerifyRole(leaf, pool, role); err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", name, err)
	}
	if role != want {
		return nil, fmt.Errorf("credentials for %s: role %s, want %s: %w", name, role, want, pki.ErrWrongRole)
	}
	self, err := identityOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", name, err)
	}
	return newCredentials(pool, cert, self), nil
}
