package enroll

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Operations of a request.
const (
	opCA     = "ca"     // send the CA certificates this distributor trusts
	opEnroll = "enroll" // sign CSR for the holder of Token
	opRenew  = "renew"  // sign CSR for the holder of Cert, proven by Proof
)

// request is what a node (or a distributor passing it on) sends, as one
// message on a stream of its own. It is self-contained: a join token or a
// certificate with a proof of its key, and a CSR signed by the new key,
// so that whoever passes it on adds nothing to it and needs no trust.
type request struct {
	Op    string `json:"op"`
	Token string `json:"token,omitempty"`
	CSR   []byte `json:"csr,omitempty"`   // PKCS #10, DER
	Cert  []byte `json:"cert,omitempty"`  // the certificate being renewed, DER
	Proof []byte `json:"proof,omitempty"` // its key's signature, see renewalDigest
}

// response answers a request: the CA certificates, the new certificate,
// or why not.
type response struct {
	CA    [][]byte `json:"ca,omitempty"`
	Cert  []byte   `json:"cert,omitempty"`
	Kind  string   `json:"kind,omitempty"` // one of the kind* constants, with Error
	Error string   `json:"error,omitempty"`
}

// Kinds of refusal, so that the asking node can tell them apart (and an
// operator's script by exit code) without parsing the text.
const (
	kindTokenInvalid = "token_invalid"
	kindTokenExpired = "token_expired"
	kindTokenUsed    = "token_used"
	kindName         = "name"
	kindRefused      = "refused"     // a bad request or a renewal refused
	kindUnavailable  = "unavailable" // no signer reachable, or the signer failed
)

// Errors of the asking side, each wrapped with the signer's words.
var (
	ErrTokenInvalid = errors.New("join token invalid")
	ErrTokenExpired = errors.New("join token expired")
	ErrTokenUsed    = errors.New("join token already used")
	// ErrName: the token does not allow the name asked for.
	ErrName = errors.New("name not allowed by the join token")
	// ErrRefused: the request was refused (a renewal of a revoked or
	// expired certificate, a malformed CSR).
	ErrRefused = errors.New("refused")
	// ErrUnavailable: the distributor could not reach a signer.
	ErrUnavailable = errors.New("no signer reachable")
)

var kindErrors = map[string]error{
	kindTokenInvalid: ErrTokenInvalid, kindTokenExpired: ErrTokenExpired, kindTokenUsed: ErrTokenUsed,
	kindName: ErrName, kindRefused: ErrRefused, kindUnavailable: ErrUnavailable,
}

// refusal is an answer's error: its kind for errors.Is, the signer's text.
type refusal struct {
	kind error
	msg  string
}

func (e *refusal) Error() string { return e.msg }
func (e *refusal) Unwrap() error { return e.kind }

// err is the response's refusal, or nil.
func (r *response) err() error {
	if r.Kind == "" && r.Error == "" {
		return nil
	}
	kind, ok := kindErrors[r.Kind]
	if !ok {
		kind = ErrRefused
	}
	return &refusal{kind: kind, msg: r.Error}
}

func refuse(kind, format string, args ...any) *response {
	return &response{Kind: kind, Error: fmt.Sprintf(format, args...)}
}

// maxMessage bounds a message, read before anything is checked: a CSR, a
// certificate and a token are a few KiB, the CA certificates likewise.
const maxMessage = 64 << 10

// writeMessage sends v as JSON after its length (4 bytes, big endian).
func writeMessage(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(data) > maxMessage {
		return fmt.Errorf("message of %d bytes, more than %d", len(data), maxMessage)
	}
	buf := make([]byte, 4+len(data))
	binary.BigEndian.PutUint32(buf, uint32(len(data)))
	copy(buf[4:], data)
	_, err = w.Write(buf)
	return err
}

// readMessage reads one message into v.
func readMessage(r io.Reader, v any) error {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n > maxMessage {
		return fmt.Errorf("message of %d bytes, more than %d", n, maxMessage)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("malformed message: %w", err)
	}
	return nil
}

// renewalDomain separates the proof of a renewal from anything else a
// node's key signs: TLS handshakes sign their own context strings, and
// nothing else is signed with a node key.
const renewalDomain = "TED certificate renewal v1\x00"

// renewalDigest is what the current key signs to ask for a certificate of
// csr (DER): SHA-256 of the domain and the CSR, so the proof is good for
// that CSR only, whose own signature proves the new key.
func renewalDigest(csr []byte) []byte {
	h := sha256.New()
	h.Write([]byte(renewalDomain))
	h.Write(csr)
	return h.Sum(nil)
}

// signProof signs the renewal digest of csr with key.
func signProof(key crypto.Signer, csr []byte) ([]byte, error) {
	digest := renewalDigest(csr)
	if _, ok := key.Public().(ed25519.PublicKey); ok {
		// Ed25519 signs the message itself, here the digest.
		return key.Sign(rand.Reader, digest, crypto.Hash(0))
	}
	return key.Sign(rand.Reader, digest, crypto.SHA256)
}

// verifyProof checks a renewal proof by the key of cert.
func verifyProof(cert *x509.Certificate, csr, proof []byte) error {
	digest := renewalDigest(csr)
	switch pub := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if ecdsa.VerifyASN1(pub, digest, proof) {
			return nil
		}
	case ed25519.PublicKey:
		if ed25519.Verify(pub, digest, proof) {
			return nil
		}
	default:
		return fmt.Errorf("a %T key cannot prove a renewal", cert.PublicKey)
	}
	return errors.New("the proof is not signed by the certificate's key")
}

// newCSR makes a certificate request for name, signed by key.
func newCSR(name string, key crypto.Signer) ([]byte, error) {
	tmpl := &x509.CertificateRequest{}
	tmpl.Subject.CommonName = name
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("make certificate request for %s: %w", name, err)
	}
	return der, nil
}

// checkKey refuses a key that TED's certificates do not use.
func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < 256 {
			return fmt.Errorf("ECDSA key on %s is too weak", k.Curve.Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("a %T key: want ECDSA (P-256) or Ed25519", pub)
}
