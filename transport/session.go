package transport

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"slices"
	"time"

	"ted/pki"
)

// Application protocols (TLS ALPN): the wire versions this code speaks.
// Both ends offer every version they speak and the listener picks the
// newest they share, so a node of this version and one that only speaks
// ted/1 still work together; a peer with no version in common is refused
// with an error naming both sides' versions.
const (
	// ALPN is the newest version: ted/1.2 and the rollouts in waves a
	// parent passes down to a child distributor (Waves).
	ALPN = "ted/1.3"
	// ALPN12 is ted/1.1 and the state of the subtree a child reports up
	// (Subtree, Status.Problem).
	ALPN12 = "ted/1.2"
	// ALPN11 is ted/1 and the revocation lists a parent passes down
	// (Revocations, Hello.CRLNumber).
	ALPN11 = "ted/1.1"
	// ALPN1 is the first version, spoken by nodes that predate revocation
	// lists: such a peer is never sent what it cannot decode.
	ALPN1 = "ted/1"
)

// protocols are the versions this code speaks, newest first: the
// listener's order of preference.
var protocols = []string{ALPN, ALPN12, ALPN11, ALPN1}

// offers is what a dialer speaking alpn offers: alpn and every older
// version of ours, or alpn alone if it is not ours (tests pretend to be
// other versions, enrollment has a protocol of its own).
func offers(alpn string) []string {
	i := slices.Index(protocols, alpn)
	if i < 0 {
		return []string{alpn}
	}
	return protocols[i:]
}

// CarriesRevocations reports whether the protocol of s has revocation
// lists (ted/1.1 and later): only then may a parent send Revocations or a
// child tell its list's number in its Hello.
func CarriesRevocations(s Session) bool { return s.Protocol() != ALPN1 }

// CarriesSubtree reports whether the protocol of s has subtree reports
// (ted/1.2 and later): only then may a child send Subtree or a Status with
// a Problem.
func CarriesSubtree(s Session) bool {
	p := s.Protocol()
	return p != ALPN1 && p != ALPN11
}

// CarriesWaves reports whether the protocol of s has rollouts in waves
// (ted/1.3 and later): only then may a parent send Waves.
func CarriesWaves(s Session) bool { return CarriesSubtree(s) && s.Protocol() != ALPN12 }

// Identity is who a peer is, read from its verified certificate.
type Identity struct {
	// Name is the certificate's common name: the node name.
	Name string
	// Role is bound into the certificate by pki.Issue.
	Role pki.Role
	// Groups are the groups bound into the certificate, if any.
	Groups []string
	// Serial is the certificate's serial number (pki.SerialHex), which a
	// revocation list names, and NotAfter when it expires.
	Serial   string
	NotAfter time.Time
}

// identityOf reads who a certificate says its holder is. It does not
// verify the certificate.
func identityOf(cert *x509.Certificate) (Identity, error) {
	role, err := pki.RoleOf(cert)
	if err != nil {
		return Identity{Name: cert.Subject.CommonName}, err
	}
	groups, err := pki.GroupsOf(cert)
	if err != nil {
		return Identity{Name: cert.Subject.CommonName}, err
	}
	return Identity{Name: cert.Subject.CommonName, Role: role, Groups: groups, Serial: pki.SerialHex(cert), NotAfter: cert.NotAfter}, nil
}

func (id Identity) String() string { return fmt.Sprintf("%s (%s)", id.Name, id.Role) }

// Stream is one bidirectional, ordered byte stream of a session.
type Stream interface {
	io.Reader
	io.Writer
	// Close ends the stream in both directions. Data already written is
	// still delivered; reads pending on either side end.
	Close() error
}

// Session is one authenticated connection between two nodes. The side that
// dialled opens the control stream first; either side may open further
// streams. All methods are safe for concurrent use.
type Session interface {
	// Peer is the identity proven by the peer's certificate.
	Peer() Identity
	// RemoteAddr is the peer's network address, for logs.
	RemoteAddr() string
	// OpenStream opens a new stream to the peer.
	OpenStream(ctx context.Context) (Stream, error)
	// AcceptStream waits for the peer to open a stream.
	AcceptStream(ctx context.Context) (Stream, error)
	// Protocol is the version both ends agreed on at the handshake, one
	// of ALPN, ALPN11 and ALPN1.
	Protocol() string
	// Context is done when the session has ended, for whatever reason.
	Context() context.Context
	// Close ends the session; reason, if not nil, is told to the peer and
	// logged there. Close is idempotent.
	Close(reason error) error
}
