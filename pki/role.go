package pki

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Role is what a node may do in the tree. It is bound into the node's
// certificate, so a certificate of one role cannot act as another.
type Role string

// The roles of TED nodes, and the operator role.
const (
	RolePublisher   Role = "publisher"
	RoleDistributor Role = "distributor"
	RoleSubscriber  Role = "subscriber"
	// RoleOperator is for the people and tools that read a daemon's
	// status endpoints over HTTPS (status_tls). It is no node role: no
	// session accepts it (a distributor admits publishers and children
	// only, a child dials distributors only), no join token enrolls it and
	// no node renews it (IsNode).
	RoleOperator Role = "operator"
)

// roles lists the valid roles in the order error messages name them.
var roles = []Role{RolePublisher, RoleDistributor, RoleSubscriber, RoleOperator}

// IsNode reports whether r is the role of a node (publisher, distributor,
// subscriber): one that opens TED sessions, may be enrolled with a join
// token and renews its certificate through the tree. RoleOperator is not.
func (r Role) IsNode() bool {
	return r == RolePublisher || r == RoleDistributor || r == RoleSubscriber
}

// ErrWrongRole is returned by VerifyRole when a trusted certificate carries a
// role other than the one wanted.
var ErrWrongRole = errors.New("a certificate of one role cannot act as another")

// roleOID identifies the certificate extension that carries the role; its
// value is the role as a DER UTF8String. It is non-critical, because Go's
// verifier rejects certificates with unknown critical extensions.
//
// The arc is IANA's documentation enterprise number 32473 (RFC 5612),
// followed by "TED" in ASCII (84.69.68) and 1. The 2.25 (UUID) arc cannot be
// used: a UUID arc is a 128-bit integer, and Go's x509 parser rejects any
// extension OID with an arc of 2^31 or more, so it would refuse the whole
// certificate. A clash with another issuer's extension is harmless, since a
// role is only believed in a certificate that chains to the TED CA. Replace
// the arc with TED's own enterprise number once one is registered; existing
// certificates must then be issued again.
var roleOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 84, 69, 68, 1}

// ParseRole returns the role named s, or an error that lists the valid roles.
func ParseRole(s string) (Role, error) {
	for _, r := range roles {
		if s == string(r) {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown role %q: want one of %s", s, roleList())
}

func roleList() string {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// roleExtension returns the value of the extension that carries role.
func roleExtension(role Role) ([]byte, error) {
	return asn1.MarshalWithParams(string(role), "utf8")
}

// RoleOf returns the role bound into cert by Issue. It does not verify cert:
// call VerifyRole to believe the role.
func RoleOf(cert *x509.Certificate) (Role, error) {
	if cert == nil {
		return "", errors.New("no certificate")
	}
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(roleOID) {
			continue
		}
		var s string
		rest, err := asn1.UnmarshalWithParams(ext.Value, &s, "utf8")
		if err != nil {
			return "", fmt.Errorf("certificate %q: malformed role extension: %w", cert.Subject.CommonName, err)
		}
		if len(rest) > 0 {
			return "", fmt.Errorf("certificate %q: malformed role extension: trailing data", cert.Subject.CommonName)
		}
		role, err := ParseRole(s)
		if err != nil {
			return "", fmt.Errorf("certificate %q: %w", cert.Subject.CommonName, err)
		}
		return role, nil
	}
	return "", fmt.Errorf("certificate %q has no TED role (not issued by ted pki issue)", cert.Subject.CommonName)
}

// VerifyRole checks that cert chains to a CA in pool and carries the role
// want. A nil pool is refused rather than falling back to the system roots.
func VerifyRole(cert *x509.Certificate, pool *x509.CertPool, want Role) error {
	if cert == nil {
		return errors.New("no certificate")
	}
	name := cert.Subject.CommonName
	if pool == nil {
		return fmt.Errorf("certificate %q: no CA pool to verify against", name)
	}
	opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := cert.Verify(opts); err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			// The chain may be fine: say what is wrong, and when.
			now := time.Now()
			switch {
			case now.After(cert.NotAfter):
				return fmt.Errorf("certificate %q expired on %s: renew it (ted pki issue --force): %w", name, cert.NotAfter.UTC().Format(time.RFC3339), err)
			case now.Before(cert.NotBefore):
				return fmt.Errorf("certificate %q is not valid until %s (is this clock right?): %w", name, cert.NotBefore.UTC().Format(time.RFC3339), err)
			}
			return fmt.Errorf("certificate %q: its CA's certificate has expired or is not yet valid: %w", name, err)
		}
		return fmt.Errorf("certificate %q: not issued by a trusted TED CA: %w", name, err)
	}
	got, err := RoleOf(cert)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("certificate %q has role %s, not %s: %w", name, got, want, ErrWrongRole)
	}
	return nil
}
