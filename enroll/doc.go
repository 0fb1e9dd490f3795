// Package enroll gives nodes their certificates without moving a private
// key: a new server enrolls with a one-time join token, a node with a
// valid certificate renews it before it expires (docs/enroll.md).
//
// # Where the signer lives
//
// The CA key signs, on a distributor whose config names it
// (enroll.ca_dir), usually the top of the tree. Every other distributor
// passes requests on to its parent, over the same protocol, so a node
// asks whichever distributor it can reach. Requests are self-contained and
// the signer checks everything itself, but what a distributor passing one
// on can do differs: a renewal's proof covers its request, so it can only
// pass it or drop it; an enrollment's join token is a bearer secret that
// it sees, and a compromised distributor could keep it and send a request
// for its own key instead (within what the token allows: its role and
// groups, its name if it binds one, else a name not in force). Enrolling
// through distributors trusts them with the token; a node that must not
// enrolls with the signing distributor directly (docs/enroll.md).
//
// # Protocol
//
// Enrollment speaks its own ALPN, transport.EnrollALPN ("ted-enroll/1"),
// on the distributor's QUIC port; it never becomes a ted/1 session. Each
// request is one JSON message (4-byte length first, at most 64 KiB) on a
// stream of its own, answered on that stream:
//
//   - "ca": the CA certificates the distributor trusts. A new node has no
//     CA yet: it keeps the one whose SHA-256 fingerprint the operator gave
//     (--ca-fingerprint) and checks that the distributor's certificate
//     chains to it with role distributor before it sends its token, so
//     the token never reaches an impostor.
//   - "enroll": a join token and a PKCS #10 request for the node's name,
//     signed by its new key, which never leaves the node. The signer
//     verifies the token (the CA's signature, expiry), that the name is
//     the token's if the token names one, and else that no certificate of
//     that name is in force in the CA's index, consumes the token (single use,
//     recorded under a file lock in the CA directory, so across restarts
//     and processes too), and signs a certificate of the token's role and
//     groups. It logs the node, role, groups, token ID and address, never
//     the token.
//   - "renew": a request for a new key, the current certificate, and a
//     proof: the current key's signature over SHA-256 of a domain string
//     and the request. The signer checks that the proof verifies and the
//     request is for the same name, that the certificate chains to its CA,
//     has not expired, is revoked neither by the list the distributor holds
//     nor by the CA directory's, and was not renewed before (the index
//     records the serial each renewal replaced), and issues the same
//     name, role, groups and hosts for the same lifetime.
//
// The signer checks what needs no file first, then holds the CA
// directory's lock (pki.CA.Locked), which ted pki revoke holds too, from
// reading the index and revocation list to recording what it signed; a
// certificate that cannot be recorded is not handed out.
//
// Answers carry the certificate or a refusal of a kind (token invalid,
// expired, used; name not allowed; refused; unavailable) with the signer's
// words, so that the node's error says what to do.
//
// # Limits
//
// A listener serves at most 64 enrollment connections at once, 4 from one
// source address, and refuses more with a reason; a connection has 10 s
// for its first request, each request 30 s, a parent's answer included,
// and a connection three requests.
package enroll
